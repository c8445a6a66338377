"""HTTP routes owned by the notifier: the PDF, previews, email (resend, status, templates), the
CANCELADO mark (internal), and webhooks."""

import hmac
import io
import zipfile
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from timbra_notifier.domain.preview import PreviewInvalid
from timbra_notifier.domain.templates import TemplateInvalid
from timbra_notifier.domain.webhooks import EVENT_TYPES
from timbra_notifier.service import EmailRefused, NotFound, NotifierService
from timbra_notifier.webhooks import WebhookInvalid, WebhookService, public_delivery, public_endpoint
from timbra_shared.auth import Principal, issuer_principal
from timbra_shared.errors import ApiError, Problem, not_found
from timbra_shared.events import InvoiceRequest

Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResendIn(Strict):
    emails: list[Email] | None = Field(default=None, max_length=10, description="default: the invoice's recipients")


class TemplateIn(Strict):
    subject: str | None = Field(default=None, max_length=250)
    body: str | None = Field(default=None, max_length=20_000)


class WebhookIn(Strict):
    url: str = Field(max_length=2000)
    events: list[str] = Field(min_length=1)
    description: str | None = Field(default=None, max_length=200)


class WebhookPatch(Strict):
    url: str | None = Field(default=None, max_length=2000)
    events: list[str] | None = None
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


def build_api(service: NotifierService, webhooks: WebhookService, internal_secret: str) -> APIRouter:
    IssuerP = Annotated[Principal, Depends(issuer_principal)]
    invoices = APIRouter(prefix="/v1/invoices", tags=["invoices"])

    @invoices.post("/preview/pdf", response_class=Response, summary="Vista previa en PDF, sin validez fiscal")
    async def preview_pdf(request: InvoiceRequest, principal: IssuerP,
                          logo_placement: Annotated[Literal["left", "center", "right"] | None, Query(description="Dibuja el logotipo en esta posición (la que se está eligiendo) en vez de la guardada")] = None) -> Response:
        try:
            pdf = await service.preview(principal.issuer_id, request, logo_placement=logo_placement)
        except NotFound:
            raise ApiError(409, "TIMBRA_ISSUER_NOT_READY", "Los datos fiscales del emisor aún no están disponibles; intenta de nuevo en unos segundos.") from None
        except PreviewInvalid as exc:
            raise ApiError(422, exc.code, exc.message, [Problem(exc.code, exc.message, "sat" if exc.code.startswith("CFDI") else "timbra", exc.path)]) from None
        return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": 'inline; filename="vista-previa.pdf"'})

    @invoices.post("/preview/xml", response_class=Response, summary="El CFDI sin sellar de la vista previa (totales e impuestos), sin validez fiscal")
    async def preview_draft_xml(request: InvoiceRequest, principal: IssuerP) -> Response:
        try:
            xml = await service.preview_cfdi(principal.issuer_id, request)
        except NotFound:
            raise ApiError(409, "TIMBRA_ISSUER_NOT_READY", "Los datos fiscales del emisor aún no están disponibles; intenta de nuevo en unos segundos.") from None
        except PreviewInvalid as exc:
            raise ApiError(422, exc.code, exc.message, [Problem(exc.code, exc.message, "sat" if exc.code.startswith("CFDI") else "timbra", exc.path)]) from None
        return Response(xml, media_type="application/xml")

    @invoices.get("/{invoice_id}/pdf", response_class=Response)
    async def invoice_pdf(invoice_id: str, principal: IssuerP) -> Response:
        found = await service.pdf(invoice_id, principal.issuer_id)
        if found is None:
            raise ApiError(404, "not_found", "La factura no existe o su PDF aún no está listo.")
        doc, pdf = found
        return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{doc["uuid"]}.pdf"'})

    @invoices.get("/{invoice_id}/zip", response_class=Response, summary="The stamped XML and the PDF in one ZIP")
    async def invoice_zip(invoice_id: str, principal: IssuerP) -> Response:
        found = await service.pdf(invoice_id, principal.issuer_id)
        if found is None:
            raise ApiError(404, "not_found", "La factura no existe o aún no está timbrada.")
        doc, pdf = found
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{doc['uuid']}.xml", doc["xml"])
            archive.writestr(f"{doc['uuid']}.pdf", pdf)
        return Response(buffer.getvalue(), media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{doc["uuid"]}.zip"'})

    @invoices.post("/{invoice_id}/email")
    async def resend_email(invoice_id: str, principal: IssuerP, body: Annotated[ResendIn | None, Body()] = None) -> dict[str, Any]:
        try:
            return await service.resend(invoice_id, principal.issuer_id, body.emails if body else None)
        except NotFound:
            raise ApiError(404, "not_found", "La factura no existe o aún no está timbrada.") from None
        except EmailRefused as exc:
            if exc.permanent:
                raise ApiError(422, "TIMBRA_EMAIL_REJECTED", str(exc)) from None
            raise ApiError(502, "TIMBRA_EMAIL_UNAVAILABLE", str(exc)) from None

    @invoices.get("/{invoice_id}/email")
    async def email_status(invoice_id: str, principal: IssuerP) -> dict[str, Any]:
        status = await service.email_status(invoice_id, principal.issuer_id)
        if status is None:
            raise not_found("Factura")
        return status

    settings = APIRouter(prefix="/v1/issuers/me", tags=["issuers"])

    @settings.get("/email-template")
    async def get_template(principal: IssuerP) -> dict[str, Any]:
        return await service.template(principal.issuer_id)

    @settings.put("/email-template")
    async def put_template(body: TemplateIn, principal: IssuerP) -> dict[str, Any]:
        try:
            return await service.set_template(principal.issuer_id, body.subject, body.body)
        except TemplateInvalid as exc:
            raise ApiError(422, "TIMBRA_EMAIL_TEMPLATE_INVALID", str(exc)) from None

    @settings.delete("/email-template")
    async def delete_template(principal: IssuerP) -> dict[str, Any]:
        return await service.reset_template(principal.issuer_id)

    internal = APIRouter(prefix="/internal/v1", include_in_schema=False)

    @internal.put("/invoices/{invoice_id}/cancelled")
    async def mark_cancelled(invoice_id: str, secret: Annotated[str, Header(alias="x-timbra-internal")] = "") -> dict[str, Any]:
        if not secret or not hmac.compare_digest(secret.encode(), internal_secret.encode()):
            raise ApiError(403, "forbidden", "Solo para uso interno.")
        if await service.repo.get(invoice_id) is None:
            raise not_found("Factura")
        await service.mark_cancelled(invoice_id, None)
        return {"ok": True}

    hooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

    def invalid(exc: WebhookInvalid) -> ApiError:
        return ApiError(422, exc.code, exc.message, [Problem(exc.code, exc.message, "timbra", exc.path)])

    @hooks.get("/event-types")
    async def event_types() -> dict[str, Any]:
        return {"data": [{"type": k, "description": v} for k, v in EVENT_TYPES.items()]}

    @hooks.post("", status_code=201)
    async def create_webhook(body: WebhookIn, principal: IssuerP) -> dict[str, Any]:
        try:
            return await webhooks.create_endpoint(principal.issuer_id, body.url, body.events, body.description)
        except WebhookInvalid as exc:
            raise invalid(exc) from None

    @hooks.get("")
    async def list_webhooks(principal: IssuerP) -> dict[str, Any]:
        return {"data": [public_endpoint(e) for e in await webhooks.repo.list_endpoints(principal.issuer_id)]}

    @hooks.get("/{endpoint_id}")
    async def get_webhook(endpoint_id: str, principal: IssuerP) -> dict[str, Any]:
        doc = await webhooks.repo.endpoint(endpoint_id, principal.issuer_id)
        if doc is None:
            raise not_found("Webhook")
        return public_endpoint(doc)

    @hooks.patch("/{endpoint_id}")
    async def update_webhook(endpoint_id: str, body: WebhookPatch, principal: IssuerP) -> dict[str, Any]:
        try:
            doc = await webhooks.update_endpoint(principal.issuer_id, endpoint_id, body.model_dump(exclude_none=True))
        except WebhookInvalid as exc:
            raise invalid(exc) from None
        if doc is None:
            raise not_found("Webhook")
        return doc

    @hooks.delete("/{endpoint_id}")
    async def delete_webhook(endpoint_id: str, principal: IssuerP) -> dict[str, Any]:
        if not await webhooks.repo.delete_endpoint(endpoint_id, principal.issuer_id):
            raise not_found("Webhook")
        return {"ok": True}

    @hooks.post("/{endpoint_id}/secret")
    async def roll_secret(endpoint_id: str, principal: IssuerP) -> dict[str, Any]:
        doc = await webhooks.roll_secret(principal.issuer_id, endpoint_id)
        if doc is None:
            raise not_found("Webhook")
        return doc

    @hooks.get("/{endpoint_id}/deliveries")
    async def deliveries(endpoint_id: str, principal: IssuerP, state: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 50) -> dict[str, Any]:
        if await webhooks.repo.endpoint(endpoint_id, principal.issuer_id) is None:
            raise not_found("Webhook")
        return {"data": [public_delivery(d) for d in await webhooks.repo.list_deliveries(endpoint_id, limit, state)]}

    @hooks.post("/{endpoint_id}/deliveries/{delivery_id}/replay", status_code=202)
    async def replay(endpoint_id: str, delivery_id: str, principal: IssuerP) -> dict[str, Any]:
        if not delivery_id.startswith(f"{endpoint_id}:"):
            raise not_found("Entrega")
        replayed = await webhooks.replay(principal.issuer_id, delivery_id)
        if replayed is None:
            raise not_found("Entrega")
        return replayed

    router = APIRouter()
    for part in (invoices, settings, internal, hooks):
        router.include_router(part)
    return router
