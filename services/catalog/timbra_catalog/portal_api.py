"""The public portal API (no API key): ``/v1/portal/{slug}/...``. The visitor is identified by a
receipt (``X-Portal-Receipt``, the invoices generated in this browser) or a customer session
(``X-Portal-Session``, after logging in by RFC and password). The client address comes from the
ingress (``x-timbra-client-ip``, which it always overwrites), for the lookup throttle."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response

from timbra_catalog.portal_service import PortalService
from timbra_shared.errors import ApiError

CLIENT_IP_HEADER = "x-timbra-client-ip"
Session = Annotated[str | None, Header(alias="X-Portal-Session", max_length=200)]
Receipt = Annotated[str | None, Header(alias="X-Portal-Receipt", max_length=100)]


def _client(request: Request) -> str:
    return (request.headers.get(CLIENT_IP_HEADER) or (request.client.host if request.client else "-"))[:64]


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "TIMBRA_BODY_INVALID", "El cuerpo debe ser un objeto JSON.")
    return body


def build_portal_api(service: PortalService) -> APIRouter:
    router = APIRouter(prefix="/v1/portal/{slug}", tags=["portal"])

    @router.get("", summary="The portal of an issuer: its name, branches and the payment forms offered")
    async def portal(slug: str) -> dict[str, Any]:
        return await service.portal(slug)

    @router.get("/customers/{rfc}", summary="Prefill for a known RFC (throttled per client address)")
    async def customer(slug: str, rfc: str, request: Request) -> dict[str, Any]:
        return await service.customer_by_rfc(slug, rfc, _client(request))

    @router.post("/invoices", status_code=202, summary="Invoice a ticket by branch, order number, ticket number and total")
    async def request_invoice(slug: str, request: Request, response: Response, body: Annotated[Any, Body()]) -> dict[str, Any]:
        result, created = await service.request_invoice(slug, _object(body), _client(request))
        if not created:
            response.status_code = 200
        return result

    @router.get("/invoices/{invoice_id}")
    async def invoice(slug: str, invoice_id: str, receipt: Receipt = None, session: Session = None) -> dict[str, Any]:
        return await service.invoice(slug, invoice_id, receipt=receipt, token=session)

    @router.get("/invoices/{invoice_id}/{kind}", response_class=Response)
    async def document(slug: str, invoice_id: str, kind: str, receipt: Receipt = None, session: Session = None) -> Response:
        if kind not in ("xml", "pdf"):
            raise ApiError(404, "http_404", "Ruta no encontrada.")
        content, media_type, filename = await service.document(slug, invoice_id, kind, receipt=receipt, token=session)
        return Response(content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})

    @router.post("/invoices/{invoice_id}/email")
    async def email(slug: str, invoice_id: str, body: Annotated[Any, Body()], receipt: Receipt = None, session: Session = None) -> dict[str, Any]:
        return await service.send_email(slug, invoice_id, str(_object(body).get("email") or ""), receipt=receipt, token=session)

    @router.post("/accounts", status_code=201, summary="Register a customer account (RFC + the e-mail registered for it + password)")
    async def register(slug: str, request: Request, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return await service.register(slug, _object(body), _client(request))

    @router.post("/sessions", status_code=201, summary="Log in by RFC and password")
    async def login(slug: str, request: Request, body: Annotated[Any, Body()]) -> dict[str, Any]:
        data = _object(body)
        return await service.login(slug, str(data.get("rfc") or ""), str(data.get("password") or ""), _client(request))

    @router.delete("/sessions/current", status_code=204, response_class=Response)
    async def logout(slug: str, session: Session = None) -> Response:
        await service.logout(slug, session)
        return Response(status_code=204)

    @router.get("/me")
    async def me(slug: str, session: Session = None) -> dict[str, Any]:
        return await service.me(slug, session)

    @router.put("/me")
    async def update_me(slug: str, body: Annotated[Any, Body()], session: Session = None) -> dict[str, Any]:
        return await service.update_me(slug, session, _object(body))

    @router.put("/me/password")
    async def change_password(slug: str, body: Annotated[Any, Body()], session: Session = None) -> dict[str, Any]:
        return await service.change_password(slug, session, _object(body))

    @router.get("/me/invoices")
    async def my_invoices(
        slug: str, session: Session = None, branch_id: Annotated[str | None, Query(max_length=60)] = None,
        status: Annotated[str | None, Query(max_length=20)] = None, q: Annotated[str | None, Query(max_length=40)] = None,
        date_from: Annotated[str | None, Query(alias="from", max_length=30)] = None, date_to: Annotated[str | None, Query(alias="to", max_length=30)] = None,
        page: Annotated[int, Query(ge=1, le=10_000)] = 1, limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        return await service.my_invoices(slug, session, branch_id=branch_id, status=status, q=q, date_from=date_from, date_to=date_to, page=page, limit=limit)

    @router.get("/captcha")
    async def captcha(slug: str) -> dict[str, Any]:
        return await service.captcha(slug)

    @router.post("/password-recovery", status_code=202)
    async def recover(slug: str, request: Request, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return await service.recover(slug, _object(body), _client(request))

    return router
