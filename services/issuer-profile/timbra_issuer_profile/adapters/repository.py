"""MongoDB repositories of issuer-profile."""

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase


class IssuerRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.issuers = db.issuers
        self.api_keys = db.api_keys
        self.csds = db.csds
        self.seals = db.seals

    async def ensure_indexes(self) -> None:
        await self.issuers.create_indexes([IndexModel([("slug", ASCENDING)], unique=True), IndexModel([("rfc", ASCENDING)])])
        await self.api_keys.create_indexes([IndexModel([("hash", ASCENDING)], unique=True), IndexModel([("issuer_id", ASCENDING)])])
        await self.csds.create_indexes([IndexModel([("issuer_id", ASCENDING), ("valid_to", DESCENDING)])])

    async def insert_issuer(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.issuers.insert_one(doc, session=session)

    async def get(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.issuers.find_one({"_id": issuer_id})

    async def slug_taken(self, slug: str) -> bool:
        return await self.issuers.count_documents({"slug": slug}, limit=1) > 0

    async def update(self, issuer_id: str, changes: dict[str, Any], session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.issuers.find_one_and_update(
            {"_id": issuer_id},
            {"$set": changes, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def insert_key(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.api_keys.insert_one(doc, session=session)

    async def key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        return await self.api_keys.find_one({"hash": key_hash, "revoked_at": None})

    async def insert_csd(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.csds.insert_one(doc, session=session)

    async def record_seal(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.seals.insert_one(doc, session=session)

    async def csds_of(self, issuer_id: str) -> list[dict[str, Any]]:
        return await self.csds.find({"issuer_id": issuer_id}).sort("valid_to", DESCENDING).to_list(None)
