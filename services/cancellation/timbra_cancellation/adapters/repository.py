"""MongoDB repositories of the cancellation service.

- ``cancellable``: its projection of the invoices (the request from ``invoice.requested``; type,
  total, parties, dates and the UUIDs it relates to from ``invoice.stamped``), ``_id`` = invoice id.
- ``cancellations``: one per invoice: the current request (motive, substitution, attempt), its
  state, SAT's last answer, the acuse, and the scheduling fields of the leased scheduler
  (``phase`` request | poll, ``next_attempt_at``, ``lease_owner``, ``lease_until``).
- ``issuers``: the issuer's email and name (from ``issuer.profile``) for notifications.
"""

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from timbra_cancellation.domain.rules import STAMPED, State

HISTORY = 30


class InvoiceProjection:
    def __init__(self, db: AsyncDatabase) -> None:
        self.docs = db.cancellable

    async def ensure_indexes(self) -> None:
        await self.docs.create_indexes([
            IndexModel([("uuid", ASCENDING)], sparse=True),
            IndexModel([("issuer_id", ASCENDING), ("related.uuid", ASCENDING)]),
        ])

    async def get(self, invoice_id: str, issuer_id: str | None = None, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.docs.find_one(query, session=session)

    async def find(self, issuer_id: str, ref: str) -> dict[str, Any] | None:
        """By invoice id or UUID, within the issuer."""
        return await self.docs.find_one({"issuer_id": issuer_id, "$or": [{"_id": ref}, {"uuid": ref.upper()}]})

    async def save_requests(self, requests: list[tuple[str, str, dict[str, Any]]]) -> None:
        """``(invoice_id, issuer_id, request)`` of a consumed batch, in one round trip."""
        if requests:
            await self.docs.bulk_write([UpdateOne({"_id": i}, {"$setOnInsert": {"issuer_id": issuer, "status": None}, "$set": {"request": r}}, upsert=True)
                                        for i, issuer, r in requests], ordered=False)

    async def save_stamped(self, invoice_id: str, fields: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.docs.update_one({"_id": invoice_id}, {"$set": {**fields, "status": STAMPED}}, upsert=True, session=session)

    async def set_status(self, invoice_id: str, status: str, session: AsyncClientSession | None = None) -> None:
        await self.docs.update_one({"_id": invoice_id}, {"$set": {"status": status}}, session=session)

    async def related_in_force(self, issuer_id: str, uuid: str) -> list[dict[str, Any]]:
        """This issuer's invoices in force that point to ``uuid`` (except substitutions, 04)."""
        docs = await self.docs.find(
            {"issuer_id": issuer_id, "status": STAMPED, "related": {"$elemMatch": {"uuid": uuid.upper(), "tipo": {"$ne": "04"}}}},
            projection={"uuid": 1, "related": 1, "serie": 1, "folio": 1},
        ).to_list(100)
        return [
            {"invoice_id": d["_id"], "uuid": d["uuid"], "serie": d.get("serie"), "folio": d.get("folio"),
             "tipo": next(r["tipo"] for r in d["related"] if r["uuid"] == uuid.upper() and r["tipo"] != "04")}
            for d in docs
        ]


class CancellationRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.docs = db.cancellations

    async def ensure_indexes(self) -> None:
        await self.docs.create_indexes([
            IndexModel([("phase", ASCENDING), ("next_attempt_at", ASCENDING)]),
            IndexModel([("issuer_id", ASCENDING)]),
            IndexModel([("substitution_invoice_id", ASCENDING)], sparse=True),
            IndexModel([("state", ASCENDING)]),
        ])

    async def get(self, invoice_id: str, issuer_id: str | None = None, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.docs.find_one(query, session=session)

    async def by_substitute(self, substitute_id: str) -> dict[str, Any] | None:
        return await self.docs.find_one({"substitution_invoice_id": substitute_id, "state": State.AWAITING_SUBSTITUTE})

    async def by_substitutes(self, substitute_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The cancellations awaiting any of these substitutes, by substitute."""
        if not substitute_ids:
            return {}
        return {doc["substitution_invoice_id"]: doc async for doc in self.docs.find({"substitution_invoice_id": {"$in": substitute_ids}, "state": State.AWAITING_SUBSTITUTE})}

    async def put(self, doc: dict[str, Any], *, expected_attempt: int | None, session: AsyncClientSession) -> bool:
        """Insert a new cancellation, or replace the previous (finished) attempt of this invoice."""
        if expected_attempt is None:
            await self.docs.insert_one(doc, session=session)
            return True
        result = await self.docs.replace_one({"_id": doc["_id"], "attempt": expected_attempt}, doc, session=session)
        return result.matched_count == 1

    async def claim_due(self, owner: str, now: datetime, lease_s: float) -> dict[str, Any] | None:
        return await self.docs.find_one_and_update(
            {"phase": {"$in": ["request", "poll"]}, "next_attempt_at": {"$lte": now}, "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
            {"$set": {"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_s)}},
            sort=[("next_attempt_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )

    async def update(self, invoice_id: str, owner: str | None, attempt: int, changes: dict[str, Any], *, history: dict[str, Any] | None = None,
                     release: bool = True, session: AsyncClientSession | None = None) -> bool:
        """Change the job (only its lease holder may, and only for this attempt)."""
        query: dict[str, Any] = {"_id": invoice_id, "attempt": attempt}
        if owner is not None:
            query["lease_owner"] = owner
        update: dict[str, Any] = {"$set": {**changes, **({"lease_owner": None, "lease_until": None} if release else {})}}
        if history is not None:
            update["$push"] = {"history": {"$each": [history], "$slice": -HISTORY}}
        result = await self.docs.update_one(query, update, session=session)
        return result.matched_count == 1

    async def escalated(self, limit: int = 1000) -> list[dict[str, Any]]:
        return await self.docs.find({"state": State.ESCALATED}, projection={"acuse": 0}).sort("updated_at", ASCENDING).limit(limit).to_list()

    async def resume(self, invoice_ids: list[str] | None, now: datetime) -> int:
        """Escalated cancellations back to polling (an operator checked SAT)."""
        query: dict[str, Any] = {"state": State.ESCALATED}
        if invoice_ids is not None:
            query["_id"] = {"$in": invoice_ids}
        result = await self.docs.update_many(query, {
            "$set": {"phase": "poll", "next_attempt_at": now, "polls": 0, "poll_started_at": now, "lease_owner": None, "lease_until": None, "updated_at": now},
            "$push": {"history": {"$each": [{"at": now, "event": "resumed"}], "$slice": -HISTORY}},
            "$inc": {"resumes": 1},
        })
        return result.modified_count

    async def count_by_state(self) -> dict[str, int]:
        rows = await (await self.docs.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}])).to_list()
        return {row["_id"]: row["n"] for row in rows}


class IssuerDirectory:
    def __init__(self, db: AsyncDatabase) -> None:
        self.docs = db.issuers

    async def upsert(self, profile: dict[str, Any]) -> None:
        await self.docs.update_one(
            {"_id": profile["issuer_id"], "$or": [{"version": {"$lt": profile["version"]}}, {"version": {"$exists": False}}]},
            {"$set": {"version": profile["version"], "email": profile.get("email"), "legal_name": profile.get("legal_name"), "rfc": profile.get("rfc")}},
            upsert=False,
        )
        await self.docs.update_one({"_id": profile["issuer_id"]}, {"$setOnInsert": {"version": profile["version"], "email": profile.get("email"),
                                                                                   "legal_name": profile.get("legal_name"), "rfc": profile.get("rfc")}}, upsert=True)

    async def get(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.docs.find_one({"_id": issuer_id})
