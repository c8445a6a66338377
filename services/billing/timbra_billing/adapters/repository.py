"""MongoDB repositories of billing: accounts (running totals), the ledger, reservations."""

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from timbra_billing.domain.ledger import BALANCE_FIELDS, Entry, effect
from timbra_shared.ids import new_id, utcnow


class CreditRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.accounts = db.accounts
        self.ledger = db.ledger
        self.reservations = db.reservations

    async def ensure_indexes(self) -> None:
        await self.ledger.create_indexes([IndexModel([("issuer_id", ASCENDING), ("at", ASCENDING)]), IndexModel([("invoice_id", ASCENDING)], sparse=True)])
        await self.reservations.create_indexes([IndexModel([("issuer_id", ASCENDING), ("state", ASCENDING)])])

    async def balance(self, issuer_id: str) -> dict[str, int]:
        doc = await self.accounts.find_one({"_id": issuer_id}) or {}
        return {f: int(doc.get(f, 0)) for f in BALANCE_FIELDS}

    async def record(
        self,
        session: AsyncClientSession,
        issuer_id: str,
        entry: Entry,
        quantity: int,
        *,
        reason: str,
        actor: str,
        invoice_id: str | None = None,
        expires_at: datetime | None = None,
        guard: dict[str, Any] | None = None,
    ) -> bool:
        """Append a ledger entry and move the running totals; False if ``guard`` did not match."""
        account = await self.accounts.find_one_and_update(
            {"_id": issuer_id, **(guard or {})},
            {"$inc": effect(entry, quantity), "$setOnInsert": {"created_at": utcnow()}},
            upsert=guard is None,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if account is None:
            return False
        await self.ledger.insert_one({
            "_id": new_id("led_"),
            "issuer_id": issuer_id,
            "entry": entry.value,
            "quantity": quantity,
            "reason": reason,
            "actor": actor,
            "invoice_id": invoice_id,
            "expires_at": expires_at,
            "at": utcnow(),
        }, session=session)
        return True

    async def reservation(self, invoice_id: str, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.reservations.find_one({"_id": invoice_id}, session=session)

    async def insert_reservation(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.reservations.insert_one(doc, session=session)

    async def settle(self, invoice_id: str, state: str, session: AsyncClientSession) -> dict[str, Any] | None:
        return await self.reservations.find_one_and_update(
            {"_id": invoice_id, "state": "reserved"},
            {"$set": {"state": state, "settled_at": utcnow()}},
            session=session,
        )
