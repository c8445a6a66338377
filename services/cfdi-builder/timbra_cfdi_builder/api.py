"""HTTP routes owned by the cfdi-builder: create, read and list invoices."""

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from fastapi.responses import JSONResponse

from timbra_cfdi_builder.domain.invoice import FINAL, InvoiceStatus
from timbra_cfdi_builder.service import IDEMPOTENCY_CONFLICT, IdempotencyConflict, InvoiceService
from timbra_shared.auth import Principal, issuer_principal
from timbra_shared.errors import ApiError, Problem, not_found
from timbra_shared.events import InvoiceRequest

MAX_WAIT_S = 30
Status = Literal[tuple(s.value for s in InvoiceStatus)]  # type: ignore[valid-type]


def _instant(text: str | None, name: str, *, end: bool = False) -> datetime | None:
    """``YYYY-MM-DD`` means the whole day (UTC): ``created_to=2026-01-31`` includes the 31st; a
    date-time without an offset is UTC."""
    if not text:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        message = "Debe ser una fecha (AAAA-MM-DD) o una fecha y hora ISO 8601."
        raise ApiError(422, "invalid_request", f"{name}: {message}", [Problem("TIMBRA_VALIDATION", f"{name}: {message}", path=name)]) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
        "customer": _customer(doc),
        "trace_id": doc.get("trace_id"),
        "created_at": doc["created_at"].isoformat(),
        "timeline": [
            {"status": t["status"], "at": t["at"].isoformat(), "service": t["service"]}
            # the cancellation service emits accepted and completed at one instant; the final status reads last
            for t in sorted(doc.get("timeline", []), key=lambda t: (t["at"], t["status"] == "canceled"))
        ],
        **({"message": doc.get("message"), "errors": doc["errors"]} if doc.get("errors") is not None else {}),
        **({"cancellation": _cancellation(doc["cancellation"])} if doc.get("cancellation") else {}),
    }


def _customer(doc: dict[str, Any]) -> dict[str, Any]:
    """The receptor as the CFDI names it once built; before that, as the request gave it."""
    summary = doc.get("summary") or {}
    given = (doc.get("request") or {}).get("customer") or {}
    return {"id": doc.get("customer_id"), "rfc": summary.get("rfc_receptor") or doc.get("customer_rfc"), "legal_name": summary.get("nombre_receptor") or given.get("legal_name")}


def _cancellation(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in summary.items()}


def build_api(service: InvoiceService) -> APIRouter:
    router = APIRouter(prefix="/v1/invoices", tags=["invoices"])

    @router.post("", status_code=202, summary="Create an invoice (202 at once; ?wait=true waits for the final status)")
    async def create_invoice(
        request: Annotated[InvoiceRequest, Body()],
        principal: Annotated[Principal, Depends(issuer_principal)],
        response: Response,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
        wait: Annotated[bool, Query(description="wait for a final status (emailed, rejected, stamp_failed, canceled)")] = False,
        timeout: Annotated[float, Query(gt=0, le=MAX_WAIT_S, description="seconds to wait with wait=true")] = 10,
    ) -> dict[str, Any]:
        if idempotency_key and request.idempotency_key and idempotency_key != request.idempotency_key:
            raise ApiError(422, "TIMBRA_IDEMPOTENCY_KEY_MISMATCH", "El encabezado Idempotency-Key y el campo idempotency_key traen llaves distintas; envía solo una.",
                           [Problem("TIMBRA_IDEMPOTENCY_KEY_MISMATCH", "No coincide con el encabezado Idempotency-Key.", path="idempotency_key")])
        if idempotency_key and not request.idempotency_key:
            request = request.model_copy(update={"idempotency_key": idempotency_key})
        try:
            doc, created = await service.request(principal, request)
        except IdempotencyConflict as conflict:
            raise ApiError(409, IDEMPOTENCY_CONFLICT.code, f"{IDEMPOTENCY_CONFLICT.message} (factura {conflict.invoice_id})", [IDEMPOTENCY_CONFLICT]) from None
        if wait:
            loop = asyncio.get_running_loop()
            deadline, pause = loop.time() + timeout, 0.05
            while doc["status"] not in FINAL and loop.time() < deadline:
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
                pause = min(pause * 1.5, 0.5)
                doc = await service.invoices.get(doc["_id"]) or doc
        # 202: accepted, still on its way; 200: a replay of a known idempotency key, or final after waiting
        response.status_code = 200 if not created or doc["status"] in FINAL else 202
        return present(doc)

    @router.get("", summary="List invoices, newest first, with filters and cursor pagination")
    async def list_invoices(
        principal: Annotated[Principal, Depends(issuer_principal)],
        status: Status | None = None,
        type: Literal["I", "E", "T", "P"] | None = None,  # noqa: A002
        customer_id: Annotated[str | None, Query(max_length=100)] = None,
        customer_rfc: Annotated[str | None, Query(max_length=13, description="the receptor's RFC")] = None,
        serie: Annotated[str | None, Query(max_length=25)] = None,
        folio: Annotated[str | None, Query(max_length=40)] = None,
        uuid: Annotated[str | None, Query(max_length=36, description="the UUID of the stamp (folio fiscal)")] = None,
        idempotency_key: Annotated[str | None, Query(max_length=200)] = None,
        created_from: Annotated[str | None, Query(max_length=40, description="date or date-time (ISO 8601), inclusive; a date means from 00:00 UTC")] = None,
        created_to: Annotated[str | None, Query(max_length=40, description="date or date-time (ISO 8601), exclusive; a date includes that whole day (UTC)")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        starting_after: Annotated[str | None, Query(max_length=100, description="the last id of the previous page")] = None,
    ) -> JSONResponse:
        assert principal.issuer_id
        after = None
        if starting_after:
            after = await service.invoices.get(starting_after, principal.issuer_id)
            if after is None:
                raise ApiError(422, "TIMBRA_INVALID_CURSOR", "starting_after no es una factura de este emisor.",
                               [Problem("TIMBRA_INVALID_CURSOR", "No es una factura de este emisor.", path="starting_after")])
        docs, has_more = await service.invoices.page(
            principal.issuer_id, limit=limit, after=after, status=status, type=type, customer_id=customer_id,
            customer_rfc=customer_rfc.strip().upper() if customer_rfc else None, serie=serie, folio=folio,
            uuid=uuid.strip().upper() if uuid else None, idempotency_key=idempotency_key,
            created_from=_instant(created_from, "created_from"), created_to=_instant(created_to, "created_to", end=True),
        )
        return JSONResponse({"data": [present(d) for d in docs], "has_more": has_more, "next_cursor": docs[-1]["_id"] if has_more else None})

    @router.get("/{invoice_id}")
    async def get_invoice(invoice_id: str, principal: Annotated[Principal, Depends(issuer_principal)]) -> dict[str, Any]:
        doc = await service.invoices.get(invoice_id, principal.issuer_id)
        if doc is None:
            raise not_found("Factura")
        return present(doc)

    return router
