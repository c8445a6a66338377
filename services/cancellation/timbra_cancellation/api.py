"""HTTP routes owned by the cancellation service (the ingress sends ``DELETE /v1/invoices/{id}``
and ``/v1/invoices/{id}/cancellation*`` here)."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from timbra_cancellation.service import CancellationRefused, CancellationService, present
from timbra_shared.auth import Principal, issuer_principal
from timbra_shared.errors import ApiError, Problem, not_found


class CancellationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    motive: str = Field(max_length=10, description="c_MotivoCancelacion: 01, 02, 03 o 04")
    substitution: str | None = Field(default=None, max_length=100, description="motivo 01: id o UUID de la factura que sustituye")


class SubstitutionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: dict[str, Any] = Field(default_factory=dict, description="campos de POST /v1/invoices que corrigen la original (customer, items, payment_form…)")


def refused(exc: CancellationRefused) -> ApiError:
    first = exc.problems[0]
    message = first.message if len(exc.problems) == 1 else f"La cancelación no procede: {len(exc.problems)} problemas."
    return ApiError(first.status, first.code, message, [Problem(p.code, p.message, p.source, p.path) for p in exc.problems])  # type: ignore[arg-type]


def build_api(service: CancellationService) -> APIRouter:
    router = APIRouter(prefix="/v1/invoices", tags=["cancellations"])
    IssuerP = Annotated[Principal, Depends(issuer_principal)]

    async def cancel(invoice_id: str, principal: Principal, motive: str, substitution: str | None) -> dict[str, Any]:
        assert principal.issuer_id
        try:
            doc = await service.request(principal.issuer_id, invoice_id, motive, substitution, livemode=principal.livemode)
        except CancellationRefused as exc:
            raise refused(exc) from None
        return present(doc)

    @router.delete("/{invoice_id}", status_code=202, summary="Cancelar una factura timbrada")
    async def delete_invoice(
        invoice_id: str,
        principal: IssuerP,
        motive: Annotated[str, Query(max_length=10, description="c_MotivoCancelacion: 01, 02, 03 o 04")],
        substitution: Annotated[str | None, Query(max_length=100, description="motivo 01: id o UUID de la factura sustituta")] = None,
    ) -> dict[str, Any]:
        return await cancel(invoice_id, principal, motive, substitution)

    @router.post("/{invoice_id}/cancellation", status_code=202, summary="Cancelar una factura timbrada (cuerpo JSON)")
    async def post_cancellation(invoice_id: str, principal: IssuerP, body: Annotated[CancellationIn, Body()]) -> dict[str, Any]:
        return await cancel(invoice_id, principal, body.motive, body.substitution)

    @router.post("/{invoice_id}/cancellation/substitution", status_code=202, summary="Sustituir una factura: emitir la corregida y cancelar la original (motivo 01)")
    async def substitute(invoice_id: str, principal: IssuerP, body: Annotated[SubstitutionIn, Body()]) -> dict[str, Any]:
        assert principal.issuer_id
        try:
            doc = await service.substitute(principal.issuer_id, invoice_id, body.changes, livemode=principal.livemode)
        except CancellationRefused as exc:
            raise refused(exc) from None
        return present(doc)

    @router.get("/{invoice_id}/cancellation", summary="Estado de la cancelación")
    async def get_cancellation(invoice_id: str, principal: IssuerP) -> dict[str, Any]:
        doc = await service.cancellations.get(invoice_id, principal.issuer_id)
        if doc is None:
            raise ApiError(404, "not_found", "La factura no existe o no tiene una solicitud de cancelación.")
        return present(doc)

    @router.get("/{invoice_id}/cancellation_receipt", response_class=Response, summary="Acuse de cancelación del SAT (XML)")
    async def cancellation_receipt(invoice_id: str, principal: IssuerP) -> Response:
        assert principal.issuer_id
        acuse = await service.acuse(invoice_id, principal.issuer_id)
        if acuse is None:
            raise not_found("Acuse de cancelación")
        return Response(acuse, media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="acuse-cancelacion-{invoice_id}.xml"'})

    return router
