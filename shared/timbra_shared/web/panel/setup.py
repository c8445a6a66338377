"""The first-time setup wizard (seed 001, pasos 2–12). Each step is saved by its own API call as
soon as the user presses "Guardar", so leaving halfway loses nothing; the wizard can be reopened
any time from "Configuración"."""

import asyncio
import base64
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import ApiFailure, errors_by_field
from timbra_shared.web.panel.common import api_of, checked_form, form_text, fragment, optional, page, session_of, web_of

router = APIRouter(prefix="/configuracion")

STEPS: list[tuple[str, str]] = [
    ("aviso", "Aviso de privacidad"),
    ("carta", "Carta manifiesto"),
    ("fiscales", "Datos fiscales"),
    ("direcciones", "Direcciones"),
    ("usuario", "Usuario"),
    ("logotipo", "Logotipo"),
    ("sellos", "Sellos (CSD)"),
    ("correo", "Correo electrónico"),
    ("documentos", "Documentos"),
    ("terminar", "Terminar"),
]
SLUGS = [s for s, _ in STEPS]
ADDRESS_FIELDS = [
    ("street", "Calle", True), ("exterior", "No. Ext.", True), ("interior", "No. Int.", False), ("neighborhood", "Colonia", False),
    ("zip", "Código postal", True), ("reference", "Referencia", False), ("locality", "Localidad", False),
    ("municipality", "Municipio", True), ("state", "Estado", True), ("country", "País", True),
]
DOC_TYPES = [("I", "Factura (Ingreso)"), ("E", "Nota de crédito (Egreso)"), ("T", "Traslado"), ("P", "Recibo electrónico de pago (complemento de pagos 2.0)")]
SAMPLE_CUSTOMER = {"rfc": "XAXX010101000", "legal_name": "CLIENTE DE MUESTRA", "tax_regime": "616", "zip": "00000", "use": "S01"}
PDFTOPPM = shutil.which("pdftoppm")


def _done(profile: dict[str, Any]) -> dict[str, bool]:
    steps = profile.get("onboarding") or {}
    acceptances = profile.get("acceptances") or {}
    return {
        "aviso": "privacy_notice" in acceptances,
        "carta": "carta_manifiesto" in acceptances,
        "fiscales": bool(steps.get("fiscal_data")),
        "direcciones": bool(steps.get("addresses")),
        "usuario": bool(steps.get("user")),
        "logotipo": bool(steps.get("logo")),
        "sellos": bool(steps.get("csd")),
        "correo": bool(steps.get("smtp")),
        "documentos": bool(steps.get("document_types")),
        "terminar": False,
    }


def _next(step: str) -> str:
    return SLUGS[min(SLUGS.index(step) + 1, len(SLUGS) - 1)]


async def _step_page(request: Request, step: str, extra: dict[str, Any] | None = None, status: int = 200) -> Response:
    api = api_of(request)
    profile = await api.get("/v1/issuers/me")
    ctx: dict[str, Any] = {"step": step, "steps": STEPS, "done": _done(profile), "profile": profile, "errors": {}, "values": {}, "next_step": _next(step)}
    if step == "fiscales":
        ctx["regimes"] = (await api.get("/v1/catalogs/tax_regimes", limit=100))["data"]
    elif step == "direcciones":
        ctx["address_fields"] = ADDRESS_FIELDS
    elif step == "usuario":
        ctx["user"] = await api.get(f"/v1/issuers/me/users/{session_of(request).user_id}")
    elif step == "sellos":
        ctx["csds"] = (await api.get("/v1/issuers/me/csds"))["data"]
    elif step == "documentos":
        ctx["doc_types"] = DOC_TYPES
    ctx.update(extra or {})
    return await page(request, f"panel/setup/{step}.html", ctx, status=status)


@router.get("")
@router.get("/")
async def start(request: Request) -> Response:
    session_of(request)
    profile = await api_of(request).get("/v1/issuers/me")
    done = _done(profile)
    first = next((s for s in SLUGS if not done[s] and s not in ("logotipo", "correo")), "terminar")
    return web_of(request).redirect(request, f"{web_of(request).prefix}/configuracion/{first}")


@router.get("/{step}")
async def show(request: Request, step: str) -> Response:
    session_of(request)
    if step not in SLUGS:
        return await page(request, "panel/error.html", {"title": "No encontrado", "message": "Ese paso de la configuración no existe."}, status=404)
    return await _step_page(request, step)


@router.post("/{step}")
async def save(request: Request, step: str) -> Response:
    session_of(request)
    form = await checked_form(request)
    api = api_of(request)
    web = web_of(request)
    if step not in SLUGS:
        return await page(request, "panel/error.html", {"title": "No encontrado", "message": "Ese paso de la configuración no existe."}, status=404)
    action = form_text(form, "action")
    try:
        if action == "omitir":
            pass
        elif step == "aviso":
            if not form.get("privacy_notice"):
                return await _step_page(request, step, {"errors": {"privacy_notice": ["Para continuar marca la casilla de aceptación del aviso de privacidad."]}}, status=422)
            await api.put("/v1/issuers/me/acceptances", {"privacy_notice": True})
        elif step == "carta":
            if not form.get("carta_manifiesto"):
                return await _step_page(request, step, {"errors": {"carta_manifiesto": ["Marca la casilla cuando hayas firmado la carta manifiesto con el PAC."]}}, status=422)
            await api.put("/v1/issuers/me/acceptances", {"carta_manifiesto": True})
        elif step == "fiscales":
            body = {k: form_text(form, k) for k in ("legal_name", "rfc", "tax_regime", "zip", "phone", "email")}
            await api.patch("/v1/issuers/me", {k: v for k, v in body.items() if v})
        elif step == "direcciones":
            fiscal = _address(form, "fiscal")
            same = bool(form.get("issuing_same_as_fiscal"))
            await api.put("/v1/issuers/me/addresses", {"fiscal": fiscal, "issuing": None if same else _address(form, "issuing"), "issuing_same_as_fiscal": same})
        elif step == "usuario":
            body = {k: optional(form, k) for k in ("name", "email", "alt_email", "phone", "initials")}
            body = {k: v for k, v in body.items() if v is not None}
            if form.get("password"):
                body |= {"password": str(form.get("password")), "password_confirmation": str(form.get("password_confirmation") or "")}
            await api.patch(f"/v1/issuers/me/users/{session_of(request).user_id}", body)
        elif step == "logotipo":
            upload = form.get("logo")
            placement = form_text(form, "placement") or "left"
            if upload is not None and not isinstance(upload, str) and upload.filename:
                data = await upload.read()
                await api.call("PUT", "/v1/issuers/me/logo", files={"file": (upload.filename, data, upload.content_type or "application/octet-stream")}, data={"placement": placement})
            elif (await api.get("/v1/issuers/me")).get("logo"):
                await api.put("/v1/issuers/me/logo/placement", {"placement": placement})
            else:
                return await _step_page(request, step, {"errors": {"logo": ["Elige una imagen JPG o PNG, u omite este paso."]}}, status=422)
        elif step == "sellos":
            cer, key = form.get("cer"), form.get("key")
            if cer is None or isinstance(cer, str) or not cer.filename or key is None or isinstance(key, str) or not key.filename:
                return await _step_page(request, step, {"errors": {"cer": ["Selecciona el archivo certificado (.cer) y el archivo llave (.key) de tu CSD."]}}, status=422)
            files = {"cer": (cer.filename, await cer.read(), "application/octet-stream"), "key": (key.filename, await key.read(), "application/octet-stream")}
            await api.call("PUT", "/v1/issuers/me/csd", files=files, data={"password": str(form.get("password") or "")})
        elif step == "correo":
            await api.put("/v1/issuers/me/smtp", _smtp(form))
        elif step == "documentos":
            types = [t for t, _ in DOC_TYPES if form.get(f"type_{t}")]
            await api.put("/v1/issuers/me/document-types", {"enabled_types": types})
            series = {t: (form_text(form, f"series_{t}") or None) for t, _ in DOC_TYPES}
            await api.put("/v1/issuers/me/series", {"series": series})
        elif step == "terminar":
            return web.redirect(request, f"{web.prefix}/?bienvenida=1")
    except ApiFailure as exc:
        return await _step_page(request, step, {"errors": _step_errors(step, exc), "values": dict(form)}, status=422)
    if step == "logotipo" and action != "omitir":
        return web.redirect(request, f"{web.prefix}/configuracion/logotipo?guardado=logotipo")  # stay: the preview shows the placement
    saved = "" if action == "omitir" else f"?guardado={step}"
    return web.redirect(request, f"{web.prefix}/configuracion/{_next(step)}{saved}")


def _step_errors(step: str, exc: ApiFailure) -> dict[str, list[str]]:
    errors = errors_by_field(exc)
    if step == "sellos":
        # the CSD codes (wrong_password, key_mismatch, rfc_mismatch, expired…) belong to the upload as a whole
        merged = [m for msgs in errors.values() for m in msgs]
        return {"cer": list(dict.fromkeys(merged))}
    if step == "direcciones":
        out: dict[str, list[str]] = {}
        for err in exc.errors or []:
            path = str(err.get("path") or "general").replace(".", "_")
            out.setdefault(path, []).append(str(err.get("message")))
        out.setdefault("general", []).insert(0, exc.message)
        return out
    return errors


def _address(form: Any, prefix: str) -> dict[str, Any]:
    address = {name: form_text(form, f"{prefix}_{name}") for name, _, _ in ADDRESS_FIELDS}
    address["country"] = (address.get("country") or "MEX").upper()
    return {k: (v if v or k in ("street", "exterior", "zip", "municipality", "state") else None) for k, v in address.items()}


def _smtp(form: Any) -> dict[str, Any]:
    port = form_text(form, "port")
    body: dict[str, Any] = {
        "address": form_text(form, "address"),
        "sender_name": optional(form, "sender_name"),
        "username": optional(form, "username"),
        "host": form_text(form, "host"),
        "port": int(port) if port.isdigit() else 0,
        "security": form_text(form, "security") or "starttls",
    }
    if form.get("password"):
        body["password"] = str(form.get("password"))
    return body


@router.post("/direcciones/copiar")
async def copy_fiscal(request: Request) -> Response:
    """"Copiar de fiscal" (paso 6): the issuing-address fieldset, filled with the fiscal one."""
    session_of(request)
    form = await checked_form(request)
    values = {f"issuing_{name}": form_text(form, f"fiscal_{name}") for name, _, _ in ADDRESS_FIELDS}
    return fragment(request, "panel/setup/_issuing.html", {"address_fields": ADDRESS_FIELDS, "values": values, "profile": {}, "errors": {}})


@router.post("/correo/probar")
async def test_smtp(request: Request) -> Response:
    session_of(request)
    form = await checked_form(request)
    try:
        result = await api_of(request).post("/v1/issuers/me/smtp/test", _smtp(form))
        ok, message = True, result.get("message") or "Conexión correcta: el servidor aceptó el usuario y la contraseña."
    except ApiFailure as exc:
        ok, message = False, f"{exc.message} ({exc.code})"
    return fragment(request, "panel/setup/_smtp_result.html", {"ok": ok, "message": message})


PLACEMENTS = ("left", "center", "right")


@router.post("/logotipo/ubicacion")
async def logo_placement(request: Request) -> Response:
    """A placement radio changed: save it (when a logo exists) and redraw the preview."""
    session_of(request)
    form = await checked_form(request)
    placement = form_text(form, "placement") or "left"
    api = api_of(request)
    if (await api.get("/v1/issuers/me")).get("logo"):
        await api.put("/v1/issuers/me/logo/placement", {"placement": placement})
    return await logo_preview(request, placement)


@router.get("/logotipo/vista-previa")
async def logo_preview(request: Request, placement: str | None = None) -> Response:
    """The first page of a sample invoice's PDF with the issuer's logo where it will be printed
    (``placement``, the radio just chosen, is drawn at once rather than once the renderer has
    caught up with the saved profile)."""
    session_of(request)
    api = api_of(request)
    sample = {
        "type": "I", "customer": SAMPLE_CUSTOMER, "payment_form": "01", "payment_method": "PUE", "notes": "Vista previa del logotipo",
        "items": [{"product": {"description": "Concepto de muestra", "product_key": "01010101", "unit_key": "H87", "price": "100.00"}, "quantity": "1"}],
    }
    try:
        pdf = await api.call("POST", "/v1/invoices/preview/pdf", json=sample, params={"logo_placement": placement} if placement in PLACEMENTS else None)
    except ApiFailure as exc:
        return fragment(request, "panel/_preview.html", {"error": f"{exc.message} ({exc.code})"})
    return fragment(request, "panel/_preview.html", await preview_images(pdf, pages=1))


async def preview_images(pdf: bytes, pages: int = 3) -> dict[str, Any]:
    """The PDF as PNG pages (poppler's pdftoppm) plus the PDF itself, both as data: URLs, so a
    preview needs no server-side state. Without pdftoppm the PDF is embedded as is."""
    images: list[str] = []
    if PDFTOPPM:
        with tempfile.TemporaryDirectory() as folder:
            source = Path(folder) / "p.pdf"
            source.write_bytes(pdf)
            proc = await asyncio.create_subprocess_exec(PDFTOPPM, "-png", "-r", "70", "-l", str(pages), str(source), str(Path(folder) / "page"), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await asyncio.wait_for(proc.wait(), timeout=30)
            for png in sorted(Path(folder).glob("page*.png")):
                images.append("data:image/png;base64," + base64.b64encode(png.read_bytes()).decode())
    return {"images": images, "pdf": "data:application/pdf;base64," + base64.b64encode(pdf).decode()}
