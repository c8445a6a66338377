"""The billing back-office (role ``billing``): issuer balances and the ledger, credit grants and
adjustments, packages and prices, payment references, bank statements with their matched
deposits, and the exceptions queue resolved by hand. Every read and write is ``/v1/billing``."""

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import ApiFailure, SessionExpired, errors_by_field
from timbra_shared.web.console.common import api_of, checked_form, form_text, page, web_of

router = APIRouter(prefix="/cobranza")
BILL = "billing"
RESOLVE_ES = {"activate": "Activar la constancia", "refund": "Reembolsar", "dismiss": "Descartar", "note": "Agregar nota (sigue abierta)"}
KIND_ES = {
    "underpayment": "Pago menor al total", "overpayment": "Pago mayor al total", "unknown_reference": "Referencia desconocida o mal escrita",
    "duplicate_deposit": "Depósito duplicado", "already_paid": "Constancia ya pagada",
}


def _int(text: str) -> int | str:
    """Numbers as numbers (``months`` is a Literal[12, 24] that a string never matches); anything
    else goes as typed, for the API to name the field."""
    return int(text) if text.lstrip("-").isdigit() else text


def _q(value: str) -> str:
    return quote(value, safe="")


def _redirect(request: Request, path: str) -> Response:
    web = web_of(request)
    return web.redirect(request, f"{web.prefix}/cobranza{path}")


@router.get("")
async def accounts(request: Request, emisor: str = "") -> Response:
    api = api_of(request, BILL)
    if emisor.strip():
        return _redirect(request, f"/emisores/{_q(emisor.strip())}")
    data = await api.get("/v1/billing/accounts")
    return page(request, "console/billing_accounts.html", {"section": "saldos", "accounts": data["data"]})


@router.get("/emisores/{issuer_id}")
async def issuer(request: Request, issuer_id: str, errors: dict[str, list[str]] | None = None, status: int = 200) -> Response:
    api = api_of(request, BILL)
    balance = await api.get("/v1/billing/balance", issuer_id=issuer_id)
    packages = (await api.get("/v1/billing/packages", issuer_id=issuer_id))["data"]
    ledger = (await api.get("/v1/billing/ledger", issuer_id=issuer_id, limit=200))["data"]
    references = (await api.get("/v1/billing/payment-references", issuer_id=issuer_id))["data"]
    products = (await api.get("/v1/billing/products"))["data"]
    account = next((a for a in (await api.get("/v1/billing/accounts"))["data"] if a["issuer_id"] == issuer_id), None)
    return page(request, "console/billing_issuer.html", {
        "section": "saldos", "issuer_id": issuer_id, "account": account, "balance": balance, "packages": packages, "ledger": ledger, "references": references,
        "products": [p for p in products if p.get("active", True)], "errors": errors or {}, "done": request.query_params.get("ok"),
    }, status=status)


async def _issuer_action(request: Request, issuer_id: str, path: str, body: dict[str, Any], ok: str) -> Response:
    try:
        await api_of(request, BILL).post(path, body)
    except SessionExpired:
        raise
    except ApiFailure as exc:
        if exc.status in (403, 404):
            raise
        return await issuer(request, issuer_id, errors=errors_by_field(exc), status=422)
    return _redirect(request, f"/emisores/{_q(issuer_id)}?ok={ok}")


@router.post("/emisores/{issuer_id}/creditos")
async def grant(request: Request, issuer_id: str) -> Response:
    form = await checked_form(request)
    return await _issuer_action(request, issuer_id, "/v1/billing/credits",
                                {"issuer_id": issuer_id, "stamps": form_text(form, "stamps") or "0", "months": form_text(form, "months") or "12", "reason": form_text(form, "reason") or None}, "creditos")


@router.post("/emisores/{issuer_id}/ajustes")
async def adjust(request: Request, issuer_id: str) -> Response:
    form = await checked_form(request)
    return await _issuer_action(request, issuer_id, "/v1/billing/adjustments",
                                {"issuer_id": issuer_id, "quantity": form_text(form, "quantity") or "0", "reason": form_text(form, "reason")}, "ajuste")


@router.post("/emisores/{issuer_id}/referencias")
async def new_reference(request: Request, issuer_id: str) -> Response:
    form = await checked_form(request)
    items = [{"code": code, "quantity": form_text(form, f"qty_{code}")} for code in form.getlist("code") if isinstance(code, str) and form_text(form, f"qty_{code}") not in ("", "0")]
    return await _issuer_action(request, issuer_id, "/v1/billing/payment-references", {"issuer_id": issuer_id, "items": items}, "referencia")


# ---------------------------------------------------------------------- products, references

@router.get("/productos")
async def products(request: Request, errors: dict[str, list[str]] | None = None, status: int = 200) -> Response:
    data = await api_of(request, BILL).get("/v1/billing/products")
    return page(request, "console/billing_products.html", {"section": "productos", "products": data["data"], "errors": errors or {}, "done": request.query_params.get("ok")}, status=status)


@router.post("/productos/{code}")
async def put_product(request: Request, code: str) -> Response:
    form = await checked_form(request)
    body = {"description": form_text(form, "description"), "price": form_text(form, "price"), "stamps": _int(form_text(form, "stamps") or "0"),
            "months": _int(form_text(form, "months") or "12"), "active": form.get("active") == "on"}
    try:
        await api_of(request, BILL).put(f"/v1/billing/products/{_q(code)}", body)
    except SessionExpired:
        raise
    except ApiFailure as exc:
        if exc.status in (403, 404):
            raise
        return await products(request, errors={code: [m for msgs in errors_by_field(exc).values() for m in msgs]}, status=422)
    return _redirect(request, f"/productos?ok={_q(code)}")


@router.get("/referencias")
async def references(request: Request, estado: str = "") -> Response:
    status = estado if estado in ("pending", "paid") else None
    data = await api_of(request, BILL).get("/v1/billing/payment-references", status=status)
    return page(request, "console/billing_references.html", {"section": "referencias", "references": data["data"], "status": estado})


@router.get("/referencias/{reference}/pdf")
async def reference_pdf(request: Request, reference: str) -> Response:
    response = await api_of(request, BILL).raw("GET", f"/v1/billing/payment-references/{_q(reference)}/pdf")
    if response.status_code >= 400:
        raise ApiFailure.from_response(response)
    return Response(response.content, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="constancia-{reference}.pdf"', "Cache-Control": "no-store"})


# ---------------------------------------------------------------------- statements and exceptions

@router.get("/estados")
async def statements(request: Request) -> Response:
    data = await api_of(request, BILL).get("/v1/billing/statements")
    return page(request, "console/billing_statements.html", {"section": "estados", "imports": data["data"], "result": None, "errors": {}})


@router.post("/estados")
async def upload_statement(request: Request) -> Response:
    form = await checked_form(request)
    api = api_of(request, BILL)
    upload = form.get("file")
    errors: dict[str, list[str]] = {}
    result = None
    if upload is None or isinstance(upload, str) or not upload.filename:
        errors = {"file": ["Elige el archivo CSV del estado de cuenta."]}
    else:
        data = await upload.read()
        try:
            result = await api.post("/v1/billing/statements", None, files={"file": (upload.filename, data, upload.content_type or "text/csv")})
        except SessionExpired:
            raise
        except ApiFailure as exc:
            if exc.status == 403:
                raise
            errors = errors_by_field(exc)
            errors.setdefault("file", []).extend(errors.pop("general", []))
    imports = (await api.get("/v1/billing/statements"))["data"]
    return page(request, "console/billing_statements.html", {"section": "estados", "imports": imports, "result": result, "errors": errors, "kind_es": KIND_ES},
                status=422 if errors else 200)


@router.get("/excepciones")
async def exceptions(request: Request, estado: str = "open", errors: dict[str, dict[str, list[str]]] | None = None, status: int = 200) -> Response:
    state = estado if estado in ("open", "resolved", "todas") else "open"
    data = await api_of(request, BILL).get("/v1/billing/exceptions", status=None if state == "todas" else state)
    return page(request, "console/billing_exceptions.html", {"section": "excepciones", "exceptions": data["data"], "status": state, "kind_es": KIND_ES,
                                                              "resolve_es": RESOLVE_ES, "errors": errors or {}, "done": request.query_params.get("ok")}, status=status)


@router.post("/excepciones/{exception_id}/resolver")
async def resolve(request: Request, exception_id: str) -> Response:
    form = await checked_form(request)
    body = {"action": form_text(form, "action"), "note": form_text(form, "note"), "reference": form_text(form, "reference") or None}
    try:
        await api_of(request, BILL).post(f"/v1/billing/exceptions/{_q(exception_id)}/resolve", body)
    except SessionExpired:
        raise
    except ApiFailure as exc:
        if exc.status in (403, 404):
            raise
        return await exceptions(request, "open", errors={exception_id: errors_by_field(exc)}, status=422)
    return _redirect(request, f"/excepciones?ok={_q(exception_id)}")
