"""MongoDB repositories of issuer-profile."""

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

# Never read key material or password hashes unless the use case needs them.
CSD_PUBLIC = {"key": 0, "password": 0, "cer": 0}
USER_PUBLIC = {"password_hash": 0}


class IssuerRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.issuers = db.issuers
        self.api_keys = db.api_keys
        self.csds = db.csds
        self.seals = db.seals
        self.users = db.users
        self.sessions = db.sessions
        self.logos = db.logos
        self.csd_notices = db.csd_notices
        self.login_failures = db.login_failures

    async def ensure_indexes(self) -> None:
        await self.issuers.create_indexes([IndexModel([("slug", ASCENDING)], unique=True), IndexModel([("rfc", ASCENDING)])])
        await self.api_keys.create_indexes([IndexModel([("hash", ASCENDING)], unique=True), IndexModel([("issuer_id", ASCENDING)])])
        await self.csds.create_indexes([
            IndexModel([("issuer_id", ASCENDING), ("valid_to", DESCENDING)]),
            IndexModel([("issuer_id", ASCENDING), ("serial", ASCENDING)], unique=True, name="issuer_serial"),
        ])
        await self.users.create_indexes([IndexModel([("username", ASCENDING)], unique=True), IndexModel([("issuer_id", ASCENDING)])])
        await self.sessions.create_indexes([IndexModel([("hash", ASCENDING)], unique=True), IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)])
        await self.logos.create_indexes([IndexModel([("issuer_id", ASCENDING)])])
        await self.login_failures.create_indexes([IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0)])

    # ------------------------------------------------------------------ issuers

    async def insert_issuer(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.issuers.insert_one(doc, session=session)

    async def get(self, issuer_id: str, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.issuers.find_one({"_id": issuer_id}, session=session)

    async def csd_expiry_counts(self, now: datetime, days: tuple[int, ...] = (30, 7)) -> dict[str, int]:
        """Issuers whose longest-lasting enabled CSD has expired, or expires within each of ``days``
        (the rule of ``expiry_certificate``), for the gauges: one pass over the CSDs."""
        limits = {f"{d}d": now + timedelta(days=d) for d in days}
        pipeline = [
            {"$match": {"valid_from": {"$lte": now}, "disabled_at": None}},
            {"$group": {"_id": "$issuer_id", "valid_to": {"$max": "$valid_to"}}},
            {"$group": {"_id": None, "expired": {"$sum": {"$cond": [{"$lte": ["$valid_to", now]}, 1, 0]}},
                        **{name: {"$sum": {"$cond": [{"$and": [{"$gt": ["$valid_to", now]}, {"$lte": ["$valid_to", limit]}]}, 1, 0]}} for name, limit in limits.items()}}},
        ]
        rows = await (await self.csds.aggregate(pipeline)).to_list(None)
        return {name: int(rows[0][name]) if rows else 0 for name in ("expired", *limits)}

    async def all_issuer_ids(self) -> list[str]:
        return [d["_id"] async for d in self.issuers.find({}, projection={"_id": 1})]

    async def slug_taken(self, slug: str) -> bool:
        return await self.issuers.count_documents({"slug": slug}, limit=1) > 0

    async def update(self, issuer_id: str, changes: dict[str, Any], session: AsyncClientSession | None = None, unset: list[str] | None = None) -> dict[str, Any] | None:
        update: dict[str, Any] = {"$inc": {"version": 1}}
        if changes:
            update["$set"] = changes
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        return await self.issuers.find_one_and_update({"_id": issuer_id}, update, return_document=ReturnDocument.AFTER, session=session)

    # ------------------------------------------------------------------ API keys and sessions

    async def insert_key(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.api_keys.insert_one(doc, session=session)

    async def key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        return await self.api_keys.find_one({"hash": key_hash, "revoked_at": None})

    async def keys_of(self, issuer_id: str | None, *, staff: bool = False) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"kind": "staff"} if staff else {"issuer_id": issuer_id}
        return await self.api_keys.find(query, projection={"hash": 0}).sort("created_at", DESCENDING).to_list(None)

    async def revoke_key(self, key_id: str, query: dict[str, Any], at: datetime) -> dict[str, Any] | None:
        return await self.api_keys.find_one_and_update(
            {"_id": key_id, **query},
            [{"$set": {"revoked_at": {"$ifNull": ["$revoked_at", at]}}}],
            projection={"hash": 0},
            return_document=ReturnDocument.AFTER,
        )

    async def touch_key(self, key_id: str, at: datetime) -> None:
        await self.api_keys.update_one({"_id": key_id}, {"$set": {"last_used_at": at}})

    async def insert_session(self, doc: dict[str, Any]) -> None:
        await self.sessions.insert_one(doc)

    async def session_by_hash(self, token_hash: str, now: datetime) -> dict[str, Any] | None:
        return await self.sessions.find_one({"hash": token_hash, "revoked_at": None, "expires_at": {"$gt": now}})

    async def revoke_session(self, session_id: str, at: datetime) -> None:
        await self.sessions.update_one({"_id": session_id}, {"$set": {"revoked_at": at}})

    async def revoke_sessions_of(self, user_id: str, at: datetime) -> None:
        await self.sessions.update_many({"user_id": user_id, "revoked_at": None}, {"$set": {"revoked_at": at}})

    # ------------------------------------------------------------------ users

    async def insert_user(self, doc: dict[str, Any]) -> None:
        await self.users.insert_one(doc)

    async def user(self, user_id: str, query: dict[str, Any], *, secret: bool = False) -> dict[str, Any] | None:
        return await self.users.find_one({"_id": user_id, **query}, projection=None if secret else USER_PUBLIC)

    async def user_by_username(self, username: str) -> dict[str, Any] | None:
        return await self.users.find_one({"username": username, "disabled_at": None})

    async def login_failures_of(self, username: str) -> dict[str, Any] | None:
        return await self.login_failures.find_one({"_id": username})

    async def save_login_failures(self, username: str, record: dict[str, Any], expire_at: datetime) -> None:
        await self.login_failures.replace_one({"_id": username}, {**record, "expire_at": expire_at}, upsert=True)

    async def clear_login_failures(self, username: str) -> None:
        await self.login_failures.delete_one({"_id": username})

    async def users_of(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.users.find(query, projection=USER_PUBLIC).sort("created_at", ASCENDING).to_list(None)

    async def update_user(self, user_id: str, query: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any] | None:
        return await self.users.find_one_and_update({"_id": user_id, **query}, {"$set": changes}, projection=USER_PUBLIC, return_document=ReturnDocument.AFTER)

    async def owner_emails(self, issuer_id: str) -> list[str]:
        docs = await self.users.find({"issuer_id": issuer_id, "role": "owner", "disabled_at": None}, projection={"email": 1}).to_list(None)
        return [d["email"] for d in docs if d.get("email")]

    # ------------------------------------------------------------------ CSDs

    async def insert_csd(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.csds.insert_one(doc, session=session)

    async def csds_of(self, issuer_id: str, *, secret: bool = False) -> list[dict[str, Any]]:
        return await self.csds.find({"issuer_id": issuer_id}, projection=None if secret else CSD_PUBLIC).sort("valid_to", DESCENDING).to_list(None)

    async def csd(self, csd_id: str) -> dict[str, Any] | None:
        return await self.csds.find_one({"_id": csd_id})

    async def csd_by_serial(self, issuer_id: str, serial: str) -> dict[str, Any] | None:
        return await self.csds.find_one({"issuer_id": issuer_id, "serial": serial}, projection=CSD_PUBLIC)

    async def delete_csd(self, issuer_id: str, serial: str) -> bool:
        return (await self.csds.delete_one({"issuer_id": issuer_id, "serial": serial})).deleted_count == 1

    async def claim_notice(self, notice_id: str, doc: dict[str, Any], session: AsyncClientSession) -> None:
        """Raises DuplicateKeyError when this (certificate, threshold) was already notified."""
        await self.csd_notices.insert_one({"_id": notice_id, **doc}, session=session)

    async def record_seal(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.seals.insert_one(doc, session=session)

    # ------------------------------------------------------------------ logos

    async def insert_logo(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.logos.insert_one(doc, session=session)

    async def logo(self, logo_id: str, issuer_id: str) -> dict[str, Any] | None:
        return await self.logos.find_one({"_id": logo_id, "issuer_id": issuer_id})

    async def delete_logos_except(self, issuer_id: str, keep: str | None, session: AsyncClientSession | None = None) -> None:
        await self.logos.delete_many({"issuer_id": issuer_id, "_id": {"$ne": keep}}, session=session)
