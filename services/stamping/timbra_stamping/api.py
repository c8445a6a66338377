"""HTTP routes owned by the stamping service: the stamped XML, and the stamping status."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from timbra_shared.auth import Principal, issuer_principal
from timbra_shared.errors import ApiError
from timbra_stamping.adapters.repository import StampRepository
from timbra_stamping.service import StampingService


def build_api(repo: StampRepository, service: StampingService) -> APIRouter:
    router = APIRouter(prefix="/v1/invoices", tags=["invoices"])

    @router.get("/{invoice_id}/xml", response_class=Response)
    async def stamped_xml(invoice_id: str, principal: Annotated[Principal, Depends(issuer_principal)]) -> Response:
        doc = await repo.get(invoice_id, principal.issuer_id)
        if doc is None:
            raise ApiError(404, "not_found", "La factura no existe o aún no está timbrada.")
        return Response(bytes(doc["xml"]), media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="{doc["uuid"]}.xml"'})

    @router.get("/{invoice_id}/stamping")
    async def stamping_status(invoice_id: str, principal: Annotated[Principal, Depends(issuer_principal)]) -> dict[str, Any]:
        """Where the stamp stands: state, attempts, next attempt, and the time left before the
        72-hour window of the CFDI's Fecha closes (``stamp_by``, ``seconds_left``)."""
        status = await service.status(invoice_id, principal.issuer_id)
        if status is None:
            raise ApiError(404, "not_found", "La factura no existe o aún no llega a timbrado.")
        return status

    return router
