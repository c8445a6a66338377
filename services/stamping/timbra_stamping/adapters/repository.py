"""MongoDB repositories of the stamping service.

- ``stamps``: the stamped CFDIs, the legal documents, kept byte-exact (BSON binary) as the PAC
  returned them, one per invoice (``_id`` = invoice id) and one per UUID.
- ``stamp_jobs``: one per funded invoice: the delayed-retry state (attempts, next attempt,
  deadline, lease) and, after the end, its outcome. It is the record the status endpoint, the
  scheduler and the dead-letter command read.
"""

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, InsertOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from timbra_shared.mongo import Transaction

PENDING, STAMPED, FAILED, DEAD = "pending", "stamped", "failed", "dead_letter"
HISTORY = 20  # attempts remembered per job
CLAIM_TRIES = 4  # claims lost to another instance before waiting for the next poll


class StampRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.stamps = db.stamps

    async def ensure_indexes(self) -> None:
        await self.stamps.create_indexes([IndexModel([("uuid", ASCENDING)], unique=True), IndexModel([("issuer_id", ASCENDING)])])

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.stamps.find_one(query)

    def add(self, doc: dict[str, Any], tx: Transaction) -> None:
        """Stage the stamp in ``tx`` (written with the group's others at commit)."""
        tx.write(self.stamps, InsertOne(doc))


class JobRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.jobs = db.stamp_jobs

    async def ensure_indexes(self) -> None:
        await self.jobs.create_indexes([
            IndexModel([("state", ASCENDING), ("next_attempt_at", ASCENDING)]),
            IndexModel([("issuer_id", ASCENDING)]),
        ])

    async def create(self, doc: dict[str, Any]) -> bool:
        """Insert a new job; False if the invoice already has one (a redelivery)."""
        try:
            await self.jobs.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    async def create_many(self, docs: list[dict[str, Any]]) -> set[str]:
        """Insert new jobs in one write; returns the ids inserted (the others already had a job)."""
        if not docs:
            return set()
        try:
            await self.jobs.insert_many(docs, ordered=False)
            return {d["_id"] for d in docs}
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            refused = {e["index"] for e in errors}
            return {d["_id"] for index, d in enumerate(docs) if index not in refused}

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.jobs.find_one(query)

    async def claim_due(self, owner: str, now: datetime, lease_s: float) -> dict[str, Any] | None:
        """Take one due job under a lease, so that several instances never work on it at once."""
        return await self.jobs.find_one_and_update(
            {"state": PENDING, "next_attempt_at": {"$lte": now}, "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
            {"$set": {"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_s)}},
            sort=[("next_attempt_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )

    async def claim_due_many(self, owner: str, now: datetime, lease_s: float, limit: int) -> list[dict[str, Any]]:
        """Take up to ``limit`` due jobs under a lease in three round trips, oldest due first (a
        backlog of thousands is claimed at the pace of the workers, not one round trip per job).
        Another instance may take the same oldest jobs between the find and the update; then the
        next due ones are tried, so that an instance whose claim lost the race does not sit idle
        until its next poll while jobs wait."""
        due = {"state": PENDING, "next_attempt_at": {"$lte": now}, "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]}
        until = now + timedelta(seconds=lease_s)
        for _ in range(CLAIM_TRIES):
            ids = [d["_id"] for d in await self.jobs.find(due, projection={"_id": 1}).sort("next_attempt_at", ASCENDING).limit(limit).to_list(None)]
            if not ids:
                return []
            await self.jobs.update_many({**due, "_id": {"$in": ids}}, {"$set": {"lease_owner": owner, "lease_until": until}})
            claimed = await self.jobs.find({"_id": {"$in": ids}, "lease_owner": owner, "lease_until": until}).sort("next_attempt_at", ASCENDING).to_list(None)
            if claimed:
                return claimed
        return []

    async def release(self, invoice_ids: list[str], owner: str) -> None:
        """Give back the leases of jobs this instance holds but will not work on now."""
        await self.jobs.update_many({"_id": {"$in": invoice_ids}, "state": PENDING, "lease_owner": owner}, {"$set": {"lease_owner": None, "lease_until": None}})

    async def reschedule(self, invoice_id: str, owner: str, changes: dict[str, Any], history: dict[str, Any] | None = None) -> None:
        """Release the lease with the job's next attempt (only the lease holder may)."""
        update: dict[str, Any] = {"$set": {**changes, "lease_owner": None, "lease_until": None}}
        if history is not None:
            update["$push"] = {"history": {"$each": [history], "$slice": -HISTORY}}
        await self.jobs.update_one({"_id": invoice_id, "state": PENDING, "lease_owner": owner}, update)

    def finish(self, invoice_id: str, state: str, changes: dict[str, Any], history: dict[str, Any] | None, tx: Transaction) -> None:
        """Stage the job's end in ``tx``, with its outcome (written at commit)."""
        update: dict[str, Any] = {"$set": {**changes, "state": state, "lease_owner": None, "lease_until": None}, "$unset": {"event.xml": ""} if state != DEAD else {}}
        if not update["$unset"]:
            del update["$unset"]
        if history is not None:
            update["$push"] = {"history": {"$each": [history], "$slice": -HISTORY}}
        tx.write(self.jobs, UpdateOne({"_id": invoice_id}, update))

    async def wake(self, pac: str, now: datetime) -> int:
        """The PAC is healthy again: every pending job of it is due now."""
        result = await self.jobs.update_many({"state": PENDING, "pac": pac, "next_attempt_at": {"$gt": now}}, {"$set": {"next_attempt_at": now}})
        return result.modified_count

    async def expired_dead(self, before: datetime, limit: int = 100) -> list[dict[str, Any]]:
        return await self.jobs.find({"state": DEAD, "fail_at": {"$lte": before}}).limit(limit).to_list()

    async def list_dead(self, limit: int = 1000) -> list[dict[str, Any]]:
        return await self.jobs.find({"state": DEAD}, projection={"event": 0}).sort("updated_at", ASCENDING).limit(limit).to_list()

    async def replay(self, invoice_ids: list[str] | None, now: datetime) -> int:
        """Dead letters back to pending, due now, with a fresh retry budget."""
        query: dict[str, Any] = {"state": DEAD}
        if invoice_ids is not None:
            query["_id"] = {"$in": invoice_ids}
        result = await self.jobs.update_many(query, {
            "$set": {"state": PENDING, "attempts": 0, "next_attempt_at": now, "lease_owner": None, "lease_until": None, "updated_at": now},
            "$inc": {"replays": 1},
            "$push": {"history": {"$each": [{"at": now, "outcome": "replayed"}], "$slice": -HISTORY}},
        })
        return result.modified_count

    async def count_by_state(self) -> dict[str, int]:
        rows = await (await self.jobs.aggregate([{"$match": {"state": {"$in": [PENDING, DEAD]}}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}])).to_list()
        return {row["_id"]: row["n"] for row in rows}
