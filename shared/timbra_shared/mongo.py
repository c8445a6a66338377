"""MongoDB access: the client, and a unit of work that commits state, an idempotency marker and
outbox events in one transaction (ARCHITECTURE rule 2)."""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo import ASCENDING, AsyncMongoClient, DeleteOne, IndexModel, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from timbra_shared.errors import is_transient
from timbra_shared.ids import utcnow
from timbra_shared.logging import get_logger
from timbra_shared.outbox import KEEP_SENT, Outbox, outbox_document
from timbra_shared.telemetry import attached, carrier_from_current

GROUP_MAX = 200
GROUP_COMMIT = os.environ.get("TIMBRA_GROUP_COMMIT", "1") != "0"  # 0: one transaction per call (comparisons)

T = TypeVar("T")

log = get_logger(__name__)


class Duplicate:
    """Returned by :meth:`Store.transact` when the dedupe key was already processed."""

    def __repr__(self) -> str:
        return "DUPLICATE"


DUPLICATE = Duplicate()


def make_client(url: str) -> AsyncMongoClient:
    return AsyncMongoClient(url, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=3000, appname="timbra")


async def outlast_outage(write: Callable[[], Awaitable[T]], *, within_s: float, what: str) -> T:
    """Run ``write``, retrying it through a MongoDB (or broker) outage of up to ``within_s`` seconds.
    For the record of a side effect that cannot be undone, such as an email that has left: if the
    record were lost, the redelivered event would repeat the side effect."""
    deadline = time.monotonic() + within_s
    delay = 0.2
    while True:
        try:
            return await write()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("mongo.write_retried", what=what, error=repr(exc)[:200], retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Transaction:
    """Handed to a unit of work: the session to write with, ``write`` to stage a write and
    ``emit`` to stage an event."""

    def __init__(self, session: AsyncClientSession) -> None:
        self.session = session
        self.staged: list[dict[str, Any]] = []
        self._writes: dict[str, tuple[AsyncCollection, list[Any]]] = {}

    def emit(self, event: BaseModel, *, key: str | None = None) -> None:
        self.staged.append(outbox_document(event, key=key))

    def write(self, collection: AsyncCollection, operation: InsertOne | UpdateOne | UpdateMany | ReplaceOne | DeleteOne) -> None:
        """Stage a write for the commit, where each collection's staged writes go in one ordered
        ``bulk_write``: a group of N units pays one round trip per collection, not N. Reads in
        the same transaction do not see it; a unit that reads what it wrote awaits the
        collection itself."""
        self._writes.setdefault(collection.full_name, (collection, []))[1].append(operation)

    async def flush(self) -> None:
        writes, self._writes = self._writes, {}
        for collection, operations in writes.values():
            await collection.bulk_write(operations, ordered=True, session=self.session)


@dataclass
class Unit:
    """One event's unit of work inside :meth:`Store.transact_many`."""

    work: Callable[[Transaction], Awaitable[Any]]
    dedupe: str | None = None
    #: the trace context the work runs under (``messaging.trace_of(event)``), so that the events
    #: it emits continue its invoice's trace
    trace: Mapping[str, str] | None = None


class Store:
    """A service's own database, with its ``processed`` (inbox) and ``outbox`` collections."""

    def __init__(self, client: AsyncMongoClient, db_name: str, outbox: Outbox) -> None:
        self.client = client
        self.db: AsyncDatabase = client[db_name]
        self.outbox = outbox
        self._group: list[tuple[Unit, asyncio.Future[Any]]] = []
        self._group_running = False

    async def ensure_indexes(self) -> None:
        await self.db.outbox.create_indexes([
            IndexModel([("sent_at", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("invoice_id", ASCENDING)]),
            IndexModel([("published_at", ASCENDING)], expireAfterSeconds=int(KEEP_SENT.total_seconds())),
        ])
        await self.db.processed.create_indexes([IndexModel([("at", ASCENDING)], expireAfterSeconds=30 * 86400)])

    async def was_processed(self, dedupe: str) -> bool:
        """True when a unit of work with this dedupe key has committed (skip costly work early)."""
        return await self.db.processed.find_one({"_id": dedupe}, projection={"_id": 1}) is not None

    async def transact(
        self,
        work: Callable[[Transaction], Awaitable[T]],
        *,
        dedupe: str | None = None,
    ) -> T | Duplicate:
        """Run ``work`` in a transaction. With ``dedupe``, a second run for the same key is a no-op."""
        processed = self.db.processed
        if dedupe is not None and await processed.find_one({"_id": dedupe}, projection={"_id": 1}):
            return DUPLICATE
        tx_holder: list[Transaction] = []

        async def callback(session: AsyncClientSession) -> T:
            tx = Transaction(session)
            tx_holder[:] = [tx]
            if dedupe is not None:
                await processed.insert_one({"_id": dedupe, "at": utcnow()}, session=session)
            result = await work(tx)
            await tx.flush()
            if tx.staged:
                await self.db.outbox.insert_many(tx.staged, session=session)
            return result

        try:
            async with self.client.start_session() as session:
                result = await session.with_transaction(callback)
        except DuplicateKeyError as exc:
            if dedupe is not None and "processed" in str(exc):
                return DUPLICATE
            raise
        if tx_holder and tx_holder[0].staged:
            self.outbox.dispatch(tx_holder[0].staged)
        return result

    async def transact_many(self, units: Sequence[Unit]) -> list[Any]:
        """Run several units of work in ONE transaction (a consumed batch): one commit, one
        ``processed`` insert and one outbox insert for all of them. Each unit keeps its own dedupe
        key: a unit already processed, or repeated within ``units``, is skipped and its result is
        ``DUPLICATE``. The units run in order, so events of one invoice apply in order. If a unit
        raises, nothing commits (the caller decides: retry, or isolate the bad one).

        The first attempt does not look the markers up: they are inserted before any unit runs, so
        a unit already processed aborts the transaction with a duplicate key before its work, and
        the next attempt looks them up and skips it. Redeliveries are rare, so most groups save
        that round trip."""
        results: list[Any] = [DUPLICATE] * len(units)
        processed = self.db.processed
        for attempt in range(5):
            keys = [u.dedupe for u in units if u.dedupe is not None]
            done: set[str] = set()
            if keys and attempt:
                done = {d["_id"] for d in await processed.find({"_id": {"$in": keys}}, projection={"_id": 1}).to_list(None)}
            todo: list[int] = []
            for index, unit in enumerate(units):
                if unit.dedupe is not None:
                    if unit.dedupe in done:
                        continue
                    done.add(unit.dedupe)
                todo.append(index)
            if not todo:
                return results
            staged: list[dict[str, Any]] = []

            async def callback(session: AsyncClientSession) -> dict[int, Any]:
                tx = Transaction(session)
                now = utcnow()
                markers = [{"_id": units[i].dedupe, "at": now} for i in todo if units[i].dedupe is not None]
                if markers:
                    await processed.insert_many(markers, session=session)
                out = {}
                for i in todo:
                    with attached(units[i].trace):
                        out[i] = await units[i].work(tx)
                await tx.flush()
                if tx.staged:
                    await self.db.outbox.insert_many(tx.staged, session=session)
                staged[:] = tx.staged
                return out

            try:
                async with self.client.start_session() as session:
                    out = await session.with_transaction(callback)
            except (DuplicateKeyError, BulkWriteError) as exc:
                if _processed_already(exc, processed.name):
                    continue  # processed before, or by another instance meanwhile: look the markers up
                raise
            if staged:
                self.outbox.dispatch(staged)
            for i, value in out.items():
                results[i] = value
            return results
        raise RuntimeError("transact_many: processed markers kept changing under this batch")

    async def transact_grouped(self, work: Callable[[Transaction], Awaitable[T]], *, dedupe: str | None = None) -> T | Duplicate:
        """:meth:`transact` with group commit, for concurrent workers: the units submitted while a
        group is committing commit together in the next transaction (:meth:`transact_many`), so N
        workers pay one commit, not N. A group that fails is retried one unit at a time, so each
        caller gets its own result or exception. Runs under the caller's trace context."""
        if not GROUP_COMMIT:
            return await self.transact(work, dedupe=dedupe)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._group.append((Unit(work, dedupe, carrier_from_current()), future))
        if not self._group_running:
            self._group_running = True
            asyncio.get_running_loop().create_task(self._commit_groups())
        return await future

    async def _commit_groups(self) -> None:
        try:
            while self._group:
                group, self._group = self._group[:GROUP_MAX], self._group[GROUP_MAX:]
                try:
                    results = await self.transact_many([unit for unit, _ in group])
                except Exception as exc:
                    if len(group) == 1:
                        _settle(group[0][1], exc=exc)
                        continue
                    for unit, future in group:  # isolate the failing unit
                        try:
                            (result,) = await self.transact_many([unit])
                            _settle(future, result)
                        except Exception as single:
                            _settle(future, exc=single)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    _settle(future, result)
        finally:
            self._group_running = False


def _processed_already(exc: DuplicateKeyError | BulkWriteError, collection: str) -> bool:
    """The duplicate key is a ``processed`` marker's (``insert_many`` reports it as a bulk write error)."""
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        return bool(errors) and errors[0].get("code") == 11000 and f".{collection} " in (errors[0].get("errmsg") or "")
    return f".{collection} " in str(exc)


def _settle(future: asyncio.Future[Any], result: Any = None, *, exc: BaseException | None = None) -> None:
    if future.done():  # the caller was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
