"""HTTP routes owned by the cfdi-builder: create, read and list invoices."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from fastapi.responses import JSONResponse

from timbra_cfdi_builder.domain.invoice import FINAL
from timbra_cfdi_builder.service import InvoiceService
from timbra_shared.auth import Principal, issuer_principal
from timbra_shared.errors import not_found
from timbra_shared.events import InvoiceRequest

MAX_WAIT_S = 30


def present(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "status": doc["status"],
        "type": (doc.get("request") or {}).get("type"),
        "livemode": doc.get("livemode", False),
        "uuid": doc.get("uuid"),
        "serie": doc.get("serie"),
        "folio": doc.get("folio"),
        "total": doc.get("total"),
        "trace_id": doc.get("trace_id"),
        "created_at": doc["created_at"].isoformat(),
        "timeline": [
            {"status": t["status"], "at": t["at"].isoformat(), "service": t["service"]}
            for t in sorted(doc.get("timeline", []), key=lambda t: t["at"])
        ],
        **({"message": doc.get("message"), "errors": doc["errors"]} if doc.get("errors") is not None else {}),
        **({"cancellation": _cancellation(doc["cancellation"])} if doc.get("cancellation") else {}),
    }


def _cancellation(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in summary.items()}


def build_api(service: InvoiceService) -> APIRouter:
    router = APIRouter(prefix="/v1/invoices", tags=["invoices"])

    @router.post("", status_code=202)
    async def create_invoice(
        request: Annotated[InvoiceRequest, Body()],
        principal: Annotated[Principal, Depends(issuer_principal)],
        response: Response,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
        wait: Annotated[bool, Query()] = False,
        timeout: Annotated[float, Query(gt=0, le=MAX_WAIT_S)] = 10,
    ) -> dict[str, Any]:
        if idempotency_key and not request.idempotency_key:
            request = request.model_copy(update={"idempotency_key": idempotency_key})
        doc, created = await service.request(principal, request)
        if not created:
            response.status_code = 200
        if wait:
            deadline = asyncio.get_running_loop().time() + timeout
            while doc["status"] not in FINAL and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
                doc = await service.invoices.get(doc["_id"]) or doc
        return present(doc)

    @router.get("")
    async def list_invoices(
        principal: Annotated[Principal, Depends(issuer_principal)],
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        starting_after: str | None = None,
    ) -> JSONResponse:
        assert principal.issuer_id
        docs = await service.invoices.page(principal.issuer_id, status=status, limit=limit, before=starting_after)
        return JSONResponse({"data": [present(d) for d in docs], "has_more": len(docs) == limit})

    @router.get("/{invoice_id}")
    async def get_invoice(invoice_id: str, principal: Annotated[Principal, Depends(issuer_principal)]) -> dict[str, Any]:
        doc = await service.invoices.get(invoice_id, principal.issuer_id)
        if doc is None:
            raise not_found("Factura")
        return present(doc)

    return router
