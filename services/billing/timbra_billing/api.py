"""HTTP routes owned by billing."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from timbra_billing.service import CreditGate
from timbra_shared.auth import Principal, current_principal, issuer_principal, require_roles


class GrantIn(BaseModel):
    issuer_id: str
    stamps: int = Field(gt=0, le=10_000_000)
    months: int = Field(default=12, ge=1, le=24)


def build_api(gate: CreditGate) -> APIRouter:
    router = APIRouter(prefix="/v1/billing", tags=["billing"])

    @router.post("/credits", status_code=201)
    async def grant_credits(body: GrantIn, principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:
        require_roles(principal, "billing")
        balance = await gate.grant(body.issuer_id, body.stamps, body.months, actor=principal.key_id or principal.kind)
        return {"issuer_id": body.issuer_id, **balance}

    @router.get("/balance")
    async def balance(principal: Annotated[Principal, Depends(issuer_principal)]) -> dict[str, Any]:
        assert principal.issuer_id
        totals = await gate.repo.balance(principal.issuer_id)
        return {**totals, "message": f"Timbres disponibles: {totals['available']}"}

    return router
