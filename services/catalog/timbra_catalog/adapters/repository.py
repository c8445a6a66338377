"""MongoDB repositories of the catalog service. Every query is scoped by ``issuer_id``: another
tenant's id simply is not found."""

import math
import re
import unicodedata
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase


def normalise(text: str) -> str:
    """Lower case, accents removed, punctuation as spaces (for accent-insensitive search)."""
    text = unicodedata.normalize("NFKD", (text or "").casefold())
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text if not unicodedata.combining(ch)).split())


class Entities:
    """One issuer-scoped collection (customers, products, branches, tickets)."""

    def __init__(self, db: AsyncDatabase, name: str) -> None:
        self.collection = db[name]

    async def insert(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.collection.insert_one(doc, session=session)

    async def insert_many(self, docs: list[dict[str, Any]], session: AsyncClientSession | None = None) -> None:
        if docs:
            await self.collection.insert_many(docs, session=session)

    async def get(self, issuer_id: str, entity_id: str, *, include_deleted: bool = False, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": entity_id, "issuer_id": issuer_id}
        if not include_deleted:
            query["deleted_at"] = None
        return await self.collection.find_one(query, session=session)

    async def find_one(self, query: dict[str, Any], session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.collection.find_one(query, session=session)

    async def find(self, query: dict[str, Any], *, sort: str = "created_at", limit: int = 0, session: AsyncClientSession | None = None) -> list[dict[str, Any]]:
        return await self.collection.find(query, session=session).sort(sort, ASCENDING).limit(limit).to_list(None)

    async def replace(self, doc: dict[str, Any], *, expected_version: int, session: AsyncClientSession | None = None) -> bool:
        """Write ``doc`` if nobody changed it since ``expected_version`` was read."""
        result = await self.collection.replace_one({"_id": doc["_id"], "issuer_id": doc["issuer_id"], "version": expected_version}, doc, session=session)
        return result.modified_count == 1

    async def page(self, issuer_id: str, *, q: str | None, page: int, limit: int, filters: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], int]:
        query: dict[str, Any] = {"issuer_id": issuer_id, "deleted_at": None, **(filters or {})}
        tokens = normalise(q or "").split()
        if tokens:
            query["$and"] = [{"search": {"$regex": re.escape(t)}} for t in tokens[:8]]
        total = await self.collection.count_documents(query)
        docs = await self.collection.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).skip((page - 1) * limit).limit(limit).to_list(None)
        return docs, total


def pages(total: int, limit: int) -> int:
    return max(1, math.ceil(total / limit))


class CatalogRepositories:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.customers = Entities(db, "customers")
        self.products = Entities(db, "products")
        self.branches = Entities(db, "branches")
        self.tickets = Entities(db, "tickets")
        self.settings = db.settings
        self.global_invoices = db.global_invoices

    async def ensure_indexes(self) -> None:
        for entities in (self.customers, self.products, self.branches):
            await entities.collection.create_indexes([IndexModel([("issuer_id", ASCENDING), ("deleted_at", ASCENDING), ("created_at", DESCENDING)])])
        await self.customers.collection.create_indexes([
            IndexModel([("issuer_id", ASCENDING), ("rfc_key", ASCENDING)], unique=True, partialFilterExpression={"rfc_key": {"$type": "string"}}, name="issuer_rfc_live"),
        ])
        await self.tickets.collection.create_indexes([
            IndexModel([("issuer_id", ASCENDING), ("branch_id", ASCENDING), ("ticket_number", ASCENDING)], unique=True, name="issuer_branch_ticket"),
            IndexModel([("issuer_id", ASCENDING), ("branch_id", ASCENDING), ("status", ASCENDING), ("date", ASCENDING)]),
        ])
        await self.global_invoices.create_indexes([IndexModel([("issuer_id", ASCENDING), ("branch_id", ASCENDING), ("status", ASCENDING)])])

    async def issuer_settings(self, issuer_id: str) -> dict[str, Any]:
        return await self.settings.find_one({"_id": issuer_id}) or {"_id": issuer_id, "invoicing_window_days": None}

    async def save_settings(self, issuer_id: str, values: dict[str, Any], at: datetime) -> dict[str, Any]:
        await self.settings.update_one({"_id": issuer_id}, {"$set": {**values, "updated_at": at}}, upsert=True)
        return await self.issuer_settings(issuer_id)
