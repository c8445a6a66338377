"""Operator routes of the cancellation service (``/v1/ops/cancellations``, staff with the
``operator`` role): cancellations in process (waiting for the PAC or for SAT/the receptor),
escalated ones, and resuming an escalated one (the same as ``timbra-cancellation escalated resume``)."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from timbra_cancellation.adapters.repository import CancellationRepository
from timbra_cancellation.domain.rules import State
from timbra_shared.auth import Principal, operator_principal
from timbra_shared.errors import ApiError, not_found
from timbra_shared.ids import utcnow

QUEUE_LIMIT = 200


def _item(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("issuer_id", "uuid", "state", "phase", "motive", "attempt", "next_attempt_at", "message", "escalated_at", "updated_at", "polls", "resumes")
    return {"invoice_id": doc["_id"], **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in doc.items() if k in keep}}


def build_ops_api(cancellations: CancellationRepository) -> APIRouter:
    router = APIRouter(prefix="/v1/ops/cancellations", tags=["operations"])
    Operator = Annotated[Principal, Depends(operator_principal)]

    @router.get("/queue", summary="Cancellations in process and escalated ones")
    async def queue(_p: Operator) -> dict[str, Any]:
        pending = await cancellations.docs.find({"state": {"$in": [State.REQUESTED.value, State.PENDING.value, State.AWAITING_SUBSTITUTE.value]}},
                                                projection={"acuse": 0, "history": 0}).sort("next_attempt_at", 1).limit(QUEUE_LIMIT).to_list(None)
        escalated = await cancellations.escalated(QUEUE_LIMIT)
        return {"counts": await cancellations.count_by_state(), "pending": [_item(d) for d in pending], "escalated": [_item(d) for d in escalated]}

    @router.post("/{invoice_id}/resume", summary="Resume polling SAT for an escalated cancellation")
    async def resume(invoice_id: str, _p: Operator) -> dict[str, Any]:
        if await cancellations.resume([invoice_id], utcnow()) == 0:
            doc = await cancellations.get(invoice_id)
            if doc is None:
                raise not_found("Cancelación")
            raise ApiError(409, "TIMBRA_CANCELLATION_NOT_ESCALATED", f"La cancelación de {invoice_id} no está escalada (estado {doc.get('state')}).")
        doc = await cancellations.get(invoice_id)
        assert doc is not None
        return _item(doc)

    return router
