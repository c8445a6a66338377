"""The portal's pages, in the seed's order: I "Cómo facturar" (sucursal → RFC → ticket, método de
pago → generar → resultado), II "Editar información de cliente", III "Recuperación de contraseña",
IV "Panel de control de facturas", V "Cambiar contraseña temporal"."""

import asyncio
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import ApiFailure, Session
from timbra_shared.web.portal.common import (
    LoginRequired,
    PasswordChangeRequired,
    checked_form,
    customer,
    form_text,
    keep_captcha,
    keep_receipt,
    captcha_of,
    portal_api,
    problems_by_field,
    receipt_of,
    web_of,
)

router = APIRouter()

USES = [("G01", "G01 Adquisición de mercancías"), ("G03", "G03 Gastos en general"), ("I01", "I01 Construcciones"), ("I04", "I04 Equipo de cómputo y accesorios"),
        ("D01", "D01 Honorarios médicos, dentales y gastos hospitalarios"), ("S01", "S01 Sin efectos fiscales"), ("CP01", "CP01 Pagos")]
REGIMES = [("601", "601 General de Ley Personas Morales"), ("603", "603 Personas Morales con Fines no Lucrativos"), ("605", "605 Sueldos y Salarios e Ingresos Asimilados a Salarios"),
           ("606", "606 Arrendamiento"), ("608", "608 Demás ingresos"), ("612", "612 Personas Físicas con Actividades Empresariales y Profesionales"),
           ("616", "616 Sin obligaciones fiscales"), ("621", "621 Incorporación Fiscal"), ("625", "625 Actividades Empresariales con ingresos a través de Plataformas Tecnológicas"),
           ("626", "626 Régimen Simplificado de Confianza")]
WAIT_FOR_STAMP_S = 20.0
FINAL = ("stamped", "failed", "waiting_sat", "canceled")


async def _portal(request: Request, slug: str) -> dict[str, Any]:
    return await portal_api(request, slug, with_session=False).get(f"/v1/portal/{quote(slug)}")


def _page(request: Request, template: str, slug: str, portal: dict[str, Any], context: dict[str, Any] | None = None, *, status: int = 200) -> Response:
    return web_of(request).render(request, template, {"slug": slug, "portal": portal, "me": customer(request, slug), "uses": USES, "regimes": REGIMES, **(context or {})}, status=status)


@router.get("/")
async def no_slug(request: Request) -> Response:
    return web_of(request).render(request, "portal/error.html", {"title": "Portal de facturación", "message": "Abre la dirección del portal que te dio el comercio: /portal/<nombre-del-comercio>/."}, status=404)


# ---------------------------------------------------------------------- I. Cómo facturar

@router.get("/{slug}/")
async def step_branch(request: Request, slug: str, error: str = "") -> Response:
    portal = await _portal(request, slug)
    return _page(request, "portal/branch.html", slug, portal, {"error": error})


@router.get("/{slug}")
async def slug_root(request: Request, slug: str) -> Response:
    return web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/", status=307)


@router.get("/{slug}/rfc")
async def step_rfc(request: Request, slug: str, sucursal: str = "", rfc: str = "") -> Response:
    portal = await _portal(request, slug)
    if sucursal not in {b["id"] for b in portal["branches"]}:
        return _page(request, "portal/branch.html", slug, portal, {"errors": {"branch_id": ["Elige la sucursal donde compraste."]}}, status=422)
    me = customer(request, slug)
    return _page(request, "portal/rfc.html", slug, portal, {"branch": _branch(portal, sucursal), "rfc": rfc or (me.username if me else "")})


def _branch(portal: dict[str, Any], branch_id: str) -> dict[str, Any] | None:
    return next((b for b in portal["branches"] if b["id"] == branch_id), None)


@router.get("/{slug}/ticket")
async def step_ticket(request: Request, slug: str, sucursal: str = "", rfc: str = "") -> Response:
    portal = await _portal(request, slug)
    branch = _branch(portal, sucursal)
    if branch is None:
        return _page(request, "portal/branch.html", slug, portal, {"errors": {"branch_id": ["Elige la sucursal donde compraste."]}}, status=422)
    try:
        known = await portal_api(request, slug).get(f"/v1/portal/{quote(slug)}/customers/{quote(rfc.strip() or '-')}")
    except ApiFailure as failure:
        if failure.status == 404:
            raise
        return _page(request, "portal/rfc.html", slug, portal, {"branch": branch, "rfc": rfc, "errors": problems_by_field(failure)}, status=failure.status)
    values = {"rfc": known["rfc"], "legal_name": known.get("legal_name") or "", "tax_regime": known.get("tax_regime") or "", "zip": known.get("zip") or "",
              "use": known.get("use") or "G03", "email": "", "order_number": "", "ticket_number": "", "total": "", "payment_form": ""}
    return _page(request, "portal/ticket.html", slug, portal, {"branch": branch, "known": known, "v": values, "errors": {}})


@router.post("/{slug}/facturar")
async def generate(request: Request, slug: str) -> Response:
    form = await checked_form(request)
    portal = await _portal(request, slug)
    branch = _branch(portal, form_text(form, "branch_id"))
    values = {name: form_text(form, name) for name in ("rfc", "legal_name", "tax_regime", "zip", "use", "email", "order_number", "ticket_number", "total", "payment_form")}
    known = {"known": form_text(form, "known") == "1", "rfc": values["rfc"], "email_hint": form_text(form, "email_hint") or None}
    body = {"branch_id": form_text(form, "branch_id"), "order_number": values["order_number"], "ticket_number": values["ticket_number"], "total": values["total"],
            "payment_form": values["payment_form"] or None,
            "customer": {k: values[k] for k in ("rfc", "legal_name", "tax_regime", "zip", "use", "email")}}
    try:
        result = await portal_api(request, slug).post(f"/v1/portal/{quote(slug)}/invoices", body)
    except ApiFailure as failure:
        if failure.status == 404 and failure.code == "not_found":
            raise
        context = {"branch": branch, "known": known, "v": values, "errors": problems_by_field(failure), "failure": failure}
        return _page(request, "portal/ticket.html", slug, portal, context, status=failure.status if failure.status < 500 else 503)
    response = web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/factura/{result['id']}")
    keep_receipt(request, response, slug, result["id"], result["receipt"])
    return response


async def _invoice(request: Request, slug: str, invoice_id: str) -> dict[str, Any]:
    return await portal_api(request, slug, receipt=receipt_of(request, slug, invoice_id)).get(f"/v1/portal/{quote(slug)}/invoices/{quote(invoice_id)}")


@router.get("/{slug}/factura/{invoice_id}")
async def result(request: Request, slug: str, invoice_id: str, enviado: str = "") -> Response:
    portal = await _portal(request, slug)
    invoice = await _invoice(request, slug, invoice_id)
    deadline = time.monotonic() + WAIT_FOR_STAMP_S
    while invoice["status"] not in FINAL and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        invoice = await _invoice(request, slug, invoice_id)
    return _page(request, "portal/result.html", slug, portal, {"invoice": invoice, "sent": enviado})


@router.get("/{slug}/factura/{invoice_id}/estado")
async def result_status(request: Request, slug: str, invoice_id: str) -> Response:
    """htmx polls this while the invoice is on its way."""
    portal = await _portal(request, slug)
    invoice = await _invoice(request, slug, invoice_id)
    return _page(request, "portal/_result_body.html", slug, portal, {"invoice": invoice})


@router.get("/{slug}/factura/{invoice_id}/{kind}")
async def download(request: Request, slug: str, invoice_id: str, kind: str) -> Response:
    if kind not in ("xml", "pdf"):
        raise ApiFailure(404, "http_404", "Página no encontrada.")
    response = await portal_api(request, slug, receipt=receipt_of(request, slug, invoice_id)).raw("GET", f"/v1/portal/{quote(slug)}/invoices/{quote(invoice_id)}/{kind}")
    if response.status_code != 200:
        raise ApiFailure.from_response(response)
    return Response(response.content, media_type=response.headers.get("content-type"), headers={
        "Content-Disposition": response.headers.get("content-disposition", f'attachment; filename="{invoice_id}.{kind}"'), "Cache-Control": "no-store"})


@router.post("/{slug}/factura/{invoice_id}/correo")
async def send_email(request: Request, slug: str, invoice_id: str) -> Response:
    form = await checked_form(request)
    portal = await _portal(request, slug)
    api = portal_api(request, slug, receipt=receipt_of(request, slug, invoice_id))
    try:
        await api.post(f"/v1/portal/{quote(slug)}/invoices/{quote(invoice_id)}/email", {"email": form_text(form, "email")})
    except ApiFailure as failure:
        if failure.status == 404:
            raise
        invoice = await _invoice(request, slug, invoice_id)
        return _page(request, "portal/result.html", slug, portal, {"invoice": invoice, "email_errors": problems_by_field(failure), "email": form_text(form, "email")}, status=failure.status)
    return web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/factura/{invoice_id}?enviado={quote(form_text(form, 'email'))}")


# ---------------------------------------------------------------------- the customer's account

def _start(request: Request, response: Response, slug: str, result: dict[str, Any]) -> None:
    expires = int(datetime.fromisoformat(result["expires_at"]).timestamp())
    session = Session(token=result["token"], user_id=slug, username=result["rfc"], name=result["rfc"], expires=expires)
    web_of(request).session(request)
    web_of(request).start_session(request, response, session)


@router.get("/{slug}/entrar")
async def login_form(request: Request, slug: str, listo: str = "") -> Response:
    portal = await _portal(request, slug)
    return _page(request, "portal/login.html", slug, portal, {"rfc": "", "notice": listo})


@router.post("/{slug}/entrar")
async def login(request: Request, slug: str) -> Response:
    form = await checked_form(request)
    portal = await _portal(request, slug)
    rfc = form_text(form, "rfc")
    try:
        result = await portal_api(request, slug, with_session=False).post(f"/v1/portal/{quote(slug)}/sessions", {"rfc": rfc, "password": str(form.get("password") or "")})
    except ApiFailure as failure:
        if failure.status == 404:
            raise
        return _page(request, "portal/login.html", slug, portal, {"rfc": rfc, "error": failure.message}, status=failure.status)
    target = "contrasena" if result.get("must_change") else "panel"
    response = web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/{target}")
    _start(request, response, slug, result)
    return response


@router.post("/{slug}/salir")
async def logout(request: Request, slug: str) -> Response:
    await checked_form(request)
    if customer(request, slug) is not None:
        try:
            await portal_api(request, slug).delete(f"/v1/portal/{quote(slug)}/sessions/current")
        except ApiFailure:
            pass
    response = web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/entrar")
    web_of(request).end_session(request, response)
    return response


@router.get("/{slug}/registro")
async def register_form(request: Request, slug: str) -> Response:
    portal = await _portal(request, slug)
    return _page(request, "portal/register.html", slug, portal, {"v": {}, "errors": {}})


@router.post("/{slug}/registro")
async def register(request: Request, slug: str) -> Response:
    form = await checked_form(request)
    portal = await _portal(request, slug)
    values = {"rfc": form_text(form, "rfc"), "email": form_text(form, "email")}
    body = {**values, "password": str(form.get("password") or ""), "password_confirmation": str(form.get("password_confirmation") or "")}
    try:
        result = await portal_api(request, slug, with_session=False).post(f"/v1/portal/{quote(slug)}/accounts", body)
    except ApiFailure as failure:
        if failure.status == 404:
            raise
        return _page(request, "portal/register.html", slug, portal, {"v": values, "errors": problems_by_field(failure)}, status=failure.status)
    response = web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/panel")
    _start(request, response, slug, result)
    return response


async def _me(request: Request, slug: str, *, allow_change: bool = False) -> dict[str, Any]:
    if customer(request, slug) is None:
        raise LoginRequired(slug)
    try:
        me = await portal_api(request, slug).get(f"/v1/portal/{quote(slug)}/me")
    except ApiFailure as failure:
        if failure.status == 401:
            raise LoginRequired(slug) from None
        raise
    if me.get("must_change") and not allow_change:
        raise PasswordChangeRequired(slug)
    return me


@router.get("/{slug}/panel")
async def panel(request: Request, slug: str, sucursal: str = "", desde: str = "", hasta: str = "", q: str = "", estado: str = "", pagina: int = 1) -> Response:
    portal = await _portal(request, slug)
    me = await _me(request, slug)
    filters = {"sucursal": sucursal, "desde": desde, "hasta": hasta, "q": q, "estado": estado}
    errors: dict[str, list[str]] = {}
    listing: dict[str, Any] = {"data": [], "total_pages": 1, "total_results": 0, "page": 1}
    try:
        listing = await portal_api(request, slug).get(f"/v1/portal/{quote(slug)}/me/invoices", branch_id=sucursal, **{"from": desde, "to": hasta}, q=q, status=estado, page=max(1, pagina))
    except ApiFailure as failure:
        if failure.status == 401:
            raise LoginRequired(slug) from None
        errors = problems_by_field(failure)
    return _page(request, "portal/panel.html", slug, portal, {"account": me, "listing": listing, "f": filters, "errors": errors})


@router.get("/{slug}/panel/{invoice_id}/{kind}")
async def panel_download(request: Request, slug: str, invoice_id: str, kind: str) -> Response:
    await _me(request, slug)
    return await download(request, slug, invoice_id, kind)


@router.get("/{slug}/datos")
async def fiscal_form(request: Request, slug: str, guardado: str = "") -> Response:
    portal = await _portal(request, slug)
    me = await _me(request, slug)
    return _page(request, "portal/fiscal.html", slug, portal, {"v": me, "errors": {}, "saved": bool(guardado)})


@router.post("/{slug}/datos")
async def fiscal_save(request: Request, slug: str) -> Response:
    form = await checked_form(request)
    portal = await _portal(request, slug)
    me = await _me(request, slug)
    values = {k: form_text(form, k) for k in ("legal_name", "tax_regime", "zip", "use")}
    try:
        await portal_api(request, slug).put(f"/v1/portal/{quote(slug)}/me", values)
    except ApiFailure as failure:
        if failure.status == 401:
            raise LoginRequired(slug) from None
        return _page(request, "portal/fiscal.html", slug, portal, {"v": {**me, **values}, "errors": problems_by_field(failure)}, status=failure.status)
    return web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/datos?guardado=1")


@router.get("/{slug}/contrasena")
async def password_form(request: Request, slug: str) -> Response:
    portal = await _portal(request, slug)
    me = await _me(request, slug, allow_change=True)
    return _page(request, "portal/password.html", slug, portal, {"account": me, "errors": {}})


@router.post("/{slug}/contrasena")
async def password_save(request: Request, slug: str) -> Response:
    form = await checked_form(request)
    portal = await _portal(request, slug)
    me = await _me(request, slug, allow_change=True)
    body = {k: str(form.get(k) or "") for k in ("current_password", "password", "password_confirmation")}
    try:
        await portal_api(request, slug).put(f"/v1/portal/{quote(slug)}/me/password", body)
    except ApiFailure as failure:
        if failure.status == 401:
            raise LoginRequired(slug) from None
        return _page(request, "portal/password.html", slug, portal, {"account": me, "errors": problems_by_field(failure)}, status=failure.status)
    return web_of(request).redirect(request, f"{web_of(request).prefix}/{slug}/panel?cambiada=1")


# ---------------------------------------------------------------------- III. Recuperación de contraseña

async def _recovery_page(request: Request, slug: str, portal: dict[str, Any], context: dict[str, Any], status: int = 200) -> Response:
    captcha = await portal_api(request, slug, with_session=False).get(f"/v1/portal/{quote(slug)}/captcha")
    response = _page(request, "portal/recover.html", slug, portal, {**context, "captcha_svg": captcha["svg"]}, status=status)
    keep_captcha(request, response, captcha["captcha_id"])
    return response


@router.get("/{slug}/recuperar")
async def recover_form(request: Request, slug: str) -> Response:
    portal = await _portal(request, slug)
    return await _recovery_page(request, slug, portal, {"v": {}, "errors": {}})


@router.post("/{slug}/recuperar")
async def recover(request: Request, slug: str) -> Response:
    form = await checked_form(request)
    portal = await _portal(request, slug)
    values = {"rfc": form_text(form, "rfc"), "email": form_text(form, "email")}
    body = {**values, "captcha_id": captcha_of(request) or "", "captcha_answer": form_text(form, "captcha_answer")}
    try:
        result = await portal_api(request, slug, with_session=False).post(f"/v1/portal/{quote(slug)}/password-recovery", body)
    except ApiFailure as failure:
        if failure.status == 404:
            raise
        return await _recovery_page(request, slug, portal, {"v": values, "errors": problems_by_field(failure)}, status=failure.status)
    return _page(request, "portal/recover_sent.html", slug, portal, {"message": result["message"]})
