"""HTTP routes owned by the stamping service: the stamped XML."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from timbra_shared.auth import Principal, issuer_principal
from timbra_shared.errors import ApiError
from timbra_stamping.adapters.repository import StampRepository


def build_api(repo: StampRepository) -> APIRouter:
    router = APIRouter(prefix="/v1/invoices", tags=["invoices"])

    @router.get("/{invoice_id}/xml", response_class=Response)
    async def stamped_xml(invoice_id: str, principal: Annotated[Principal, Depends(issuer_principal)]) -> Response:
        doc = await repo.get(invoice_id, principal.issuer_id)
        if doc is None:
            raise ApiError(404, "not_found", "La factura no existe o aún no está timbrada.")
        return Response(doc["xml"], media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="{doc["uuid"]}.xml"'})

    return router
