"""The batch consumer (``messaging.BatchConsumer``): what one fetched batch does with a poison
record, a failing event, a transient failure, and where the partitions are rewound to.

Driven directly with fake records and a recording consumer (FastStream's ``TestKafkaBroker`` has
no offsets to rewind); the delivery through a real broker is covered by the platform tests.
"""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faststream.message import AckStatus
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from timbra_shared import messaging, topics
from timbra_shared.errors import PoisonMessage, RetryLater
from timbra_shared.events import DeadLetter, InvoiceStampFailed
from timbra_shared.messaging import MAX_UNKNOWN_ATTEMPTS, BatchConsumer, DeadLetters, replay_of, trace_of

TOPIC = topics.INVOICE_STAMP_FAILED


def record(offset: int, invoice_id: str, *, partition: int = 0, message: str = "ok", value: bytes | None = None) -> Any:
    body = value if value is not None else InvoiceStampFailed(invoice_id=invoice_id, issuer_id="iss_1", message=message).model_dump_json().encode()
    headers = [("traceparent", f"00-{offset + 1:032x}-{offset + 1:016x}-01".encode())]
    return SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, key=invoice_id.encode(), value=body, headers=headers)


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []
        self.seeks: dict[tuple[str, int], int] = {}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append({(tp.topic, tp.partition): offset for tp, offset in offsets.items()})

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks[(tp.topic, tp.partition)] = offset


class FakeBroker:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def publish(self, body: bytes, topic: str, **kwargs: Any) -> None:
        assert topic == topics.DEAD_LETTER
        self.letters.append(DeadLetter.model_validate_json(body))


def batch(*records: Any) -> Any:
    return SimpleNamespace(raw_message=tuple(records), consumer=RecordingConsumer(), committed=None)


@pytest.fixture
def letters(monkeypatch):
    async def sleep(delay: float) -> None:
        pass

    monkeypatch.setattr(messaging, "asyncio", SimpleNamespace(sleep=sleep, TimeoutError=asyncio.TimeoutError))
    dead_letters = DeadLetters("unit-svc", CollectorRegistry())
    dead_letters.broker = FakeBroker()  # type: ignore[assignment]
    return dead_letters


class Handler:
    """A batch handler that records its calls; events whose message is in ``failures`` raise."""

    def __init__(self, failures: dict[str, Exception] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.committed: list[str] = []
        self.traces: list[str | None] = []
        self.failures = failures or {}

    async def __call__(self, events: list[InvoiceStampFailed]) -> None:
        self.calls.append([e.invoice_id for e in events])
        for event in events:
            if event.message in self.failures:
                raise self.failures[event.message]
        self.committed += [e.invoice_id for e in events]
        self.traces += [(trace_of(e) or {}).get("traceparent") for e in events]


def consumer(handler: Any, *, per_item: bool = False) -> BatchConsumer:
    return BatchConsumer(handler, TypeAdapter(InvoiceStampFailed), "unit-svc.failed", per_item=per_item)


async def test_a_batch_reaches_the_handler_in_one_call_and_is_committed_by_faststream(letters):
    handler = Handler()
    message = batch(record(0, "inv_0"), record(1, "inv_1"), record(0, "inv_2", partition=1))
    await consumer(handler)(message, letters)
    assert handler.calls == [["inv_0", "inv_1", "inv_2"]]
    assert message.committed is None  # FastStream acks it: one offset commit for the batch
    assert letters.broker.letters == []


async def test_each_event_keeps_its_own_trace(letters):
    handler = Handler()
    await consumer(handler)(batch(record(0, "inv_0"), record(1, "inv_1")), letters)
    trace_ids = [tp.split("-")[1] for tp in handler.traces]
    assert trace_ids == [f"{1:032x}", f"{2:032x}"]  # the trace of each record's headers, not the batch's


async def test_each_event_says_whether_an_operator_replayed_it(letters):
    seen: dict[str, str | None] = {}

    async def handler(events: list[InvoiceStampFailed]) -> None:
        seen.update({e.invoice_id: replay_of(e) for e in events})

    replayed = record(1, "inv_1")
    replayed.headers = [*replayed.headers, (topics.REPLAY_OF_HEADER, b"dl_42")]
    await consumer(handler)(batch(record(0, "inv_0"), replayed), letters)
    assert seen == {"inv_0": None, "inv_1": "dl_42"}
    assert replay_of(InvoiceStampFailed(invoice_id="inv_1", issuer_id="iss_1", message="ok")) is None  # outside a batch


async def test_a_poison_record_in_a_batch_is_dead_lettered_alone(letters):
    handler = Handler()
    message = batch(record(0, "inv_0"), record(1, "inv_1", value=b'{"invoice_id": "inv_1", oops'), record(2, "inv_2"))
    await consumer(handler)(message, letters)
    assert handler.calls == [["inv_0", "inv_2"]]
    (letter,) = letters.broker.letters
    assert (letter.original_topic, letter.offset, letter.key, letter.error_type) == (TOPIC, 1, "inv_1", "ValidationError")
    assert message.committed is None


async def test_a_redelivered_batch_does_not_dead_letter_the_same_record_twice(letters):
    handler = Handler()
    records = (record(0, "inv_0"), record(1, "bad", value=b"not json"))
    await consumer(handler)(batch(*records), letters)
    await consumer(handler)(batch(*records), letters)
    assert len(letters.broker.letters) == 1


async def test_an_event_the_handler_refuses_is_isolated_and_the_rest_commit(letters):
    handler = Handler({"poison": PoisonMessage("la factura no tiene emisor")})
    message = batch(record(0, "inv_0"), record(1, "inv_1", message="poison"), record(2, "inv_2"))
    await consumer(handler)(message, letters)
    # the batch call failed as a whole, then each event alone: the bad one goes to the dead letters
    assert handler.calls == [["inv_0", "inv_1", "inv_2"], ["inv_0"], ["inv_1"], ["inv_2"]]
    assert handler.committed == ["inv_0", "inv_2"]
    (letter,) = letters.broker.letters
    assert (letter.offset, letter.error_type, letter.reason) == (1, "PoisonMessage", "la factura no tiene emisor")
    assert message.committed is None


async def test_a_transient_failure_rewinds_the_whole_batch(letters):
    handler = Handler({"flaky": RetryLater("mongod no responde")})
    message = batch(record(5, "inv_5"), record(6, "inv_6", message="flaky"), record(9, "inv_9", partition=2))
    await consumer(handler)(message, letters)
    assert handler.calls == [["inv_5", "inv_6", "inv_9"]]  # no isolation: nothing committed, retry it all
    assert message.consumer.seeks == {(TOPIC, 0): 5, (TOPIC, 2): 9}
    assert message.consumer.commits == []
    assert message.committed == AckStatus.NACKED
    assert letters.broker.letters == []
    assert letters.retries.labels("unit-svc", TOPIC, "transient")._value.get() == 1


async def test_partial_failure_commits_what_is_done_and_rewinds_to_the_failed_event(letters):
    message = batch(record(0, "inv_0"), record(1, "inv_1", message="flaky"), record(2, "inv_2"), record(7, "inv_7", partition=1))
    per_event = Handler({"flaky": RetryLater("later")})

    async def one(event: InvoiceStampFailed) -> None:
        await per_event([event])

    await consumer(one, per_item=True)(message, letters)
    assert per_event.committed == ["inv_0"]
    assert message.consumer.commits == [{(TOPIC, 0): 1}]  # inv_0 took effect: never replayed
    assert message.consumer.seeks == {(TOPIC, 0): 1, (TOPIC, 1): 7}  # inv_7 (after the failure) waits too
    assert message.committed == AckStatus.NACKED


async def test_an_unknown_error_is_retried_then_dead_lettered_and_the_batch_goes_on(letters):
    handler = Handler({"bug": KeyError("summary")})
    records = (record(0, "inv_0"), record(1, "inv_1", message="bug"), record(2, "inv_2"))
    for attempt in range(1, MAX_UNKNOWN_ATTEMPTS):
        message = batch(*(records if attempt == 1 else records[1:]))  # redelivered from the rewind
        await consumer(handler)(message, letters)
        assert message.committed == AckStatus.NACKED, f"attempt {attempt}"
        assert message.consumer.seeks == {(TOPIC, 0): 1}
        assert letters.broker.letters == []
    assert message.consumer.commits == []  # nothing before inv_1 in the redelivered batches
    message = batch(*records[1:])
    await consumer(handler)(message, letters)
    (letter,) = letters.broker.letters
    assert (letter.offset, letter.error_type) == (1, "KeyError")
    assert message.committed is None
    assert handler.committed == ["inv_0", "inv_2"]


async def test_a_duplicate_in_a_batch_reaches_the_handler_in_order(letters):
    """Dedupe is the handler's (``Store.transact_many``): the consumer hands both over, in order."""
    handler = Handler()
    await consumer(handler)(batch(record(0, "inv_0"), record(1, "inv_0"), record(2, "inv_1")), letters)
    assert handler.calls == [["inv_0", "inv_0", "inv_1"]]
