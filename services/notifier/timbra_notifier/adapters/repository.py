"""Notifier state: rendered documents and email deliveries."""

from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from timbra_shared.ids import utcnow


class DocumentRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.documents = db.documents
        self.emails = db.emails
        self.notifications = db.notifications

    async def ensure_indexes(self) -> None:
        await self.documents.create_indexes([IndexModel([("issuer_id", ASCENDING)])])

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.documents.find_one(query)

    async def save(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.documents.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)

    async def claim_email(self, invoice_id: str, recipients: list[str]) -> dict[str, Any] | None:
        """Claim the delivery; None when it was already sent (one email per invoice)."""
        doc = await self.emails.find_one_and_update(
            {"_id": invoice_id, "state": {"$ne": "sent"}},
            {"$set": {"state": "sending", "recipients": recipients, "claimed_at": utcnow()}, "$inc": {"attempts": 1}},
            upsert=False,
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return doc
        if await self.emails.find_one({"_id": invoice_id}):
            return None
        try:
            await self.emails.insert_one({"_id": invoice_id, "state": "sending", "recipients": recipients, "claimed_at": utcnow(), "attempts": 1})
        except Exception:
            return None
        return {"_id": invoice_id, "attempts": 1}

    async def claim_notification(self, event_id: str, issuer_id: str, kind: str) -> bool:
        """False when this notification was already sent (a crash after sending is retried)."""
        try:
            await self.notifications.update_one(
                {"_id": event_id, "state": {"$ne": "sent"}},
                {"$set": {"state": "sending", "issuer_id": issuer_id, "kind": kind, "claimed_at": utcnow()}, "$inc": {"attempts": 1}},
                upsert=True,
            )
        except DuplicateKeyError:  # the filter missed because it is already sent
            return False
        return True

    async def mark_notification(self, event_id: str, state: str, session: AsyncClientSession, **fields: Any) -> None:
        await self.notifications.update_one({"_id": event_id}, {"$set": {"state": state, "at": utcnow(), **fields}}, session=session)

    async def mark_email(self, invoice_id: str, state: str, session: AsyncClientSession, **fields: Any) -> None:
        await self.emails.update_one({"_id": invoice_id}, {"$set": {"state": state, "at": utcnow(), **fields}}, session=session)
