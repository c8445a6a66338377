"""The unit of work and the outbox relay against a real mongod (replica set) and a real
Kafka-protocol broker (tansu): state, dedupe marker and events commit together or not at all,
and every committed event reaches the broker, with its trace context."""

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.sdk.trace import TracerProvider

from timbra_shared import topics
from timbra_shared.devstack.servers import create_topics, free_port, mongo_url, start_broker, start_mongo
from timbra_shared.events import InvoiceEmailed
from timbra_shared.ids import new_id, utcnow
from timbra_shared.mongo import DUPLICATE, Store, make_client
from timbra_shared.outbox import Outbox, outbox_document
from timbra_shared.telemetry import carrier_from_current

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder: Path = tmp_path_factory.mktemp("servers")
    mongo_port, kafka_port = free_port(), free_port()
    mongo = await start_mongo(folder / "mongo", mongo_port, log_path=folder / "mongod.log")
    broker = await asyncio.to_thread(start_broker, kafka_port, log_path=folder / "tansu.log")
    bootstrap = f"127.0.0.1:{kafka_port}"
    await create_topics(bootstrap, {topics.INVOICE_EMAILED: 3})
    try:
        yield mongo_url(mongo_port), bootstrap
    finally:
        broker.stop(5)
        mongo.stop(10)


@pytest_asyncio.fixture(loop_scope="module")
async def wired(servers):  # noqa: ANN001, ANN201
    url, bootstrap = servers
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()

    async def publish(topic: str, payload: bytes, key: bytes, headers: dict[str, str]) -> None:
        # In the services FastStream's telemetry middleware injects the current context; do the same here.
        headers = {**headers, **carrier_from_current()}
        await producer.send_and_wait(topic, payload, key=key, headers=[(k, v.encode()) for k, v in headers.items()])

    client = make_client(url)
    outbox = Outbox(None, publish, poll_interval=0.2, orphan_after=0.5)
    store = Store(client, f"test_{new_id()}", outbox)
    outbox.bind(store.db.outbox)
    await store.ensure_indexes()
    await outbox.start()
    try:
        yield store, bootstrap
    finally:
        await outbox.stop()
        await producer.stop()
        await client.close()


async def _consume(bootstrap: str, want: set[str], timeout: float = 15) -> dict[str, tuple[dict, dict]]:
    consumer = AIOKafkaConsumer(topics.INVOICE_EMAILED, bootstrap_servers=bootstrap, group_id=new_id(), auto_offset_reset="earliest")
    await consumer.start()
    seen: dict[str, tuple[dict, dict]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not want <= set(seen):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    body = json.loads(record.value)
                    if body["invoice_id"] in want:
                        seen.setdefault(body["invoice_id"], (body, {k: v.decode() for k, v in record.headers}))
    finally:
        await consumer.stop()
    return seen


def _event(invoice_id: str) -> InvoiceEmailed:
    return InvoiceEmailed(invoice_id=invoice_id, issuer_id="iss_test", recipients=["a@example.com"])


async def test_state_marker_and_event_commit_together_and_reach_the_broker(wired) -> None:
    store, bootstrap = wired
    invoice_id = new_id("inv_")
    tracer = TracerProvider().get_tracer("test")

    async def work(tx):  # noqa: ANN001, ANN202
        await store.db.things.insert_one({"_id": invoice_id}, session=tx.session)
        tx.emit(_event(invoice_id))
        return "done"

    with tracer.start_as_current_span("handler") as span:
        assert await store.transact(work, dedupe=f"test:{invoice_id}") == "done"
        trace_id = format(span.get_span_context().trace_id, "032x")

    assert await store.db.things.count_documents({"_id": invoice_id}) == 1
    assert await store.db.processed.count_documents({"_id": f"test:{invoice_id}"}) == 1
    seen = await _consume(bootstrap, {invoice_id})
    body, headers = seen[invoice_id]
    assert body["event_type"] == "invoice.emailed"
    assert trace_id in headers.get("traceparent", ""), headers
    doc = await store.db.outbox.find_one({"invoice_id": invoice_id})
    assert doc["sent_at"] is not None


async def test_failed_work_leaves_no_state_no_marker_and_no_event(wired) -> None:
    store, _ = wired
    invoice_id = new_id("inv_")

    async def work(tx):  # noqa: ANN001, ANN202
        await store.db.things.insert_one({"_id": invoice_id}, session=tx.session)
        tx.emit(_event(invoice_id))
        raise RuntimeError("boom after writing")

    with pytest.raises(RuntimeError):
        await store.transact(work, dedupe=f"test:{invoice_id}")
    assert await store.db.things.count_documents({"_id": invoice_id}) == 0
    assert await store.db.processed.count_documents({"_id": f"test:{invoice_id}"}) == 0
    assert await store.db.outbox.count_documents({"invoice_id": invoice_id}) == 0


async def test_a_redelivered_event_has_no_second_effect(wired) -> None:
    store, _ = wired
    invoice_id = new_id("inv_")
    runs = []

    async def work(tx):  # noqa: ANN001, ANN202
        runs.append(1)
        await store.db.counters.update_one({"_id": invoice_id}, {"$inc": {"n": 1}}, upsert=True, session=tx.session)
        tx.emit(_event(invoice_id))

    first = await store.transact(work, dedupe=f"test:{invoice_id}")
    results = await asyncio.gather(*(store.transact(work, dedupe=f"test:{invoice_id}") for _ in range(5)))
    assert first is None and all(r is DUPLICATE for r in results)
    assert (await store.db.counters.find_one({"_id": invoice_id}))["n"] == 1
    assert await store.db.outbox.count_documents({"invoice_id": invoice_id}) == 1


async def test_orphaned_unsent_events_are_published_by_the_poller(wired) -> None:
    store, bootstrap = wired
    invoice_id = new_id("inv_")
    doc = outbox_document(_event(invoice_id))
    doc["created_at"] = utcnow() - timedelta(seconds=5)
    await store.db.outbox.insert_one(doc)  # as if the process died between commit and publish
    seen = await _consume(bootstrap, {invoice_id})
    assert invoice_id in seen
    assert (await store.db.outbox.find_one({"_id": doc["_id"]}))["sent_at"] is not None


async def _copies(bootstrap: str, invoice_id: str, at_least: int, settle: float = 1.5) -> int:
    """How many copies of the invoice's event the topic holds, read from the start once at least
    ``at_least`` are there and nothing new came for ``settle`` seconds."""
    consumer = AIOKafkaConsumer(topics.INVOICE_EMAILED, bootstrap_servers=bootstrap, group_id=new_id(), auto_offset_reset="earliest")
    await consumer.start()
    copies, quiet_since = 0, None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    try:
        while loop.time() < deadline:
            found = sum(1 for records in (await consumer.getmany(timeout_ms=300)).values() for r in records if json.loads(r.value)["invoice_id"] == invoice_id)
            copies += found
            if found or copies < at_least:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= settle:
                break
    finally:
        await consumer.stop()
    return copies


async def test_requeue_publishes_an_invoice_s_events_again(wired) -> None:
    store, bootstrap = wired
    invoice_id = new_id("inv_")

    async def work(tx):  # noqa: ANN001, ANN202
        tx.emit(_event(invoice_id))

    await store.transact(work)
    # at least once: on a slow machine the poller may also have sent it while the fast path was still at it
    before = await _copies(bootstrap, invoice_id, at_least=1)
    assert await store.outbox.requeue(invoice_id) == 1
    assert await _copies(bootstrap, invoice_id, at_least=before + 1) == before + 1
