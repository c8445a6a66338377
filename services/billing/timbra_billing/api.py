"""HTTP routes owned by billing (all under /v1/billing)."""

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from timbra_billing.domain.money import Product
from timbra_billing.payments import Payments
from timbra_billing.service import CreditGate
from timbra_shared.auth import Principal, current_principal, issuer_principal
from timbra_shared.errors import ApiError

Who = Annotated[Principal, Depends(current_principal)]
Issuer = Annotated[Principal, Depends(issuer_principal)]


def is_billing_staff(principal: Principal) -> bool:
    """The platform admin, or a staff principal whose roles include ``billing``. An issuer's
    principal never is, whatever roles it claims."""
    return principal.kind == "admin" or (principal.kind == "staff" and "billing" in principal.roles)


def require_billing_staff(principal: Principal) -> None:
    if not is_billing_staff(principal):
        raise ApiError(403, "forbidden", "Esta operación requiere el rol de personal de cobranza (billing).")


def actor_of(principal: Principal) -> str:
    return principal.key_id or principal.kind


def issuer_scope(principal: Principal, issuer_id: str | None) -> str | None:
    """Issuers see only their own; staff name the issuer (or None: all)."""
    if principal.kind == "issuer":
        assert principal.issuer_id
        return principal.issuer_id
    require_billing_staff(principal)
    return issuer_id


class GrantIn(BaseModel):
    issuer_id: str
    stamps: int = Field(gt=0, le=10_000_000)
    months: int = Field(default=12, ge=1, le=24)
    reason: str | None = Field(default=None, max_length=300)
    expires_at: datetime | None = Field(default=None, description="Only to migrate a package bought elsewhere: its own end date")


class AdjustIn(BaseModel):
    issuer_id: str
    quantity: int = Field(ge=-10_000_000, le=10_000_000, description="positive adds, negative takes back; never 0")
    reason: str = Field(min_length=3, max_length=300)

    @field_validator("quantity")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("Debe ser distinto de 0.")
        return value


class AlertsIn(BaseModel):
    threshold: int = Field(ge=0, le=10_000_000)
    emails: list[str] | None = Field(default=None, max_length=10)


class ItemIn(BaseModel):
    code: str = Field(min_length=1, max_length=40)
    quantity: int = Field(default=1, gt=0, le=10_000)


class ReferenceIn(BaseModel):
    items: list[ItemIn] = Field(min_length=1, max_length=50)
    issuer_id: str | None = Field(default=None, description="Billing staff only: whom the sheet is for")


class ProductIn(BaseModel):
    description: str = Field(min_length=1, max_length=200)
    price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    stamps: int = Field(default=0, ge=0)
    months: Literal[12, 24] = 12
    active: bool = True


class ResolveIn(BaseModel):
    action: Literal["activate", "refund", "dismiss", "note"]
    note: str = Field(min_length=3, max_length=1000)
    reference: str | None = Field(default=None, description="activate: the reference the deposit pays, when the bank's was wrong or missing")


def _balance_body(totals: dict[str, int], issuer_id: str, threshold: int | None = None) -> dict[str, Any]:
    return {"issuer_id": issuer_id, **totals, "message": f"Timbres disponibles: {totals['available']}", **({"alert_threshold": threshold} if threshold is not None else {})}


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    out = {("id" if k == "_id" else k): (v.isoformat() if isinstance(v, datetime) else v) for k, v in doc.items()}
    if "history" in out:
        out["history"] = [_clean(h) for h in out["history"]]
    if isinstance(out.get("resolution"), dict):
        out["resolution"] = _clean(out["resolution"])
    return out


def build_api(gate: CreditGate, payments: Payments) -> APIRouter:
    router = APIRouter(prefix="/v1/billing", tags=["billing"])

    # ------------------------------------------------------------------ credits

    @router.post("/credits", status_code=201)
    async def grant_credits(body: GrantIn, principal: Who) -> dict[str, Any]:
        require_billing_staff(principal)
        balance = await gate.grant(body.issuer_id, body.stamps, body.months, actor=actor_of(principal), reason=body.reason, expires_at=body.expires_at)
        return {"issuer_id": body.issuer_id, **balance}

    @router.post("/adjustments", status_code=201)
    async def adjust(body: AdjustIn, principal: Who) -> dict[str, Any]:
        require_billing_staff(principal)
        return _balance_body(await gate.adjust(body.issuer_id, body.quantity, reason=body.reason, actor=actor_of(principal)), body.issuer_id)

    @router.get("/balance")
    async def balance(principal: Who, issuer_id: str | None = None) -> dict[str, Any]:
        scope = issuer_scope(principal, issuer_id)
        if scope is None:
            raise ApiError(422, "invalid_request", "Indica issuer_id.")
        account = await gate.repo.account(scope) or {}
        return _balance_body(await gate.repo.balance(scope), scope, int(account.get("alert_threshold", 10)))

    @router.get("/accounts", summary="Billing staff: every issuer's balance (running totals) with its RFC and name")
    async def accounts(principal: Who) -> dict[str, Any]:
        require_billing_staff(principal)
        rows = []
        for account in await gate.repo.all_accounts():
            contact = await payments.repo.contact(account["_id"]) or {}
            totals = {f: int(account.get(f, 0)) for f in ("available", "reserved", "consumed", "expired", "granted")}
            rows.append({"issuer_id": account["_id"], "rfc": contact.get("rfc"), "legal_name": contact.get("legal_name"), **totals,
                         "alert_threshold": int(account.get("alert_threshold", 10))})
        return {"data": sorted(rows, key=lambda r: (r["legal_name"] or "", r["issuer_id"]))}

    @router.get("/packages")
    async def packages(principal: Who, issuer_id: str | None = None) -> dict[str, Any]:
        scope = issuer_scope(principal, issuer_id)
        return {"data": [_clean(p) for p in await gate.repo.list_packages(scope or "")]}

    @router.get("/ledger")
    async def ledger(principal: Who, issuer_id: str | None = None, limit: int = Query(default=200, ge=1, le=1000)) -> dict[str, Any]:
        scope = issuer_scope(principal, issuer_id)
        return {"data": [_clean(e) for e in await gate.repo.entries(scope or "", limit)]}

    @router.put("/alerts")
    async def alerts(body: AlertsIn, principal: Issuer) -> dict[str, Any]:
        assert principal.issuer_id
        return await gate.set_alerts(principal.issuer_id, body.threshold, body.emails)

    @router.post("/expiry/run")
    async def run_expiry(principal: Who) -> dict[str, Any]:
        require_billing_staff(principal)
        return {"expired": await gate.expire_due()}

    @router.get("/books/check")
    async def check_books(principal: Who) -> dict[str, Any]:
        """Operators: recompute every balance from the ledger and report mismatches."""
        require_billing_staff(principal)
        return await gate.check_books()

    # ------------------------------------------------------------------ products and payment references

    @router.get("/products")
    async def products(_principal: Who) -> dict[str, Any]:
        return {"data": await payments.products()}

    @router.put("/products/{code}")
    async def put_product(code: str, body: ProductIn, principal: Who) -> dict[str, Any]:
        require_billing_staff(principal)
        doc = await payments.put_product(Product(code=code.upper(), description=body.description, price=body.price, stamps=body.stamps, months=body.months, active=body.active), actor_of(principal))
        return _clean(doc)

    @router.post("/payment-references", status_code=201)
    async def create_reference(body: ReferenceIn, principal: Who) -> dict[str, Any]:
        if principal.kind == "issuer":
            assert principal.issuer_id
            issuer_id = principal.issuer_id
        else:
            require_billing_staff(principal)
            if not body.issuer_id:
                raise ApiError(422, "invalid_request", "issuer_id: Campo obligatorio para el personal de cobranza.")
            issuer_id = body.issuer_id
        return await payments.create_reference(issuer_id, [(i.code.upper(), i.quantity) for i in body.items], actor_of(principal), check_issuer=principal.kind != "issuer")

    @router.get("/payment-references")
    async def list_references(principal: Who, status: Literal["pending", "paid"] | None = None, issuer_id: str | None = None) -> dict[str, Any]:
        return {"data": await payments.list_references(issuer_scope(principal, issuer_id), status)}

    @router.get("/payment-references/{reference}")
    async def get_reference(reference: str, principal: Who) -> dict[str, Any]:
        return await payments.reference_json(await payments.reference(reference, issuer_scope(principal, None)))

    @router.get("/payment-references/{reference}/pdf")
    async def reference_pdf(reference: str, principal: Who) -> Response:
        doc = await payments.reference(reference, issuer_scope(principal, None))
        pdf = await payments.reference_pdf(doc)
        return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="constancia-{reference}.pdf"'})

    # ------------------------------------------------------------------ reconciliation (billing staff)

    @router.post("/statements")
    async def upload_statement(
        request: Request, principal: Who,
        date_column: str | None = None, description_column: str | None = None, reference_column: str | None = None, amount_column: str | None = None,
    ) -> dict[str, Any]:
        """A bank statement CSV: multipart field ``file``, or the CSV as the raw body. The column
        names are configurable per upload (query) or per platform (TIMBRA_BILLING_CSV_COLUMNS)."""
        require_billing_staff(principal)
        filename = "statement.csv"
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "invalid_request", "file: Campo obligatorio (el CSV del estado de cuenta).")
            data = await upload.read()
            filename = upload.filename or filename
        else:
            data = await request.body()
        if not data.strip():
            raise ApiError(422, "invalid_request", "El estado de cuenta está vacío.")
        columns = {k: v for k, v in {"date": date_column, "description": description_column, "reference": reference_column, "amount": amount_column}.items() if v}
        return await payments.import_statement(data, filename=filename, actor=actor_of(principal), columns=columns)

    @router.get("/statements")
    async def list_statements(principal: Who) -> dict[str, Any]:
        require_billing_staff(principal)
        return {"data": [_clean(d) for d in await payments.repo.list_imports()]}

    @router.get("/exceptions")
    async def list_exceptions(principal: Who, status: Literal["open", "resolved"] | None = None) -> dict[str, Any]:
        require_billing_staff(principal)
        return {"data": [_clean(e) for e in await payments.exceptions(status)]}

    @router.post("/exceptions/{exception_id}/resolve")
    async def resolve(exception_id: str, body: ResolveIn, principal: Who) -> dict[str, Any]:
        require_billing_staff(principal)
        doc = await payments.resolve(exception_id, action=body.action, note=body.note, actor=actor_of(principal), reference=body.reference)
        return _clean(doc) | {"audit": [_clean(a) for a in await payments.repo.audit_for(exception_id)]}

    @router.get("/reconciliation/report")
    async def report(principal: Who, start: Annotated[date, Query(alias="from")], end: Annotated[date, Query(alias="to")]) -> dict[str, Any]:
        require_billing_staff(principal)
        if end < start:
            raise ApiError(422, "invalid_request", "to: debe ser igual o posterior a from.")
        return await payments.report(start, end)

    return router
