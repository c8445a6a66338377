"""HTTP routes of the operator console's back end (``/v1/ops``), staff with the ``operator`` role
(the admin key has every role). Cross-tenant by design; an issuer key gets 403."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from timbra_cfdi_builder.api import present
from timbra_cfdi_builder.domain.operations import ReplayRefused
from timbra_cfdi_builder.operations import LetterNotFound, OperationsService, ReplayFailed
from timbra_shared.auth import Principal, current_principal, operator_principal
from timbra_shared.errors import ApiError, Problem, not_found


async def staff(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.kind == "issuer":
        raise ApiError(403, "forbidden", "Esta operación es solo para el personal de Timbra.")
    return principal


Operator = Annotated[Principal, Depends(operator_principal)]


class ReplayIn(BaseModel):
    payload: str | None = Field(default=None, max_length=1_000_000, description="corrected payload (JSON); omitted: the original one")
    note: str | None = Field(default=None, max_length=1000)


class DiscardIn(BaseModel):
    note: str = Field(min_length=3, max_length=1000, description="why it is discarded")


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def present_letter(doc: dict[str, Any]) -> dict[str, Any]:
    out = _json({k: v for k, v in doc.items() if k != "_id"})
    return {"id": doc["_id"], **out}


def present_issuer(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else {"id": doc["_id"], "rfc": doc.get("rfc"), "legal_name": doc.get("legal_name"), "slug": doc.get("slug"), "email": doc.get("email")}


def present_ops_invoice(doc: dict[str, Any]) -> dict[str, Any]:
    body = present(doc)
    return {**body, "issuer_id": doc["issuer_id"], "customer_rfc": doc.get("customer_rfc"), "updated_at": _json(doc.get("updated_at")),
            "redrives": doc.get("redrives") or 0, "source": doc.get("source")}


def _refused(exc: ReplayRefused) -> ApiError:
    status = 422 if exc.path == "payload" else 409
    return ApiError(status, exc.code, exc.message, [Problem(exc.code, exc.message, path=exc.path)])


def build_ops_api(ops: OperationsService) -> APIRouter:
    router = APIRouter(prefix="/v1/ops", tags=["operations"])

    @router.get("/whoami", summary="Who the caller is (kind and roles): the console uses it after a key login")
    async def whoami(principal: Annotated[Principal, Depends(staff)]) -> dict[str, Any]:
        roles = ["operator", "billing"] if principal.kind == "admin" else list(principal.roles)
        return {"kind": principal.kind, "roles": roles, "key_id": principal.key_id}

    @router.get("/pipeline", summary="Invoices per stage and status, error rate, dead letters")
    async def pipeline(_p: Operator, window_minutes: Annotated[int, Query(ge=1, le=10080)] = 60) -> dict[str, Any]:
        body = await ops.pipeline(window_minutes)
        body["recent_failures"] = [present_ops_invoice(d) for d in body["recent_failures"]]
        return body

    @router.get("/lag", summary="Consumer lag per topic and consumer group")
    async def lag(_p: Operator) -> dict[str, Any]:
        try:
            return await ops.lag()
        except Exception as exc:  # noqa: BLE001 - the broker's answer, whatever failed, is "not available now"
            raise ApiError(503, "TIMBRA_BROKER_UNAVAILABLE", f"No se pudo leer el estado del broker: {type(exc).__name__}.") from None

    @router.get("/search", summary="Search invoices and issuers across tenants: invoice id, UUID, issuer id, RFC or name")
    async def search(_p: Operator, q: Annotated[str, Query(min_length=1, max_length=200)], limit: Annotated[int, Query(ge=1, le=100)] = 50) -> dict[str, Any]:
        found = await ops.search(q, limit)
        return {"query": found["query"], "kind": found["kind"], "issuers": [present_issuer(i) for i in found["issuers"]],
                "invoices": [present_ops_invoice(d) for d in found["invoices"]]}

    @router.get("/invoices/{invoice_id}", summary="An invoice's timeline, trace and failure, any issuer")
    async def invoice(invoice_id: str, _p: Operator) -> dict[str, Any]:
        found = await ops.invoice(invoice_id)
        if found is None:
            raise not_found("Factura")
        return {**present_ops_invoice(found["invoice"]), "issuer": present_issuer(found["issuer"]), "trace_url": found["trace_url"],
                "dead_letters": [present_letter(d) for d in found["dead_letters"]]}

    @router.get("/dead-letters", summary="The dead-letter store")
    async def letters(_p: Operator, status: Literal["open", "replayed", "discarded"] | None = None, invoice_id: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        return {"data": [present_letter(d) for d in await ops.letters_page(status, invoice_id, limit)]}

    @router.get("/dead-letters/{letter_id}")
    async def letter(letter_id: str, _p: Operator) -> dict[str, Any]:
        try:
            return present_letter(await ops.letter(letter_id))
        except LetterNotFound:
            raise not_found("Mensaje") from None

    @router.post("/dead-letters/{letter_id}/replay", summary="Republish the message (or a corrected one) on its original topic")
    async def replay(letter_id: str, body: ReplayIn, principal: Operator) -> dict[str, Any]:
        try:
            return present_letter(await ops.replay(letter_id, principal, payload=body.payload, note=body.note))
        except LetterNotFound:
            raise not_found("Mensaje") from None
        except ReplayRefused as exc:
            raise _refused(exc) from None
        except ReplayFailed:
            raise ApiError(503, "TIMBRA_BROKER_UNAVAILABLE", "El broker no aceptó el reenvío; el mensaje sigue abierto. Intenta de nuevo en unos segundos.") from None

    @router.post("/dead-letters/{letter_id}/discard", summary="Close a dead letter without replaying it")
    async def discard(letter_id: str, body: DiscardIn, principal: Operator) -> dict[str, Any]:
        try:
            return present_letter(await ops.discard(letter_id, principal, body.note))
        except LetterNotFound:
            raise not_found("Mensaje") from None
        except ReplayRefused as exc:
            raise _refused(exc) from None

    return router
