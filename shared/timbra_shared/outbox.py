"""Transactional outbox relay.

Events are inserted into ``outbox`` in the same transaction as the state change that causes
them. Right after the commit they are handed to the relay (fast path); a poller re-publishes
anything left unsent (a crash between commit and publish, or a broker outage). Sent events are
kept so that a redrive can publish them again: consumers are idempotent, so duplicates are safe.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pymongo.asynchronous.collection import AsyncCollection

from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.telemetry import attached, carrier_from_current

PublishFn = Callable[[str, bytes, bytes, dict[str, str]], Awaitable[Any]]

log = get_logger(__name__)

KEEP_SENT = timedelta(days=7)
#: the fast path marks what it published this long after, together with what it publishes
#: meanwhile: one update for several commits' events instead of one per commit. A crash inside
#: the window only means the poller publishes them again (consumers are idempotent).
MARK_SENT_AFTER_S = 0.02


def outbox_document(event: BaseModel, *, key: str | None = None) -> dict[str, Any]:
    payload = event.model_dump_json()
    invoice_id = getattr(event, "invoice_id", None)
    return {
        "_id": getattr(event, "event_id", None) or new_id(),
        "topic": type(event).topic,  # type: ignore[attr-defined]
        "key": key or invoice_id or getattr(event, "issuer_id", ""),
        "invoice_id": invoice_id,
        "payload": payload,
        "trace": carrier_from_current(),
        "created_at": utcnow(),
        "sent_at": None,
        "lease_until": None,
    }


class Outbox:
    def __init__(
        self,
        collection: AsyncCollection | None,
        publish: PublishFn,
        *,
        poll_interval: float = 1.0,
        orphan_after: float = 3.0,
        batch: int = 256,
    ) -> None:
        self.collection = collection
        self._publish = publish
        self._poll_interval = poll_interval
        self._orphan_after = timedelta(seconds=orphan_after)
        self._batch = batch
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._owner = new_id("relay-")
        self._unmarked: list[Any] = []
        self._marking: asyncio.Task[None] | None = None
        self.published = 0

    def bind(self, collection: AsyncCollection) -> None:
        self.collection = collection

    def dispatch(self, docs: Iterable[dict[str, Any]]) -> None:
        for doc in docs:
            self._queue.put_nowait(doc)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._fast_loop()), asyncio.create_task(self._poll_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._marking is not None:
            await asyncio.gather(self._marking, return_exceptions=True)

    async def requeue(self, invoice_id: str, topics: Iterable[str] | None = None) -> int:
        """Publish again the events this service emitted for ``invoice_id`` (a redrive), optionally
        only those on ``topics``."""
        assert self.collection is not None
        query: dict[str, Any] = {"invoice_id": invoice_id}
        if topics is not None:
            query["topic"] = {"$in": sorted(topics)}
        docs = await self.collection.find(query).sort("created_at", 1).to_list(None)
        self.dispatch(docs)
        return len(docs)

    async def _publish_docs(self, docs: list[dict[str, Any]], *, mark_later: bool = False) -> list[Any]:
        async def one(doc: dict[str, Any]) -> Any:
            with attached(doc.get("trace")):
                await self._publish(
                    doc["topic"],
                    doc["payload"].encode(),
                    (doc.get("key") or "").encode(),
                    {"content-type": "application/json"},
                )
            return doc["_id"]

        results = await asyncio.gather(*(one(d) for d in docs), return_exceptions=True)
        sent = [r for r in results if not isinstance(r, BaseException)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            log.warning("outbox.publish_failed", failed=len(failures), error=repr(failures[0]))
        if sent:
            self.published += len(sent)
            if mark_later:
                self._unmarked.extend(sent)
                if self._marking is None:
                    self._marking = asyncio.create_task(self._mark_soon())
            else:
                await self._mark_sent(sent)
        return sent

    async def _mark_sent(self, ids: list[Any]) -> None:
        assert self.collection is not None
        now = utcnow()
        await self.collection.update_many({"_id": {"$in": ids}, "sent_at": None}, {"$set": {"sent_at": now, "published_at": now, "lease_until": None}})

    async def _mark_soon(self) -> None:
        try:
            await asyncio.sleep(MARK_SENT_AFTER_S)
        except asyncio.CancelledError:
            pass  # stopping: mark what was published before going
        ids, self._unmarked, self._marking = self._unmarked, [], None
        try:
            await self._mark_sent(ids)
        except Exception as exc:  # the poller publishes them again; consumers are idempotent
            log.warning("outbox.mark_failed", events=len(ids), error=repr(exc))

    async def _fast_loop(self) -> None:
        while True:
            first = await self._queue.get()
            docs = [first]
            while len(docs) < self._batch and not self._queue.empty():
                docs.append(self._queue.get_nowait())
            try:
                await self._publish_docs(docs, mark_later=True)
            except Exception as exc:  # the poller will pick unsent documents up
                log.warning("outbox.fast_path_failed", error=repr(exc))

    async def _poll_loop(self) -> None:
        assert self.collection is not None
        delay = self._poll_interval
        while True:
            await asyncio.sleep(delay)
            try:
                now = utcnow()
                candidates = await self.collection.find(
                    {
                        "sent_at": None,
                        "created_at": {"$lt": now - self._orphan_after},
                        "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}],
                    },
                    projection={"_id": 1},
                ).sort("created_at", 1).limit(self._batch).to_list(None)
                if not candidates:
                    delay = self._poll_interval
                    continue
                ids = [c["_id"] for c in candidates]
                await self.collection.update_many(
                    {"_id": {"$in": ids}, "sent_at": None},
                    {"$set": {"lease_until": now + timedelta(seconds=30), "lease_owner": self._owner}},
                )
                docs = await self.collection.find({"_id": {"$in": ids}, "lease_owner": self._owner, "sent_at": None}).to_list(None)
                sent = await self._publish_docs(docs)
                delay = self._poll_interval if len(sent) == len(docs) else min(delay * 2, 15.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox.poll_failed", error=repr(exc))
                delay = min(delay * 2, 15.0)


def decode_payload(raw: bytes | str) -> dict[str, Any]:
    return json.loads(raw)
