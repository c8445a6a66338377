"""MongoDB repositories of the cfdi-builder: invoices (aggregate and read model), the issuer
projection, and folio counters."""

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from timbra_cfdi_builder.domain.invoice import FINAL, IN_FLIGHT, RANK, InvoiceStatus
from timbra_shared.ids import utcnow


LIST_PROJECTION = {"xml": 0, "trace": 0, "request.items": 0, "request.ticket_ids": 0, "request.related": 0}


class InvoiceRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self.invoices = db.invoices

    async def ensure_indexes(self) -> None:
        await self.invoices.create_indexes([
            IndexModel(
                [("issuer_id", ASCENDING), ("idempotency_key", ASCENDING)],
                unique=True,
                partialFilterExpression={"idempotency_key": {"$type": "string"}},
                name="issuer_idempotency",
            ),
            IndexModel([("issuer_id", ASCENDING), ("created_at", DESCENDING)]),
            IndexModel([("status", ASCENDING), ("updated_at", ASCENDING)]),
            IndexModel([("uuid", ASCENDING)], sparse=True),
            # GET /v1/invoices: every filter is tenant-scoped and pages newest first
            *[IndexModel([("issuer_id", ASCENDING), *([(f, ASCENDING)] if f else []), ("created_at", DESCENDING), ("_id", DESCENDING)], name=f"list_{f or 'all'}")
              for f in (None, "status", "customer_rfc", "customer_id")],
            IndexModel([("issuer_id", ASCENDING), ("serie", ASCENDING), ("folio", ASCENDING)], name="list_serie_folio"),
        ])

    async def insert(self, doc: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        await self.invoices.insert_one(doc, session=session)

    async def get(self, invoice_id: str, issuer_id: str | None = None, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": invoice_id}
        if issuer_id is not None:
            query["issuer_id"] = issuer_id
        return await self.invoices.find_one(query, session=session)

    async def get_many(self, invoice_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not invoice_ids:
            return {}
        return {doc["_id"]: doc async for doc in self.invoices.find({"_id": {"$in": invoice_ids}})}

    async def by_idempotency_key(self, issuer_id: str, key: str) -> dict[str, Any] | None:
        # $type lets the planner use the partial unique index; a plain equality scans the issuer's invoices
        return await self.invoices.find_one({"issuer_id": issuer_id, "idempotency_key": {"$eq": key, "$type": "string"}})

    async def page(self, issuer_id: str, *, limit: int, after: dict[str, Any] | None = None, **filters: Any) -> tuple[list[dict[str, Any]], bool]:
        """One page of the issuer's invoices, newest first, and whether more follow. ``filters``:
        ``status``, ``customer_rfc``, ``customer_id``, ``serie``, ``folio``, ``uuid``, ``type``,
        ``idempotency_key`` (equality, ``None`` = any), ``created_from`` (inclusive) and
        ``created_to`` (exclusive). ``after`` is the last invoice of the previous page."""
        query: dict[str, Any] = {"issuer_id": issuer_id}
        created_from, created_to = filters.pop("created_from", None), filters.pop("created_to", None)
        if filters.get("type"):
            query["request.type"] = filters.pop("type")
        query.update({k: v for k, v in filters.items() if v is not None})
        if isinstance(query.get("idempotency_key"), str):
            query["idempotency_key"] = {"$eq": query["idempotency_key"], "$type": "string"}
        if created_from or created_to:
            query["created_at"] = {**({"$gte": created_from} if created_from else {}), **({"$lt": created_to} if created_to else {})}
        if after is not None:
            query = {"$and": [query, {"$or": [{"created_at": {"$lt": after["created_at"]}}, {"created_at": after["created_at"], "_id": {"$lt": after["_id"]}}]}]}
        docs = await self.invoices.find(query, projection=LIST_PROJECTION).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1).to_list(None)
        return docs[:limit], len(docs) > limit

    async def apply_status(
        self,
        invoice_id: str,
        status: InvoiceStatus,
        *,
        at: datetime,
        service: str,
        fields: dict[str, Any] | None = None,
        session: AsyncClientSession | None = None,
    ) -> bool:
        """Record a step once; the status only moves forward (final statuses win)."""
        result = await self.invoices.update_one(*status_change(invoice_id, status, at=at, service=service, fields=fields), session=session)
        return result.modified_count == 1

    async def apply_statuses(self, changes: list[tuple[str, InvoiceStatus, datetime, str, dict[str, Any]]]) -> int:
        """:meth:`apply_status` for a consumed batch of ``(invoice_id, status, at, service, fields)``,
        in one ordered bulk write (events of one invoice apply in order); how many changed."""
        if not changes:
            return 0
        result = await self.invoices.bulk_write([UpdateOne(*status_change(i, s, at=a, service=v, fields=f)) for i, s, a, v, f in changes], ordered=True)
        return result.modified_count

    async def apply_cancellation(
        self, invoice_id: str, step: str, *, at: datetime, event_id: str, summary: dict[str, Any] | None, final: bool
    ) -> bool:
        """Record a cancellation step once per event (a new request after a rejection repeats the
        steps) in one update: the timeline entry, the latest request's summary (by attempt, then
        time) and, on completion, the canceled status."""
        entry = {"status": "canceled" if final else f"cancellation_{step}", "at": at, "service": "cancellation", "event_id": event_id}
        changes: dict[str, Any] = {"timeline": {"$concatArrays": [{"$ifNull": ["$timeline", []]}, [{"$literal": entry}]]}, "updated_at": utcnow()}
        if summary is not None:
            newer = {"$or": [
                {"$eq": [{"$ifNull": ["$cancellation", None]}, None]},
                {"$lt": ["$cancellation.attempt", summary["attempt"]]},
                {"$and": [{"$eq": ["$cancellation.attempt", summary["attempt"]]}, {"$lte": ["$cancellation.at", at]}]},
            ]}
            changes["cancellation"] = {"$cond": [newer, {"$literal": summary}, "$cancellation"]}
        if final:
            changes.update(status=InvoiceStatus.CANCELED.value, status_rank=RANK[InvoiceStatus.CANCELED])
        result = await self.invoices.update_one({"_id": invoice_id, "timeline.event_id": {"$ne": event_id}}, [{"$set": changes}])
        return result.modified_count == 1

    async def stuck(self, *, older_than: timedelta, limit: int = 500) -> list[dict[str, Any]]:
        now = utcnow()
        return await self.invoices.find(
            {
                "status": {"$in": IN_FLIGHT},
                "updated_at": {"$lt": now - older_than},
                "$or": [{"redrive_at": None}, {"redrive_at": {"$lt": now}}],
            },
            projection={"issuer_id": 1, "status": 1, "redrives": 1, "trace": 1},
        ).limit(limit).to_list(None)

    async def mark_redriven(self, invoice_id: str, attempt: int, next_at: datetime) -> None:
        await self.invoices.update_one({"_id": invoice_id}, {"$set": {"redrives": attempt, "redrive_at": next_at}})


def status_change(invoice_id: str, status: InvoiceStatus, *, at: datetime, service: str, fields: dict[str, Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The filter and update that add ``status`` to the invoice's timeline once, moving the status
    forward only (a later step outranks an earlier one; final statuses win)."""
    rank = RANK[status]
    entry = {"status": status.value, "at": at, "service": service}
    final_ranks = [RANK[s] for s in FINAL if s != InvoiceStatus.EMAILED]
    advance = {"$and": [{"$lt": ["$status_rank", rank]}, {"$not": [{"$in": ["$status_rank", final_ranks]}]}]}
    if rank >= 100:
        advance = {"$lt": ["$status_rank", rank]}
    update: list[dict[str, Any]] = [{
        "$set": {
            "timeline": {"$concatArrays": [{"$ifNull": ["$timeline", []]}, [entry]]},
            "status": {"$cond": [advance, status.value, "$status"]},
            "status_rank": {"$cond": [advance, rank, "$status_rank"]},
            "updated_at": utcnow(),
            **{k: {"$literal": v} for k, v in (fields or {}).items()},
        }
    }]
    return {"_id": invoice_id, "timeline.status": {"$ne": status.value}}, update


class IssuerDirectory:
    """Local projection of ``issuer.profile`` so that building never calls issuer-profile."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.issuers = db.issuers

    async def upsert(self, profile: dict[str, Any]) -> None:
        current = await self.issuers.find_one({"_id": profile["issuer_id"]}, projection={"version": 1})
        if current and current.get("version", 0) >= profile["version"]:
            return
        await self.issuers.replace_one({"_id": profile["issuer_id"]}, {"_id": profile["issuer_id"], **profile}, upsert=True)

    async def get(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.issuers.find_one({"_id": issuer_id})


class FolioCounter:
    def __init__(self, db: AsyncDatabase) -> None:
        self.counters = db.folios

    async def next(self, issuer_id: str, serie: str, session: AsyncClientSession | None = None) -> int:
        doc = await self.counters.find_one_and_update(
            {"_id": f"{issuer_id}:{serie}"},
            {"$inc": {"next": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return int(doc["next"])


class CatalogProjection:
    """Local projection of ``catalog.customers``, ``catalog.products`` and ``catalog.tickets``
    (latest version wins), so that building resolves ids without calling the catalog service.
    Every read is scoped by issuer: another issuer's id is simply not found."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.collections = {"customer": db.catalog_customers, "product": db.catalog_products, "ticket": db.catalog_tickets}
        self.claims = db.ticket_claims
        self.invoices = db.invoices

    async def ensure_indexes(self) -> None:
        for collection in self.collections.values():
            await collection.create_indexes([IndexModel([("issuer_id", ASCENDING)])])

    async def upsert(self, kind: str, state: dict[str, Any]) -> bool:
        """Store ``state`` unless a newer version is already there. True when it was stored."""
        collection = self.collections[kind]
        doc = {**state, "_id": state["id"]}
        result = await collection.replace_one({"_id": doc["_id"], "version": {"$lt": doc["version"]}}, doc)
        if result.matched_count:
            return True
        try:
            await collection.insert_one(doc)
        except DuplicateKeyError:
            return False  # the same or a newer version is already projected
        return True

    async def get(self, kind: str, issuer_id: str, entity_id: str) -> dict[str, Any] | None:
        return await self.collections[kind].find_one({"_id": entity_id, "issuer_id": issuer_id})

    async def claim_tickets(self, issuer_id: str, ticket_ids: list[str], invoice_id: str, session: AsyncClientSession | None = None) -> list[str]:
        """Claim the tickets for ``invoice_id`` in the build transaction. Returns the tickets
        already claimed by another invoice that is still alive (not rejected, failed or canceled)."""
        taken = []
        for ticket_id in ticket_ids:
            claim = await self.claims.find_one({"_id": f"{issuer_id}:{ticket_id}"}, session=session)
            if claim is not None and claim["invoice_id"] != invoice_id:
                other = await self.invoices.find_one({"_id": claim["invoice_id"]}, projection={"status": 1}, session=session)
                if other is not None and other["status"] not in DEAD:
                    taken.append(ticket_id)
        if taken:
            return taken
        for ticket_id in ticket_ids:
            await self.claims.replace_one(
                {"_id": f"{issuer_id}:{ticket_id}"},
                {"_id": f"{issuer_id}:{ticket_id}", "issuer_id": issuer_id, "ticket_id": ticket_id, "invoice_id": invoice_id, "at": utcnow()},
                upsert=True,
                session=session,
            )
        return []


DEAD = frozenset({InvoiceStatus.REJECTED.value, InvoiceStatus.STAMP_FAILED.value, InvoiceStatus.CANCELED.value})
