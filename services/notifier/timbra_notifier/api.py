"""HTTP routes owned by the notifier: the PDF."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from timbra_notifier.adapters.repository import DocumentRepository
from timbra_shared.auth import Principal, issuer_principal
from timbra_shared.errors import ApiError


def build_api(repo: DocumentRepository) -> APIRouter:
    router = APIRouter(prefix="/v1/invoices", tags=["invoices"])

    @router.get("/{invoice_id}/pdf", response_class=Response)
    async def invoice_pdf(invoice_id: str, principal: Annotated[Principal, Depends(issuer_principal)]) -> Response:
        doc = await repo.get(invoice_id, principal.issuer_id)
        if doc is None:
            raise ApiError(404, "not_found", "La factura no existe o su PDF aún no está listo.")
        return Response(doc["pdf"], media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{doc["uuid"]}.pdf"'})

    return router
