"""Webhook state: endpoints, events and deliveries (the persisted retry schedule and the log)."""

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from timbra_shared.ids import utcnow


class WebhookRepository:
    def __init__(self, db: Any) -> None:
        self.endpoints = db.webhook_endpoints
        self.deliveries = db.webhook_deliveries

    async def ensure_indexes(self) -> None:
        await self.endpoints.create_indexes([IndexModel([("issuer_id", ASCENDING), ("enabled", ASCENDING)])])
        await self.deliveries.create_indexes([
            IndexModel([("state", ASCENDING), ("next_at", ASCENDING)]),
            IndexModel([("endpoint_id", ASCENDING), ("created_at", DESCENDING)]),
            IndexModel([("finished_at", ASCENDING)], expireAfterSeconds=30 * 86400),
        ])

    # ------------------------------------------------------------------ endpoints

    async def insert_endpoint(self, doc: dict[str, Any]) -> None:
        await self.endpoints.insert_one(doc)

    async def endpoint(self, endpoint_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": endpoint_id, "deleted": {"$ne": True}}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.endpoints.find_one(query)

    async def list_endpoints(self, issuer_id: str) -> list[dict[str, Any]]:
        return await self.endpoints.find({"issuer_id": issuer_id, "deleted": {"$ne": True}}).sort("created_at", ASCENDING).to_list(100)

    async def count_endpoints(self, issuer_id: str) -> int:
        return await self.endpoints.count_documents({"issuer_id": issuer_id, "deleted": {"$ne": True}})

    async def subscribed(self, issuer_id: str, event_type: str) -> list[dict[str, Any]]:
        return await self.endpoints.find({"issuer_id": issuer_id, "enabled": True, "deleted": {"$ne": True}, "events": event_type}).to_list(100)

    async def update_endpoint(self, endpoint_id: str, issuer_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        return await self.endpoints.find_one_and_update(
            {"_id": endpoint_id, "issuer_id": issuer_id, "deleted": {"$ne": True}}, {"$set": {**fields, "updated_at": utcnow()}}, return_document=ReturnDocument.AFTER,
        )

    async def delete_endpoint(self, endpoint_id: str, issuer_id: str) -> bool:
        result = await self.endpoints.update_one({"_id": endpoint_id, "issuer_id": issuer_id, "deleted": {"$ne": True}}, {"$set": {"deleted": True, "enabled": False, "secret": None}})
        if result.modified_count:
            await self.deliveries.update_many({"endpoint_id": endpoint_id, "state": "pending"}, {"$set": {"state": "cancelled", "finished_at": utcnow()}})
        return result.modified_count == 1

    # ------------------------------------------------------------------ deliveries

    async def insert_delivery(self, doc: dict[str, Any]) -> bool:
        """False when this endpoint already has this event (a redelivered source event)."""
        try:
            await self.deliveries.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def claim_due(self, now: datetime, busy: list[str], lease_s: float, owner: str) -> dict[str, Any] | None:
        """One due delivery whose endpoint is not at its concurrency limit here, leased to ``owner``
        (another instance skips it until the lease ends)."""
        query: dict[str, Any] = {"state": "pending", "next_at": {"$lte": now}, "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]}
        if busy:
            query["endpoint_id"] = {"$nin": busy}
        return await self.deliveries.find_one_and_update(
            query,
            {"$set": {"lease_until": datetime.fromtimestamp(now.timestamp() + lease_s, tz=now.tzinfo), "lease_owner": owner}},
            sort=[("next_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )

    async def record_attempt(self, delivery_id: str, owner: str, attempt: dict[str, Any], fields: dict[str, Any]) -> None:
        await self.deliveries.update_one(
            {"_id": delivery_id, "lease_owner": owner},
            {"$set": {**fields, "lease_until": None, "lease_owner": None}, "$inc": {"attempts": 1}, "$push": {"log": {"$each": [attempt], "$slice": -30}}},
        )

    async def delivery(self, delivery_id: str, issuer_id: str) -> dict[str, Any] | None:
        return await self.deliveries.find_one({"_id": delivery_id, "issuer_id": issuer_id})

    async def list_deliveries(self, endpoint_id: str, limit: int, state: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"endpoint_id": endpoint_id}
        if state:
            query["state"] = state
        return await self.deliveries.find(query, projection={"body": 0}).sort("created_at", DESCENDING).limit(limit).to_list(limit)
