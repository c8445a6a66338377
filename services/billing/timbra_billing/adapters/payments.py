"""MongoDB repositories of payments: products, payment references (constancias), imported bank
statements and deposits, the exceptions queue, the audit trail and the issuers' contacts."""

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from timbra_billing.domain.money import DEFAULT_PRODUCTS, Product
from timbra_shared.ids import new_id, utcnow

Session = AsyncClientSession | None


class PaymentRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.products = db.products
        self.references = db.payment_references
        self.imports = db.statement_imports
        self.deposits = db.deposits
        self.exceptions = db.reconciliation_exceptions
        self.audit = db.audit
        self.issuers = db.issuers

    async def ensure_indexes(self) -> None:
        await self.references.create_indexes([IndexModel([("issuer_id", ASCENDING), ("status", ASCENDING), ("created_at", DESCENDING)])])
        await self.deposits.create_indexes([IndexModel([("reference", ASCENDING), ("date", ASCENDING)]), IndexModel([("date", ASCENDING)])])
        await self.exceptions.create_indexes([IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]), IndexModel([("date", ASCENDING)])])
        await self.audit.create_indexes([IndexModel([("target", ASCENDING), ("at", ASCENDING)])])
        for product in DEFAULT_PRODUCTS:  # the default catalog; staff edits are never overwritten
            await self.products.update_one({"_id": product.code}, {"$setOnInsert": {**product.as_doc(), "created_at": utcnow()}}, upsert=True)

    # ------------------------------------------------------------------ issuers (projection of issuer.profile)

    async def upsert_issuer(self, doc: dict[str, Any]) -> None:
        """Keep the newest version of the profile (an older one redelivered is ignored)."""
        fields = {k: doc.get(k) for k in ("version", "rfc", "legal_name", "email", "slug")}
        try:
            await self.issuers.update_one({"_id": doc["issuer_id"], "version": {"$lt": doc["version"]}}, {"$set": fields}, upsert=True)
        except DuplicateKeyError:
            pass  # a newer version is already stored

    async def contact(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.issuers.find_one({"_id": issuer_id})

    # ------------------------------------------------------------------ products

    async def catalog(self) -> dict[str, Product]:
        return {doc["_id"]: Product.from_doc(doc) async for doc in self.products.find({})}

    async def put_product(self, product: Product, actor: str) -> dict[str, Any]:
        return await self.products.find_one_and_update(
            {"_id": product.code}, {"$set": {**product.as_doc(), "updated_at": utcnow(), "updated_by": actor}, "$setOnInsert": {"created_at": utcnow()}},
            upsert=True, return_document=ReturnDocument.AFTER,
        )

    # ------------------------------------------------------------------ payment references

    async def insert_reference(self, doc: dict[str, Any]) -> None:
        await self.references.insert_one(doc)

    async def reference(self, reference: str, session: Session = None) -> dict[str, Any] | None:
        return await self.references.find_one({"_id": reference}, session=session)

    async def references_in(self, references: list[str], session: Session = None) -> dict[str, dict[str, Any]]:
        return {doc["_id"]: doc async for doc in self.references.find({"_id": {"$in": references}}, session=session)}

    async def list_references(self, issuer_id: str | None, status: str | None, limit: int = 200) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if issuer_id:
            query["issuer_id"] = issuer_id
        if status:
            query["status"] = status
        return await self.references.find(query).sort("created_at", DESCENDING).limit(limit).to_list(None)

    async def mark_paid(self, reference: str, deposit_id: str, package_ids: list[str], session: AsyncClientSession) -> bool:
        result = await self.references.update_one(
            {"_id": reference, "status": "pending"},
            {"$set": {"status": "paid", "paid_at": utcnow(), "deposit_id": deposit_id, "package_ids": package_ids}},
            session=session,
        )
        return result.modified_count == 1

    # ------------------------------------------------------------------ statements and deposits

    async def record_import(self, doc: dict[str, Any]) -> bool:
        """False when this exact file was imported before."""
        result = await self.imports.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc, "$inc": {"uploads": 1}}, upsert=True)
        return result.upserted_id is not None

    async def list_imports(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self.imports.find({}).sort("at", DESCENDING).limit(limit).to_list(None)

    async def deposit(self, deposit_id: str, session: Session = None) -> dict[str, Any] | None:
        return await self.deposits.find_one({"_id": deposit_id}, session=session)

    async def same_day_twin(self, reference: str, date: str, amount: str, session: AsyncClientSession) -> bool:
        return await self.deposits.find_one({"reference": reference, "date": date, "amount": amount}, projection={"_id": 1}, session=session) is not None

    async def insert_deposit(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.deposits.insert_one(doc, session=session)

    async def set_deposit(self, deposit_id: str, fields: dict[str, Any], session: AsyncClientSession) -> None:
        await self.deposits.update_one({"_id": deposit_id}, {"$set": fields}, session=session)

    async def deposits_between(self, start: str, end: str) -> list[dict[str, Any]]:
        return await self.deposits.find({"date": {"$gte": start, "$lte": end}}).sort([("date", ASCENDING), ("_id", ASCENDING)]).to_list(None)

    # ------------------------------------------------------------------ exceptions and audit

    async def insert_exception(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.exceptions.insert_one(doc, session=session)

    async def exception(self, exception_id: str, session: Session = None) -> dict[str, Any] | None:
        return await self.exceptions.find_one({"_id": exception_id}, session=session)

    async def list_exceptions(self, status: str | None, limit: int = 500) -> list[dict[str, Any]]:
        query = {"status": status} if status else {}
        return await self.exceptions.find(query).sort("created_at", ASCENDING).limit(limit).to_list(None)

    async def exceptions_between(self, start: str, end: str) -> list[dict[str, Any]]:
        return await self.exceptions.find({"date": {"$gte": start, "$lte": end}}).sort("created_at", ASCENDING).to_list(None)

    async def close_exception(self, exception_id: str, resolution: dict[str, Any], session: AsyncClientSession) -> bool:
        result = await self.exceptions.update_one(
            {"_id": exception_id, "status": "open"},
            {"$set": {"status": "resolved", "resolution": resolution}, "$push": {"history": resolution}},
            session=session,
        )
        return result.modified_count == 1

    async def note_exception(self, exception_id: str, entry: dict[str, Any], session: AsyncClientSession) -> None:
        await self.exceptions.update_one({"_id": exception_id}, {"$push": {"history": entry}}, session=session)

    async def add_audit(self, actor: str, action: str, target: str, note: str | None, data: dict[str, Any] | None, session: AsyncClientSession, at: datetime | None = None) -> None:
        await self.audit.insert_one({"_id": new_id("aud_"), "at": at or utcnow(), "actor": actor, "action": action, "target": target, "note": note, "data": data or {}}, session=session)

    async def audit_for(self, target: str) -> list[dict[str, Any]]:
        return await self.audit.find({"target": target}).sort("at", ASCENDING).to_list(None)
