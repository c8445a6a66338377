"""MongoDB access: the client, and a unit of work that commits state, an idempotency marker and
outbox events in one transaction (ARCHITECTURE rule 2)."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from timbra_shared.ids import utcnow
from timbra_shared.outbox import KEEP_SENT, Outbox, outbox_document

T = TypeVar("T")


class Duplicate:
    """Returned by :meth:`Store.transact` when the dedupe key was already processed."""

    def __repr__(self) -> str:
        return "DUPLICATE"


DUPLICATE = Duplicate()


def make_client(url: str) -> AsyncMongoClient:
    return AsyncMongoClient(url, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=3000, appname="timbra")


class Transaction:
    """Handed to a unit of work: the session to write with, and ``emit`` to stage an event."""

    def __init__(self, session: AsyncClientSession) -> None:
        self.session = session
        self.staged: list[dict[str, Any]] = []

    def emit(self, event: BaseModel, *, key: str | None = None) -> None:
        self.staged.append(outbox_document(event, key=key))


class Store:
    """A service's own database, with its ``processed`` (inbox) and ``outbox`` collections."""

    def __init__(self, client: AsyncMongoClient, db_name: str, outbox: Outbox) -> None:
        self.client = client
        self.db: AsyncDatabase = client[db_name]
        self.outbox = outbox

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
