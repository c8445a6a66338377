"""Notifier state: rendered documents, email deliveries, platform notifications, the projection of
issuer profiles, request notes, and the issuers' email templates."""

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from timbra_shared.ids import utcnow

#: how long an attempt owns a delivery; also how long it keeps trying to record a sent email
EMAIL_LEASE_S = 120.0


class DocumentRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.documents = db.documents
        self.emails = db.emails
        self.notifications = db.notifications
        self.issuers = db.issuers
        self.requests = db.requests
        self.templates = db.email_templates

    async def ensure_indexes(self) -> None:
        await self.documents.create_indexes([IndexModel([("issuer_id", ASCENDING)])])
        await self.emails.create_indexes([
            IndexModel([("state", ASCENDING), ("next_at", ASCENDING)]),
            IndexModel([("followup.state", ASCENDING), ("followup.next_at", ASCENDING)]),
        ])
        await self.requests.create_indexes([IndexModel([("at", ASCENDING)], expireAfterSeconds=30 * 86400)])

    # ------------------------------------------------------------------ documents

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.documents.find_one(query)

    async def save(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.documents.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)

    async def set_pdf(self, invoice_id: str, field: str, pdf: bytes) -> None:
        """Cache a PDF rendered on demand (``pdf``, or ``pdf_cancelled`` with the CANCELADO mark)."""
        await self.documents.update_one({"_id": invoice_id}, {"$set": {field: pdf, f"{field}_at": utcnow()}})

    async def mark_cancelled(self, invoice_id: str, issuer_id: str | None, at: datetime) -> bool:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        result = await self.documents.update_one({**query, "cancelled_at": None}, {"$set": {"cancelled_at": at}, "$unset": {"pdf_cancelled": ""}})
        return result.modified_count == 1

    # ------------------------------------------------------------------ email deliveries

    async def claim_email(self, invoice_id: str, recipients: list[str], *, lease_s: float = EMAIL_LEASE_S) -> dict[str, Any] | None:
        """Claim the delivery; None when it was already sent or failed for good (one email per
        invoice), or when another attempt holds the lease."""
        now = utcnow()
        lease = {"state": "sending", "recipients": recipients, "claimed_at": now, "lease_until": now.timestamp() + lease_s}
        doc = await self.emails.find_one_and_update(
            {"_id": invoice_id, "state": {"$nin": ["sent", "failed"]}, "$or": [{"lease_until": {"$lte": now.timestamp()}}, {"lease_until": None}, {"state": {"$ne": "sending"}}]},
            {"$set": lease, "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return doc
        if await self.emails.find_one({"_id": invoice_id}, projection={"_id": 1}):
            return None
        try:
            await self.emails.insert_one({"_id": invoice_id, **lease, "attempts": 1, "first_at": now})
        except DuplicateKeyError:
            return None
        return {"_id": invoice_id, "attempts": 1, "first_at": now, **lease}

    async def schedule_email_retry(self, invoice_id: str, next_at: datetime, error: str, context: dict[str, Any]) -> None:
        await self.emails.update_one(
            {"_id": invoice_id},
            {"$set": {"state": "retry", "next_at": next_at, "last_error": error, "lease_until": None, "retry": context}},
        )

    async def due_email_retry(self, now: datetime) -> dict[str, Any] | None:
        """One delivery whose retry is due, leased to this caller."""
        return await self.emails.find_one_and_update(
            {"state": "retry", "next_at": {"$lte": now}},
            {"$set": {"state": "sending", "lease_until": now.timestamp() + EMAIL_LEASE_S, "claimed_at": now}, "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def mark_email(self, invoice_id: str, state: str, session: AsyncClientSession | None = None, **fields: Any) -> bool:
        result = await self.emails.update_one(
            {"_id": invoice_id, "state": {"$nin": ["sent", "failed"]}},
            {"$set": {"state": state, "at": utcnow(), "lease_until": None, **fields}},
            session=session,
        )
        return result.modified_count == 1

    async def schedule_followup(self, invoice_id: str, followup: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        """The recipients a server postponed (4xx) while it accepted others: delivered on their own
        schedule (``followup``: state, recipients, next_at, attempts, first_at, last_error, context)."""
        await self.emails.update_one({"_id": invoice_id}, {"$set": {"followup": {**followup, "state": "retry", "lease_until": None}}}, session=session)

    async def due_followup(self, now: datetime, *, lease_s: float = EMAIL_LEASE_S) -> dict[str, Any] | None:
        """One follow-up delivery that is due (or whose sender died holding it), leased to this caller."""
        return await self.emails.find_one_and_update(
            {"$or": [{"followup.state": "retry", "followup.next_at": {"$lte": now}},
                     {"followup.state": "sending", "followup.lease_until": {"$lte": now.timestamp()}}]},
            {"$set": {"followup.state": "sending", "followup.lease_until": now.timestamp() + lease_s}, "$inc": {"followup.attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def finish_followup(self, invoice_id: str, state: str, **fields: Any) -> None:
        await self.emails.update_one(
            {"_id": invoice_id},
            {"$set": {"followup.state": state, "followup.at": utcnow(), "followup.lease_until": None, **{f"followup.{k}": v for k, v in fields.items()}}},
        )

    async def email_status(self, invoice_id: str) -> dict[str, Any] | None:
        return await self.emails.find_one({"_id": invoice_id})

    async def log_resend(self, invoice_id: str, entry: dict[str, Any]) -> None:
        await self.emails.update_one({"_id": invoice_id}, {"$push": {"resends": {"$each": [entry], "$slice": -50}}, "$setOnInsert": {"state": "resent_only"}}, upsert=True)

    # ------------------------------------------------------------------ platform notifications

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

    # ------------------------------------------------------------------ projections

    async def upsert_issuer(self, profile: dict[str, Any]) -> None:
        """The latest issuer.profile wins (by ``version``); an older redelivery is ignored."""
        try:
            await self.issuers.update_one(
                {"_id": profile["issuer_id"], "$or": [{"version": {"$lte": profile["version"]}}, {"version": {"$exists": False}}]},
                {"$set": {**profile, "_id": profile["issuer_id"]}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass

    async def issuer(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.issuers.find_one({"_id": issuer_id})

    async def save_request(self, invoice_id: str, issuer_id: str, fields: dict[str, Any]) -> None:
        await self.requests.update_one({"_id": invoice_id}, {"$set": {"issuer_id": issuer_id, "at": utcnow(), **fields}}, upsert=True)

    async def request(self, invoice_id: str) -> dict[str, Any] | None:
        return await self.requests.find_one({"_id": invoice_id})

    # ------------------------------------------------------------------ email templates

    async def template(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.templates.find_one({"_id": issuer_id})

    async def set_template(self, issuer_id: str, subject: str | None, body: str | None) -> dict[str, Any]:
        return await self.templates.find_one_and_update(
            {"_id": issuer_id}, {"$set": {"subject": subject, "body": body, "updated_at": utcnow()}}, upsert=True, return_document=ReturnDocument.AFTER,
        )

    async def delete_template(self, issuer_id: str) -> None:
        await self.templates.delete_one({"_id": issuer_id})
