"""Catálogos: customers and products (FAQ "Agregar un cliente nuevo", "¿Cómo agregar un producto o
servicio?"), and the SAT-catalog autocomplete of seed 000 paso 10c: type a letter or a number and
pick from the list."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import ApiFailure, errors_by_field
from timbra_shared.web.panel.common import api_of, checked_form, form_text, fragment, optional, page, session_of, web_of

router = APIRouter()

SAT_CATALOGS = {"product_keys", "unit_keys", "zip_codes", "tax_regimes", "uses", "payment_forms", "currencies"}
TAXABILITY = [
    ("01", "01 - No objeto de impuesto"),
    ("02", "02 - Sí objeto de impuesto"),
    ("03", "03 - Sí objeto del impuesto y no obligado al desglose"),
    ("04", "04 - Sí objeto del impuesto y no causa impuesto"),
    ("05", "05 - Sí objeto del impuesto, IVA crédito PODEBI"),
]
TAX_CHOICES = [("iva16", "IVA 16 %"), ("iva8", "IVA 8 % (frontera)"), ("iva0", "IVA 0 %"), ("exento", "IVA exento"), ("none", "Sin impuestos")]
KINDS = {
    "clientes": ("customer", "customers", "Clientes", "cliente"),
    "productos": ("product", "products", "Productos", "producto"),
}


def taxes_from_choice(choice: str) -> list[dict[str, Any]]:
    return {
        "iva16": [{"type": "IVA", "rate": "0.16"}],
        "iva8": [{"type": "IVA", "rate": "0.08"}],
        "iva0": [{"type": "IVA", "rate": "0"}],
        "exento": [{"type": "IVA", "factor": "Exento"}],
        "none": [],
    }.get(choice, [{"type": "IVA", "rate": "0.16"}])


def choice_from_taxes(taxes: list[dict[str, Any]] | None) -> str:
    """The select option that represents ``taxes``; "catalog" when they are more than plain IVA."""
    taxes = taxes or []
    if not taxes:
        return "none"
    if len(taxes) == 1 and taxes[0].get("type") == "IVA" and not taxes[0].get("withholding"):
        tax = taxes[0]
        if tax.get("factor") == "Exento":
            return "exento"
        rate = str(tax.get("rate"))
        return {"0.16": "iva16", "0.160000": "iva16", "0.08": "iva8", "0.080000": "iva8", "0": "iva0", "0.0": "iva0", "0.000000": "iva0"}.get(rate, "catalog")
    return "catalog"


async def sat_options(request: Request, catalog: str) -> list[dict[str, str]]:
    return (await api_of(request).get(f"/v1/catalogs/{catalog}", limit=100))["data"]


# ---------------------------------------------------------------------- SAT autocomplete

@router.get("/sat/{catalog}")
async def sat_search(request: Request, catalog: str) -> Response:
    """Suggestions for an autocomplete input; the query is ``q`` or the input's own value."""
    session_of(request)
    if catalog not in SAT_CATALOGS:
        return fragment(request, "panel/_suggestions.html", {"results": []}, status=404)
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("catalog", "limit")]
    q = request.query_params.get("q") or (params[-1][1] if params else "")
    q = q.strip()
    results = (await api_of(request).get(f"/v1/catalogs/{catalog}", q=q, limit=12))["data"] if q else []
    return fragment(request, "panel/_suggestions.html", {"results": results, "q": q})


# ---------------------------------------------------------------------- customers and products

@router.get("/{kind}")
async def listing(request: Request, kind: str, q: str = "", pagina: int = 1) -> Response:
    if kind not in KINDS:
        return await page(request, "panel/error.html", {"title": "No encontrado", "message": "Esa página no existe."}, status=404)
    session_of(request)
    _, plural, title, _ = KINDS[kind]
    result = await api_of(request).get(f"/v1/{plural}", q=q or None, page=max(1, pagina), limit=20)
    return await page(request, "panel/catalog_list.html", {"kind": kind, "title": title, "q": q, "result": result})


@router.get("/{kind}/nuevo")
async def new_form(request: Request, kind: str) -> Response:
    return await _entity_form(request, kind, None, {}, {})


@router.get("/{kind}/{entity_id}")
async def edit_form(request: Request, kind: str, entity_id: str) -> Response:
    if kind not in KINDS:
        return await page(request, "panel/error.html", {"title": "No encontrado", "message": "Esa página no existe."}, status=404)
    session_of(request)
    entity = await api_of(request).get(f"/v1/{KINDS[kind][1]}/{entity_id}")
    return await _entity_form(request, kind, entity, _values_of(kind, entity), {})


@router.post("/{kind}/nuevo")
async def create(request: Request, kind: str) -> Response:
    return await _save(request, kind, None)


@router.post("/{kind}/{entity_id}")
async def update(request: Request, kind: str, entity_id: str) -> Response:
    return await _save(request, kind, entity_id)


@router.post("/{kind}/{entity_id}/eliminar")
async def delete(request: Request, kind: str, entity_id: str) -> Response:
    session_of(request)
    await checked_form(request)
    await api_of(request).delete(f"/v1/{KINDS[kind][1]}/{entity_id}")
    return web_of(request).redirect(request, f"{web_of(request).prefix}/{kind}")


async def _entity_form(request: Request, kind: str, entity: dict[str, Any] | None, values: dict[str, Any], errors: dict[str, list[str]], status: int = 200) -> Response:
    if kind not in KINDS:
        return await page(request, "panel/error.html", {"title": "No encontrado", "message": "Esa página no existe."}, status=404)
    session_of(request)
    ctx: dict[str, Any] = {"kind": kind, "title": KINDS[kind][2], "entity": entity, "values": values, "errors": errors}
    if kind == "clientes":
        ctx["regimes"] = await sat_options(request, "tax_regimes")
        ctx["uses"] = await sat_options(request, "uses")
    else:
        ctx["taxability"] = TAXABILITY
        ctx["tax_choices"] = TAX_CHOICES
    return await page(request, f"panel/{KINDS[kind][3]}_form.html", ctx, status=status)


def _values_of(kind: str, entity: dict[str, Any]) -> dict[str, Any]:
    values = {k: ("" if v is None else v) for k, v in entity.items() if not isinstance(v, (list, dict))}
    if kind == "clientes":
        values["emails"] = ", ".join(entity.get("emails") or [])
    else:
        values["tax"] = choice_from_taxes(entity.get("taxes"))
    return values


def _body(kind: str, form: Any) -> dict[str, Any]:
    if kind == "clientes":
        emails = [e.strip() for e in form_text(form, "emails").replace(";", ",").split(",") if e.strip()]
        body = {
            "rfc": form_text(form, "rfc").upper(), "legal_name": form_text(form, "legal_name"), "tax_regime": form_text(form, "tax_regime"),
            "zip": form_text(form, "zip"), "default_use": optional(form, "default_use"), "emails": emails,
            "tax_id": optional(form, "tax_id"), "tax_residence": optional(form, "tax_residence"),
        }
        return body
    body = {
        "sku": optional(form, "sku"), "description": form_text(form, "description"), "product_key": form_text(form, "product_key"),
        "unit_key": form_text(form, "unit_key"), "unit_name": optional(form, "unit_name"), "price": form_text(form, "price") or "0",
        "tax_included": bool(form.get("tax_included")), "taxability": form_text(form, "taxability") or "02",
    }
    choice = form_text(form, "tax")
    if choice != "catalog":
        body["taxes"] = taxes_from_choice(choice)
    return body


async def _save(request: Request, kind: str, entity_id: str | None) -> Response:
    if kind not in KINDS:
        return await page(request, "panel/error.html", {"title": "No encontrado", "message": "Esa página no existe."}, status=404)
    session_of(request)
    form = await checked_form(request)
    web = web_of(request)
    api = api_of(request)
    plural = KINDS[kind][1]
    body = _body(kind, form)
    try:
        if entity_id:
            await api.put(f"/v1/{plural}/{entity_id}", body)
        else:
            await api.post(f"/v1/{plural}", body)
    except ApiFailure as exc:
        entity = {"id": entity_id} if entity_id else None
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        return await _entity_form(request, kind, entity, values, errors_by_field(exc), status=422)
    return web.redirect(request, f"{web.prefix}/{kind}?guardado=1")
