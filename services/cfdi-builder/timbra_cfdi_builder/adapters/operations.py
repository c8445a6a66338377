"""Adapters of the operator console's back end: the dead-letter store (``dead_letters``), the
cross-tenant queries on the invoice read model, and the broker's offsets for consumer lag."""

import asyncio
import re
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from timbra_cfdi_builder.adapters.repository import LIST_PROJECTION
from timbra_cfdi_builder.domain.invoice import FINAL, IN_FLIGHT
from timbra_cfdi_builder.domain.operations import Partition


class DeadLetterRepository:
    """``dead_letters``: one document per message on ``timbra.dead_letter`` (``_id`` = its
    ``event_id``), with what operators did about it (``replays``, ``discarded``)."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.letters = db.dead_letters

    async def ensure_indexes(self) -> None:
        await self.letters.create_indexes([
            IndexModel([("status", ASCENDING), ("received_at", DESCENDING)]),
            IndexModel([("invoice_id", ASCENDING)], sparse=True),
            IndexModel([("received_at", DESCENDING)]),
            IndexModel([("original_topic", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)]),
        ])

    async def insert(self, doc: dict[str, Any]) -> bool:
        """False when this dead letter is stored already (a redelivery)."""
        try:
            await self.letters.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def get(self, letter_id: str) -> dict[str, Any] | None:
        return await self.letters.find_one({"_id": letter_id})

    async def page(self, *, status: str | None, invoice_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if invoice_id:
            query["invoice_id"] = invoice_id
        return await self.letters.find(query).sort("received_at", DESCENDING).limit(limit).to_list(None)

    async def count(self, status: str | None = None, since: datetime | None = None) -> int:
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if since:
            query["received_at"] = {"$gte": since}
        return await self.letters.count_documents(query)

    async def add_replay(self, letter_id: str, replay: dict[str, Any]) -> dict[str, Any] | None:
        return await self.letters.find_one_and_update(
            {"_id": letter_id, "status": {"$ne": "discarded"}},
            {"$set": {"status": "replayed", "replayed_at": replay["at"]}, "$push": {"replays": replay}},
            return_document=ReturnDocument.AFTER,
        )

    async def set_replay_outcome(self, letter_id: str, replay_id: str, outcome: str, error: str | None = None) -> None:
        update: dict[str, Any] = {"replays.$.outcome": outcome}
        if error:
            update["replays.$.error"] = error
        if outcome == "failed":
            update["status"] = "open"
        await self.letters.update_one({"_id": letter_id, "replays.id": replay_id}, {"$set": update})

    async def discard(self, letter_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
        return await self.letters.find_one_and_update(
            {"_id": letter_id, "status": "open"},
            {"$set": {"status": "discarded", "discarded": record}},
            return_document=ReturnDocument.AFTER,
        )

    async def close_siblings(self, letter: dict[str, Any], status: str, fields: dict[str, Any]) -> int:
        """The other open dead letters of the same record (each consumer group that could not take
        it wrote one) take the outcome of ``letter``; returns how many."""
        if letter.get("partition") is None or letter.get("offset") is None:
            return 0
        result = await self.letters.update_many(
            {"original_topic": letter["original_topic"], "partition": letter["partition"], "offset": letter["offset"], "_id": {"$ne": letter["_id"]}, "status": "open"},
            {"$set": {"status": status, "sibling_of": letter["_id"], **fields}},
        )
        return result.modified_count

    async def link_failure(self, original_id: str, new_id: str) -> None:
        """A replay failed again: the original points at the new dead letter."""
        await self.letters.update_one({"_id": original_id}, {"$addToSet": {"failed_again": new_id}})


class PipelineQueries:
    """Cross-tenant reads of the invoice read model and the issuer projection (staff only)."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.invoices = db.invoices
        self.issuers = db.issuers

    async def ensure_indexes(self) -> None:
        await self.invoices.create_indexes([
            IndexModel([("customer_rfc", ASCENDING), ("created_at", DESCENDING)], name="ops_customer_rfc"),
            IndexModel([("updated_at", DESCENDING)], name="ops_updated"),
        ])
        await self.issuers.create_indexes([IndexModel([("rfc", ASCENDING)], name="ops_rfc")])

    async def count_by_status(self, since: datetime | None = None) -> dict[str, int]:
        pipeline: list[dict[str, Any]] = [{"$match": {"created_at": {"$gte": since}}}] if since else []
        pipeline.append({"$group": {"_id": "$status", "n": {"$sum": 1}}})
        rows = await (await self.invoices.aggregate(pipeline)).to_list(None)
        return {row["_id"]: row["n"] for row in rows}

    async def stuck_by_status(self, older_than: datetime) -> dict[str, int]:
        rows = await (await self.invoices.aggregate([
            {"$match": {"status": {"$in": IN_FLIGHT}, "updated_at": {"$lt": older_than}}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ])).to_list(None)
        return {row["_id"]: row["n"] for row in rows}

    async def finished_since(self, since: datetime) -> dict[str, int]:
        """Invoices whose last change (a final status) falls in the window, by status."""
        rows = await (await self.invoices.aggregate([
            {"$match": {"updated_at": {"$gte": since}, "status": {"$in": [s.value for s in FINAL]}}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ])).to_list(None)
        return {row["_id"]: row["n"] for row in rows}

    async def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        return await self.invoices.find_one({"_id": invoice_id}, projection={"xml": 0})

    async def invoices_where(self, query: dict[str, Any], limit: int = 50) -> list[dict[str, Any]]:
        return await self.invoices.find(query, projection=LIST_PROJECTION).sort("created_at", DESCENDING).limit(limit).to_list(None)

    async def recent_failures(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self.invoices.find({"status": {"$in": ["rejected", "stamp_failed"]}}, projection=LIST_PROJECTION).sort("updated_at", DESCENDING).limit(limit).to_list(None)

    async def issuer(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.issuers.find_one({"_id": issuer_id}, projection={"_id": 1, "rfc": 1, "legal_name": 1, "slug": 1, "email": 1})

    async def issuers_where(self, *, rfc: str | None = None, name: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if rfc:
            query["rfc"] = rfc
        if name:
            query["$or"] = [{"legal_name": {"$regex": re.escape(name), "$options": "i"}}, {"slug": {"$regex": re.escape(name), "$options": "i"}}]
        return await self.issuers.find(query, projection={"_id": 1, "rfc": 1, "legal_name": 1, "slug": 1, "email": 1}).limit(limit).to_list(None)


class KafkaOffsets:
    """Committed offsets per consumer group and end offsets per partition, from the broker.

    tansu answers OffsetFetch only for named partitions (a fetch of "all the group's
    partitions" breaks aiokafka's decoder), so every group is asked about every Timbra topic's
    partitions; the domain keeps the topics a group has committed on."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s

    async def read(self, topic_names: list[str]) -> tuple[dict[str, dict[Partition, int]], dict[Partition, int], dict[Partition, int]]:
        return await asyncio.wait_for(self._read(topic_names), self.timeout_s)

    async def _read(self, topic_names: list[str]) -> tuple[dict[str, dict[Partition, int]], dict[Partition, int], dict[Partition, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="timbra-console", request_timeout_ms=int(self.timeout_s * 1000))
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id="timbra-console", enable_auto_commit=False, request_timeout_ms=int(self.timeout_s * 1000))
        await admin.start()
        try:
            await consumer.start()
            try:
                known = await consumer.topics()
                partitions = [TopicPartition(t, p) for t in topic_names if t in known for p in sorted(consumer.partitions_for_topic(t) or ())]
                end = {(tp.topic, tp.partition): n for tp, n in (await consumer.end_offsets(partitions)).items()} if partitions else {}
                beginning = {(tp.topic, tp.partition): n for tp, n in (await consumer.beginning_offsets(partitions)).items()} if partitions else {}
            finally:
                await consumer.stop()
            committed: dict[str, dict[Partition, int]] = {}
            for group, protocol in await admin.list_consumer_groups():
                if protocol not in ("consumer", "") or group.startswith("timbra-console"):
                    continue
                offsets = await admin.list_consumer_group_offsets(group, partitions=partitions) if partitions else {}
                committed[group] = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
            return committed, end, beginning
        finally:
            await admin.close()
