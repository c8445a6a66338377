"""``timbra_consumer_lag``: each batch consumer reports how far behind the log end it is on the
partitions it holds (the high watermark of its last fetch minus the next offset it will read),
and forgets partitions a rebalance took away."""

from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from timbra_shared import topics
from timbra_shared.events import InvoiceStampFailed
from timbra_shared.messaging import BatchConsumer, DeadLetters

TOPIC = topics.INVOICE_STAMP_FAILED


class Consumer:
    def __init__(self, highwater: dict[int, int]) -> None:
        self.highwaters = highwater

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp.partition)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in self.highwaters}


def record(partition: int, offset: int) -> Any:
    body = InvoiceStampFailed(invoice_id=f"inv_{partition}_{offset}", issuer_id="iss_1", message="x").model_dump_json().encode()
    return SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, key=b"k", value=body, headers=[])


def lag(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("timbra_consumer_lag", {"service": "unit-svc", "group": "unit.group", "topic": TOPIC})


async def test_lag_is_the_distance_to_the_high_watermark_and_revoked_partitions_drop_out() -> None:
    registry = CollectorRegistry()
    dead_letters = DeadLetters("unit-svc", registry)
    handled: list[str] = []

    async def handler(event: InvoiceStampFailed) -> None:
        handled.append(event.invoice_id)

    consumer = BatchConsumer(handler, TypeAdapter(InvoiceStampFailed), "unit.group", per_item=True)
    fetched = Consumer({0: 100, 1: 10})
    await consumer(SimpleNamespace(raw_message=(record(0, 40), record(0, 41), record(1, 9)), consumer=fetched, committed=None), dead_letters)
    assert lag(registry) == (100 - 42) + (10 - 10)
    fetched.highwaters = {1: 30}  # partition 0 went to another instance
    await consumer(SimpleNamespace(raw_message=(record(1, 10),), consumer=fetched, committed=None), dead_letters)
    assert lag(registry) == 30 - 11
    assert len(handled) == 4
    fetched.highwaters = {}  # every partition went elsewhere
    await consumer(SimpleNamespace(raw_message=(record(1, 11),), consumer=fetched, committed=None), dead_letters)
    assert lag(registry) == 0


async def test_a_consumer_without_offsets_still_consumes() -> None:
    registry = CollectorRegistry()
    handled: list[str] = []

    async def handler(event: InvoiceStampFailed) -> None:
        handled.append(event.invoice_id)

    consumer = BatchConsumer(handler, TypeAdapter(InvoiceStampFailed), "unit.group", per_item=True)
    await consumer(SimpleNamespace(raw_message=(record(0, 1),), consumer=object(), committed=None), DeadLetters("unit-svc", registry))
    assert handled == ["inv_0_1"] and lag(registry) is None
