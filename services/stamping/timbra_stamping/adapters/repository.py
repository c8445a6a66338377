"""Stamped CFDIs: the legal documents, kept byte-exact as the PAC returned them."""

from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase


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

    async def insert(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.stamps.insert_one(doc, session=session)
