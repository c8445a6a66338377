"""``Store.transact_many`` and ``Store.transact_grouped`` against the platform's real mongod: a
batch commits as one transaction, each unit keeps its own dedupe, a failing unit takes nothing
with it that it should not, each emitted event keeps its own trace, and the writes units stage
(``Transaction.write``) go in one bulk write per collection."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient, InsertOne, UpdateOne, monitoring
from pymongo.errors import BulkWriteError

from timbra_shared.events import InvoiceBuilt, InvoiceSummary
from timbra_shared.ids import new_id
from timbra_shared.mongo import DUPLICATE, Store, Transaction, Unit, make_client
from timbra_shared.outbox import Outbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SUMMARY = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="XAXX010101000", nombre_receptor="PUBLICO EN GENERAL", total=Decimal("1"))


@pytest_asyncio.fixture(loop_scope="session")
async def store(platform) -> AsyncIterator[Store]:
    client = make_client(platform.mongodb_url)

    async def publish(topic: str, payload: bytes, key: bytes, headers: dict[str, str]) -> None:
        pass

    outbox = Outbox(None, publish)
    db_name = f"timbra_test_batch_{new_id().lower()}"
    s = Store(client, db_name, outbox)
    outbox.bind(s.db.outbox)
    yield s
    await client.drop_database(db_name)
    await client.close()


def unit(store: Store, invoice_id: str, *, fail: bool = False, trace: dict[str, str] | None = None) -> Unit:
    async def work(tx: Transaction) -> str:
        await store.db.things.update_one({"_id": invoice_id}, {"$inc": {"applied": 1}}, upsert=True, session=tx.session)
        if fail:
            raise KeyError("bug")
        tx.emit(InvoiceBuilt(invoice_id=invoice_id, issuer_id="iss_1", summary=SUMMARY, xml="<x/>"))
        return invoice_id

    return Unit(work, dedupe=f"invoice.requested:{invoice_id}", trace=trace)


async def test_one_transaction_with_dedupe_per_unit(store):
    first = await store.transact_many([unit(store, "inv_a")])
    assert first == ["inv_a"]
    results = await store.transact_many([unit(store, "inv_a"), unit(store, "inv_b"), unit(store, "inv_b"), unit(store, "inv_c")])
    assert results == [DUPLICATE, "inv_b", DUPLICATE, "inv_c"]  # processed before, then repeated within the batch
    applied = {d["_id"]: d["applied"] for d in await store.db.things.find().to_list(None)}
    assert applied == {"inv_a": 1, "inv_b": 1, "inv_c": 1}
    assert sorted(d["invoice_id"] for d in await store.db.outbox.find().to_list(None)) == ["inv_a", "inv_b", "inv_c"]
    assert await store.db.processed.count_documents({}) == 3


async def test_a_failing_unit_commits_nothing_of_the_batch(store):
    with pytest.raises(KeyError):
        await store.transact_many([unit(store, "inv_a"), unit(store, "inv_b", fail=True), unit(store, "inv_c")])
    assert await store.db.things.count_documents({}) == 0
    assert await store.db.outbox.count_documents({}) == 0
    assert await store.db.processed.count_documents({}) == 0


async def test_each_event_carries_its_units_trace(store):
    traces = {f"inv_{n}": {"traceparent": f"00-{n + 1:032x}-{n + 1:016x}-01"} for n in range(3)}
    await store.transact_many([unit(store, invoice_id, trace=trace) for invoice_id, trace in traces.items()])
    stored = {d["invoice_id"]: d["trace"] for d in await store.db.outbox.find().to_list(None)}
    assert stored == traces


async def test_group_commit_batches_concurrent_callers_and_isolates_a_failure(store, monkeypatch):
    sizes: list[int] = []
    original = store.transact_many

    async def counting(units):  # noqa: ANN001, ANN202
        sizes.append(len(units))
        return await original(units)

    monkeypatch.setattr(store, "transact_many", counting)

    async def call(n: int) -> str:
        u = unit(store, f"inv_{n}", fail=n == 7)
        return await store.transact_grouped(u.work, dedupe=u.dedupe)

    results = await asyncio.gather(*(call(n) for n in range(20)), return_exceptions=True)
    assert isinstance(results[7], KeyError)
    assert [r for n, r in enumerate(results) if n != 7] == [f"inv_{n}" for n in range(20) if n != 7]
    assert await store.db.things.count_documents({}) == 19
    assert await store.db.outbox.count_documents({}) == 19
    assert max(sizes) > 1, sizes  # callers shared a transaction
    again = await store.transact_grouped(unit(store, "inv_3").work, dedupe="invoice.requested:inv_3")
    assert again is DUPLICATE


class CommandLog(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[tuple[str, str, int]] = []  # (command, collection, documents or updates)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in ("insert", "update"):
            self.commands.append((name, event.command[name], len(event.command.get("documents", event.command.get("updates", [])))))
        elif name == "find":
            self.commands.append((name, event.command[name], 0))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def staged_unit(store: Store, invoice_id: str) -> Unit:
    async def work(tx: Transaction) -> str:
        tx.write(store.db.stamps, InsertOne({"_id": invoice_id, "uuid": f"uuid-{invoice_id}"}))
        tx.write(store.db.jobs, UpdateOne({"_id": invoice_id}, {"$set": {"state": "stamped"}}))
        tx.emit(InvoiceBuilt(invoice_id=invoice_id, issuer_id="iss_1", summary=SUMMARY, xml="<x/>"))
        return invoice_id

    return Unit(work, dedupe=f"invoice.funded:{invoice_id}")


@asynccontextmanager
async def listened_store(platform) -> AsyncIterator[tuple[Store, CommandLog]]:  # noqa: ANN001
    """A store on its own database whose client records the commands it sends."""
    commands = CommandLog()
    client = AsyncMongoClient(platform.mongodb_url, tz_aware=True, event_listeners=[commands])
    db_name = f"timbra_test_listened_{new_id().lower()}"

    async def publish(topic: str, payload: bytes, key: bytes, headers: dict[str, str]) -> None:
        pass

    try:
        yield Store(client, db_name, Outbox(None, publish)), commands
    finally:
        await client.drop_database(db_name)
        await client.close()


async def test_staged_writes_of_a_group_go_in_one_bulk_write_per_collection(platform):
    async with listened_store(platform) as (store, commands):
        ids = [f"inv_{n}" for n in range(12)]
        await store.db.jobs.insert_many([{"_id": i, "state": "pending"} for i in ids])
        commands.commands.clear()

        assert await store.transact_many([staged_unit(store, i) for i in ids]) == ids

        writes = [c for c in commands.commands if c[1] in ("stamps", "jobs")]
        assert writes == [("insert", "stamps", 12), ("update", "jobs", 12)]  # not 24 round trips
        assert {d["_id"] async for d in store.db.stamps.find()} == set(ids)
        assert await store.db.jobs.count_documents({"state": "stamped"}) == 12
        assert await store.db.outbox.count_documents({}) == 12


async def test_markers_are_looked_up_only_after_a_group_met_a_processed_one(platform):
    ran: list[str] = []

    def counted(invoice_id: str) -> Unit:
        async def work(tx: Transaction) -> str:
            ran.append(invoice_id)
            tx.emit(InvoiceBuilt(invoice_id=invoice_id, issuer_id="iss_1", summary=SUMMARY, xml="<x/>"))
            return invoice_id

        return Unit(work, dedupe=f"invoice.requested:{invoice_id}")

    async with listened_store(platform) as (store, commands):
        assert await store.transact_many([counted("inv_a"), counted("inv_b")]) == ["inv_a", "inv_b"]
        assert [c for c in commands.commands if c[1] == "processed"] == [("insert", "processed", 2)]  # no lookup first

        commands.commands.clear()
        ran.clear()
        assert await store.transact_many([counted("inv_c"), counted("inv_b"), counted("inv_d")]) == ["inv_c", DUPLICATE, "inv_d"]
        assert [c for c in commands.commands if c[1] == "processed"] == [("insert", "processed", 3), ("find", "processed", 0), ("insert", "processed", 2)]
        assert ran == ["inv_c", "inv_d"]  # the markers go in before any work: the attempt that met inv_b ran nothing
        assert sorted(d["invoice_id"] for d in await store.db.outbox.find().to_list(None)) == ["inv_a", "inv_b", "inv_c", "inv_d"]


async def test_a_staged_write_that_fails_at_commit_takes_the_whole_group_back(store):
    await store.db.stamps.create_index("uuid", unique=True)
    await store.db.stamps.insert_one({"_id": "older", "uuid": "uuid-inv_b"})  # inv_b's UUID is taken

    with pytest.raises(BulkWriteError):
        await store.transact_many([staged_unit(store, "inv_a"), staged_unit(store, "inv_b")])
    assert await store.db.stamps.count_documents({}) == 1
    assert await store.db.outbox.count_documents({}) == 0
    assert await store.db.processed.count_documents({}) == 0

    # grouped callers: the group fails at commit, then each unit is retried alone with its own outcome
    a, b = await asyncio.gather(*(store.transact_grouped(staged_unit(store, i).work, dedupe=f"invoice.funded:{i}") for i in ("inv_a", "inv_b")),
                                return_exceptions=True)
    assert a == "inv_a" and isinstance(b, BulkWriteError)
    assert sorted(d["_id"] for d in await store.db.stamps.find().to_list(None)) == ["inv_a", "older"]
    assert [d["invoice_id"] for d in await store.db.outbox.find().to_list(None)] == ["inv_a"]
