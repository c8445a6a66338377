"""Operator routes of the stamping service (``/v1/ops/stamping``, staff with the ``operator``
role): the retry queue (jobs waiting for their next attempt), the jobs that exhausted their
retries, and their replay (the same as ``timbra-stamping dlq replay``)."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from timbra_shared.auth import Principal, operator_principal
from timbra_shared.errors import ApiError, not_found
from timbra_shared.ids import utcnow
from timbra_stamping.adapters.repository import PENDING, JobRepository

QUEUE_LIMIT = 200


def _job(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("issuer_id", "state", "pac", "attempts", "max_attempts", "next_attempt_at", "last_error", "deadline", "fail_at", "dead_at", "updated_at", "replays")
    return {"invoice_id": doc["_id"], **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in doc.items() if k in keep}}


def build_ops_api(jobs: JobRepository) -> APIRouter:
    router = APIRouter(prefix="/v1/ops/stamping", tags=["operations"])
    Operator = Annotated[Principal, Depends(operator_principal)]

    @router.get("/queue", summary="Stamp jobs waiting to retry and those that exhausted their retries")
    async def queue(_p: Operator) -> dict[str, Any]:
        retrying = await jobs.jobs.find({"state": PENDING, "attempts": {"$gt": 0}}, projection={"event": 0, "history": 0}).sort("next_attempt_at", 1).limit(QUEUE_LIMIT).to_list(None)
        dead = await jobs.list_dead(QUEUE_LIMIT)
        return {"counts": await jobs.count_by_state(), "retrying": [_job(d) for d in retrying], "dead": [_job(d) for d in dead]}

    @router.post("/jobs/{invoice_id}/replay", summary="Retry a stamp job that exhausted its retries, now, with a fresh budget")
    async def replay(invoice_id: str, _p: Operator) -> dict[str, Any]:
        if await jobs.replay([invoice_id], utcnow()) == 0:
            doc = await jobs.get(invoice_id)
            if doc is None:
                raise not_found("Trabajo de timbrado")
            raise ApiError(409, "TIMBRA_STAMP_JOB_NOT_DEAD", f"El timbrado de {invoice_id} no está detenido (estado {doc.get('state')}); no hay nada que reintentar.")
        doc = await jobs.get(invoice_id)
        assert doc is not None
        return _job(doc)

    return router
