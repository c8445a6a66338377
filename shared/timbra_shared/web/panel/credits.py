"""Créditos (seed 002 and the FAQ): "Timbres disponibles", the packages bought, payment references
("Generar constancia de pago") and "Consultar constancia de pago"."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import ApiFailure, errors_by_field
from timbra_shared.web.panel.common import api_of, checked_form, form_text, page, session_of, web_of

router = APIRouter(prefix="/creditos")


async def _credits_page(request: Request, extra: dict[str, Any] | None = None, status: int = 200) -> Response:
    api = api_of(request)
    balance = await api.get("/v1/billing/balance")
    ctx = {
        "balance": balance,
        "packages": (await api.get("/v1/billing/packages"))["data"],
        "references": (await api.get("/v1/billing/payment-references"))["data"],
        "products": [p for p in (await api.get("/v1/billing/products"))["data"] if p.get("active", True)],
        "errors": {},
        **(extra or {}),
    }
    return await page(request, "panel/credits.html", ctx, status=status)


@router.get("")
@router.get("/")
async def credits(request: Request) -> Response:
    session_of(request)
    return await _credits_page(request)


@router.post("/constancias")
async def create_reference(request: Request) -> Response:
    """"Generar constancia de pago": a payment reference for the products ticked."""
    session_of(request)
    form = await checked_form(request)
    items = []
    for code in form.getlist("code"):
        quantity = form_text(form, f"quantity_{code}")
        if quantity.isdigit() and int(quantity) > 0:
            items.append({"code": code, "quantity": int(quantity)})
    if not items:
        return await _credits_page(request, {"errors": {"general": ["Indica la cantidad de al menos un producto."]}}, status=422)
    try:
        reference = await api_of(request).post("/v1/billing/payment-references", {"items": items})
    except ApiFailure as exc:
        return await _credits_page(request, {"errors": errors_by_field(exc)}, status=422)
    web = web_of(request)
    return web.redirect(request, f"{web.prefix}/creditos/constancias/{reference['reference']}")


@router.get("/constancias/{reference}")
async def show_reference(request: Request, reference: str) -> Response:
    """"Consultar constancia de pago": the sheet to take to the bank."""
    session_of(request)
    doc = await api_of(request).get(f"/v1/billing/payment-references/{reference}")
    return await page(request, "panel/reference.html", {"ref": doc})


@router.get("/constancias/{reference}/pdf")
async def reference_pdf(request: Request, reference: str) -> Response:
    session_of(request)
    response = await api_of(request).raw("GET", f"/v1/billing/payment-references/{reference}/pdf")
    if response.status_code != 200:
        raise ApiFailure.from_response(response)
    return Response(response.content, media_type="application/pdf", headers={"Content-Disposition": response.headers.get("content-disposition", f'inline; filename="constancia-{reference}.pdf"')})
