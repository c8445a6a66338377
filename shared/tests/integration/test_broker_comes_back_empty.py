"""A consumer group keeps consuming after the broker came back empty (the embedded tansu keeps
nothing across a restart) with the group's old offset committed to it. In the chaos run that
state came from a race: an instance committed its pre-restart position to the new broker (the
new broker's ``invoice.rendered`` partition 0 had 47 records and a committed offset of 79). tansu
answers a fetch past a partition's end with no records rather than OFFSET_OUT_OF_RANGE, so the
subscriber would wait at offset 79 for ever; ``PastEndWatch`` rewinds it.

The race is timing-dependent, so the test sets the committed offset directly. Real tansu, and
a real FastStream subscriber made by ``messaging.subscriber``."""

import asyncio
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from timbra_shared import topics
from timbra_shared.devstack.servers import create_topics, free_port, start_broker
from timbra_shared.devstack.testing import until
from timbra_shared.events import InvoiceStampFailed
from timbra_shared.messaging import PastEndWatch, make_broker, subscriber

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOPIC = topics.INVOICE_STAMP_FAILED
GROUP = "restart-test.group"
#: TIMBRA_TEST_PAST_END_WATCH_S=100000 shows the failure this guards against
WATCH_INTERVAL = float(os.environ.get("TIMBRA_TEST_PAST_END_WATCH_S", "0.5"))


async def _commit(bootstrap: str, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    consumer.assign([TopicPartition(TOPIC, 0)])
    try:
        await consumer.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(offset, "")})
        assert await consumer.committed(TopicPartition(TOPIC, 0)) == offset
    finally:
        await consumer.stop()


def _recording_subscriber(bootstrap: str) -> tuple[KafkaBroker, list[str]]:
    """A broker made as the services make theirs, with one subscriber that records what it reads."""
    broker, _ = make_broker(bootstrap, service="restart-test", tracer_provider=None, registry=CollectorRegistry())
    seen: list[str] = []

    @subscriber(broker, TOPIC, group=GROUP)
    async def on_failed(event: InvoiceStampFailed) -> None:
        seen.append(event.invoice_id)

    return broker, seen


async def test_a_subscriber_resumes_from_the_start_of_a_broker_that_came_back_empty(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    tansu = await asyncio.to_thread(start_broker, port, log_path=tmp_path / "tansu.log")
    await create_topics(bootstrap, {TOPIC: 1})
    broker, seen = _recording_subscriber(bootstrap)

    watch = PastEndWatch(broker, interval=WATCH_INTERVAL)
    task = asyncio.create_task(watch.run_forever())
    try:
        await broker.start()
        for n in range(30):
            await broker.publish(InvoiceStampFailed(invoice_id=f"inv_before_{n}", issuer_id="iss_1", message="x"), TOPIC)
        assert await until(lambda: len(seen) == 30, 60, interval=0.2), seen
        await broker.stop()

        tansu.stop(5)
        tansu = await asyncio.to_thread(start_broker, port, log_path=tmp_path / "tansu-2.log")
        await create_topics(bootstrap, {TOPIC: 1})
        await _commit(bootstrap, 30)  # the old position, committed to the empty broker

        await broker.start()
        await broker.publish(InvoiceStampFailed(invoice_id="inv_after", issuer_id="iss_1", message="x"), TOPIC)
        assert await until(lambda: "inv_after" in seen, 60, interval=0.2), "the subscriber never read the empty broker's first record"
        assert watch.rewound == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.stop()
        tansu.stop(5)


async def test_a_partition_the_broker_comes_back_with_is_consumed_too(tmp_path: Path) -> None:
    """tansu auto-creates a topic with 4 partitions when a client reaches the restarted broker before
    the platform recreates its topics (3 in the tests), so records land on a partition the group was
    never assigned. The services' metadata refresh (TIMBRA_KAFKA_METADATA_MAX_AGE_MS, 5 s) makes the
    group see it and rebalance; with aiokafka's default 5 minutes the chaos test's invoices on that
    partition stayed at ``built`` and ``stamped``."""
    from aiokafka import AIOKafkaProducer

    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    tansu = await asyncio.to_thread(start_broker, port, log_path=tmp_path / "tansu.log")
    await create_topics(bootstrap, {TOPIC: 3})
    broker, seen = _recording_subscriber(bootstrap)

    producer = None
    try:
        await broker.start()
        await broker.publish(InvoiceStampFailed(invoice_id="inv_before", issuer_id="iss_1", message="x"), TOPIC)
        assert await until(lambda: seen == ["inv_before"], 60, interval=0.2), seen
        tansu.stop(5)
        tansu = await asyncio.to_thread(start_broker, port, log_path=tmp_path / "tansu-2.log")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()
        assert await producer.partitions_for(TOPIC) == {0, 1, 2, 3}  # auto-created by this client
        for partition in (0, 3):
            body = InvoiceStampFailed(invoice_id=f"inv_p{partition}", issuer_id="iss_1", message="x").model_dump_json().encode()
            await producer.send_and_wait(TOPIC, body, partition=partition)
        assert await until(lambda: {"inv_p0", "inv_p3"} <= set(seen), 60, interval=0.2), seen
    finally:
        if producer is not None:
            await producer.stop()
        await broker.stop()
        tansu.stop(5)
