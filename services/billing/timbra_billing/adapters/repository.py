"""MongoDB repositories of billing: accounts (running totals), credit packages (running totals per
package), the append-only ledger, and reservations."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from timbra_billing.domain.ledger import BALANCE_FIELDS, Entry, effect, guard_for
from timbra_shared.ids import new_id, utcnow


class LedgerConflict(RuntimeError):
    """A move would drive a running total negative: the books and the request disagree."""


@dataclass(frozen=True)
class LedgerLine:
    """One ledger entry to record (``CreditRepository.record_many``)."""

    issuer_id: str
    entry: Entry
    quantity: int
    package_id: str
    reason: str
    actor: str
    invoice_id: str | None = None
    reference: str | None = None
    expires_at: datetime | None = None


def ledger_entry(line: LedgerLine) -> dict[str, Any]:
    return {
        "_id": new_id("led_"), "issuer_id": line.issuer_id, "entry": line.entry.value, "quantity": line.quantity,
        "package_id": line.package_id, "reason": line.reason, "actor": line.actor, "invoice_id": line.invoice_id,
        "reference": line.reference, "expires_at": line.expires_at, "at": utcnow(),
    }


async def _apply_guarded(collection: AsyncCollection, session: AsyncClientSession, targets: list[tuple[dict[str, Any], dict[str, int]]]) -> None:
    """``$inc`` each target's moves, provided no total would go negative; else ``LedgerConflict``."""
    if not targets:
        return
    ops = [UpdateOne({**where, **{name: {"$gte": -delta} for name, delta in moves.items() if delta < 0}}, {"$inc": moves}) for where, moves in targets]
    result = await collection.bulk_write(ops, ordered=True, session=session)
    if result.matched_count != len(ops):
        raise LedgerConflict(f"{collection.name}: {len(ops) - result.matched_count} of {len(ops)} cannot take these moves")


class CreditRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.accounts = db.accounts
        self.ledger = db.ledger
        self.reservations = db.reservations
        self.packages = db.packages

    async def ensure_indexes(self) -> None:
        await self.ledger.create_indexes([
            IndexModel([("issuer_id", ASCENDING), ("at", ASCENDING)]),
            IndexModel([("invoice_id", ASCENDING)], sparse=True),
            IndexModel([("package_id", ASCENDING)]),
            IndexModel([("entry", ASCENDING), ("at", ASCENDING)]),
        ])
        await self.reservations.create_indexes([IndexModel([("issuer_id", ASCENDING), ("state", ASCENDING)])])
        await self.packages.create_indexes([
            IndexModel([("issuer_id", ASCENDING), ("expires_at", ASCENDING)]),
            IndexModel([("expires_at", ASCENDING), ("available", ASCENDING)]),
        ])

    # ------------------------------------------------------------------ reads

    async def balance(self, issuer_id: str, session: AsyncClientSession | None = None) -> dict[str, int]:
        doc = await self.accounts.find_one({"_id": issuer_id}, session=session) or {}
        return {f: int(doc.get(f, 0)) for f in BALANCE_FIELDS}

    async def account(self, issuer_id: str, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.accounts.find_one({"_id": issuer_id}, session=session)

    async def list_packages(self, issuer_id: str) -> list[dict[str, Any]]:
        return await self.packages.find({"issuer_id": issuer_id}).sort([("expires_at", ASCENDING), ("_id", ASCENDING)]).to_list(None)

    async def package(self, package_id: str, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.packages.find_one({"_id": package_id}, session=session)

    async def entries(self, issuer_id: str, limit: int = 200) -> list[dict[str, Any]]:
        return await self.ledger.find({"issuer_id": issuer_id}).sort([("at", -1), ("_id", -1)]).limit(limit).to_list(None)

    async def first_package(self, issuer_id: str, now: datetime, session: AsyncClientSession, field: str = "available") -> dict[str, Any] | None:
        """FIFO: the unexpired package with credit that expires first."""
        return await self.packages.find_one(
            {"issuer_id": issuer_id, field: {"$gte": 1}, "expires_at": {"$gt": now}},
            sort=[("expires_at", ASCENDING), ("_id", ASCENDING)],
            session=session,
        )

    async def due_packages(self, now: datetime, limit: int = 500) -> list[dict[str, Any]]:
        return await self.packages.find({"expires_at": {"$lte": now}, "available": {"$gt": 0}}, projection={"_id": 1, "issuer_id": 1}).limit(limit).to_list(None)

    async def ledger_sums(self) -> dict[str, dict[str, int]]:
        """Per issuer, the quantity of each kind of entry, from the ledger alone."""
        out: dict[str, dict[str, int]] = {}
        async for row in await self.ledger.aggregate([{"$group": {"_id": {"issuer_id": "$issuer_id", "entry": "$entry"}, "q": {"$sum": "$quantity"}}}]):
            out.setdefault(row["_id"]["issuer_id"], {})[row["_id"]["entry"]] = int(row["q"])
        return out

    async def package_sums(self) -> dict[str, dict[str, int]]:
        group: dict[str, Any] = {"_id": "$issuer_id", **{f: {"$sum": f"${f}"} for f in BALANCE_FIELDS}}
        return {row["_id"]: {f: int(row[f]) for f in BALANCE_FIELDS} async for row in await self.packages.aggregate([{"$group": group}])}

    async def credit_levels(self, default_threshold: int) -> dict[str, int]:
        """How many funded accounts are below their alert threshold ("low") and at zero ("empty"):
        one pass over the accounts (one document per issuer), for the gauges, not per invoice."""
        pipeline = [
            {"$match": {"granted": {"$gt": 0}}},
            {"$group": {
                "_id": None,
                "low": {"$sum": {"$cond": [{"$lt": ["$available", {"$ifNull": ["$alert_threshold", default_threshold]}]}, 1, 0]}},
                "empty": {"$sum": {"$cond": [{"$lte": ["$available", 0]}, 1, 0]}},
            }},
        ]
        rows = await (await self.accounts.aggregate(pipeline)).to_list(None)
        return {"low": int(rows[0]["low"]), "empty": int(rows[0]["empty"])} if rows else {"low": 0, "empty": 0}

    async def all_accounts(self) -> list[dict[str, Any]]:
        return await self.accounts.find({}).to_list(None)

    # ------------------------------------------------------------------ writes (always in a transaction)

    async def insert_package(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.packages.insert_one({**dict.fromkeys(BALANCE_FIELDS, 0), **doc}, session=session)

    async def record(
        self,
        session: AsyncClientSession,
        issuer_id: str,
        entry: Entry,
        quantity: int,
        *,
        package_id: str,
        reason: str,
        actor: str,
        invoice_id: str | None = None,
        ref: str | None = None,
        expires_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Append a ledger entry and move the package's and the account's running totals.
        Returns the account after the move. Raises ``LedgerConflict`` if a total would go negative."""
        moves = effect(entry, quantity)
        guard = {name: {"$gte": need} for name, need in guard_for(entry, quantity).items()}
        package = await self.packages.find_one_and_update({"_id": package_id, "issuer_id": issuer_id, **guard}, {"$inc": moves}, session=session)
        if package is None:
            raise LedgerConflict(f"package {package_id} cannot take {entry.value} {quantity}")
        account = await self.accounts.find_one_and_update(
            {"_id": issuer_id, **guard},
            {"$inc": moves, "$setOnInsert": {"created_at": utcnow()}},
            upsert=not guard,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if account is None:
            raise LedgerConflict(f"account {issuer_id} cannot take {entry.value} {quantity}")
        await self.ledger.insert_one(ledger_entry(LedgerLine(issuer_id, entry, quantity, package_id, reason, actor, invoice_id, ref, expires_at)), session=session)
        return account

    async def record_many(self, session: AsyncClientSession, lines: Sequence[LedgerLine]) -> dict[str, dict[str, Any]]:
        """``record`` for many entries in a handful of round trips: the moves are summed per package
        and per account (one guarded ``$inc`` each, in two bulk writes) and the entries inserted
        together. Only for moves on existing accounts that take something (reserve, commit,
        release…): a guard that does not hold raises ``LedgerConflict`` and the transaction aborts.
        Returns the accounts after the moves, by issuer."""
        per_package: dict[tuple[str, str], dict[str, int]] = {}
        per_account: dict[str, dict[str, int]] = {}
        for line in lines:
            for name, delta in effect(line.entry, line.quantity).items():
                for totals in (per_package.setdefault((line.package_id, line.issuer_id), {}), per_account.setdefault(line.issuer_id, {})):
                    totals[name] = totals.get(name, 0) + delta
        await _apply_guarded(self.packages, session, [({"_id": package_id, "issuer_id": issuer_id}, moves) for (package_id, issuer_id), moves in per_package.items()])
        await _apply_guarded(self.accounts, session, [({"_id": issuer_id}, moves) for issuer_id, moves in per_account.items()])
        if lines:
            await self.ledger.insert_many([ledger_entry(line) for line in lines], session=session)
        return {doc["_id"]: doc for doc in await self.accounts.find({"_id": {"$in": list(per_account)}}, session=session).to_list(None)}

    async def bump_generation(self, issuer_id: str, session: AsyncClientSession) -> None:
        """New credit re-arms the low-balance alerts."""
        await self.accounts.update_one({"_id": issuer_id}, {"$inc": {"alert_generation": 1}}, session=session)

    async def mark_alert(self, issuer_id: str, kind: str, generation: int, session: AsyncClientSession) -> bool:
        """Claim the alert ``kind`` for this generation; False if it was already sent."""
        result = await self.accounts.update_one({"_id": issuer_id, f"alerted.{kind}": {"$ne": generation}}, {"$set": {f"alerted.{kind}": generation}}, session=session)
        return result.modified_count == 1

    async def set_alerts(self, issuer_id: str, threshold: int, emails: list[str] | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"alert_threshold": threshold}
        if emails is not None:
            fields["alert_emails"] = emails
        return await self.accounts.find_one_and_update(
            {"_id": issuer_id}, {"$set": fields, "$setOnInsert": {**dict.fromkeys(BALANCE_FIELDS, 0), "created_at": utcnow()}},
            upsert=True, return_document=ReturnDocument.AFTER,
        )

    async def mark_package_expired(self, package_id: str, session: AsyncClientSession) -> None:
        await self.packages.update_one({"_id": package_id}, {"$set": {"expired_at": utcnow()}}, session=session)

    async def reservations_of(self, invoice_ids: Sequence[str], session: AsyncClientSession) -> set[str]:
        """Which of these invoices already hold a reservation (in any state)."""
        return {doc["_id"] for doc in await self.reservations.find({"_id": {"$in": list(invoice_ids)}}, projection={"_id": 1}, session=session).to_list(None)}

    async def insert_reservations(self, docs: Sequence[dict[str, Any]], session: AsyncClientSession) -> None:
        if docs:
            await self.reservations.insert_many(list(docs), session=session)

    async def usable_packages(self, issuer_ids: Sequence[str], now: datetime, session: AsyncClientSession) -> list[dict[str, Any]]:
        """Every unexpired package with credit of these issuers, in FIFO order (``first_package``'s order)."""
        return await self.packages.find(
            {"issuer_id": {"$in": list(issuer_ids)}, "available": {"$gte": 1}, "expires_at": {"$gt": now}},
            projection={"_id": 1, "issuer_id": 1, "available": 1},
            sort=[("expires_at", ASCENDING), ("_id", ASCENDING)],
            session=session,
        ).to_list(None)

    async def settle(self, invoice_id: str, state: str, session: AsyncClientSession) -> dict[str, Any] | None:
        return await self.reservations.find_one_and_update(
            {"_id": invoice_id, "state": "reserved"},
            {"$set": {"state": state, "settled_at": utcnow()}},
            session=session,
        )

    async def settle_many(self, invoice_ids: Sequence[str], state: str, session: AsyncClientSession) -> list[dict[str, Any]]:
        """``settle`` for many: the reservations among these still ``reserved`` (as they were), now ``state``."""
        where = {"_id": {"$in": list(invoice_ids)}, "state": "reserved"}
        reserved = await self.reservations.find(where, session=session).to_list(None)
        if reserved:
            await self.reservations.update_many({"_id": {"$in": [r["_id"] for r in reserved]}, "state": "reserved"}, {"$set": {"state": state, "settled_at": utcnow()}}, session=session)
        return reserved
