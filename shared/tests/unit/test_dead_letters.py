"""The dead-letter middleware: messages that can never be processed go to ``timbra.dead_letter``
and the consumer keeps going; transient failures are retried, unknown ones a bounded number of
times.

FastStream 0.7's ``TestKafkaBroker`` does run broker middlewares (checked below by the letters
that arrive), so most of this goes through a real subscriber; the retry bookkeeping is tested on
``DeadLetters`` directly with fake message objects.
"""

import asyncio
import contextlib
import json
from types import SimpleNamespace

import pytest
from faststream.kafka import TestKafkaBroker
from prometheus_client import CollectorRegistry
from pymongo.errors import AutoReconnect, OperationFailure, PyMongoError

from timbra_shared import messaging, topics
from timbra_shared.errors import PoisonMessage, RetryLater, is_transient
from timbra_shared.events import DeadLetter, InvoiceStampFailed
from timbra_shared.messaging import MAX_UNKNOWN_ATTEMPTS, DeadLetters, make_broker, subscriber


def _event(invoice_id: str, message: str = "ok") -> bytes:
    return InvoiceStampFailed(invoice_id=invoice_id, issuer_id="iss_1", message=message).model_dump_json().encode()


@pytest.fixture
def no_backoff(monkeypatch):
    """Make the retry back-off instant (only inside timbra_shared.messaging) and record it."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(messaging, "asyncio", SimpleNamespace(sleep=sleep, TimeoutError=asyncio.TimeoutError))
    return delays


@pytest.fixture
def wired():
    registry = CollectorRegistry()
    broker, dead_letters = make_broker("localhost:9092", service="unit-svc", tracer_provider=None, registry=registry)
    handled: list[InvoiceStampFailed] = []
    letters: list[DeadLetter] = []
    failures: dict[str, Exception] = {}

    @subscriber(broker, topics.INVOICE_STAMP_FAILED, group="unit-svc.failed")
    async def on_failed(event: InvoiceStampFailed) -> None:
        if event.message in failures:
            raise failures[event.message]
        handled.append(event)

    @subscriber(broker, topics.DEAD_LETTER, group="unit-svc.letters")
    async def on_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    return SimpleNamespace(broker=broker, dead_letters=dead_letters, registry=registry, handled=handled, letters=letters, failures=failures)


async def test_malformed_body_is_dead_lettered_and_the_next_message_is_processed(wired):
    async with TestKafkaBroker(wired.broker) as broker:
        await broker.publish(b'{"invoice_id": "inv_1", oops', topics.INVOICE_STAMP_FAILED, key=b"inv_1")
        await broker.publish(_event("inv_2"), topics.INVOICE_STAMP_FAILED, key=b"inv_2")

    assert [e.invoice_id for e in wired.handled] == ["inv_2"]
    (letter,) = wired.letters
    assert letter.service == "unit-svc"
    assert letter.original_topic == topics.INVOICE_STAMP_FAILED
    assert letter.key == "inv_1"
    assert letter.payload == '{"invoice_id": "inv_1", oops'
    assert letter.error_type == "ValidationError"
    assert letter.reason
    assert wired.registry.get_sample_value("timbra_dead_letters_total", {"service": "unit-svc", "topic": topics.INVOICE_STAMP_FAILED}) == 1


async def test_well_formed_json_of_the_wrong_shape_is_dead_lettered(wired):
    async with TestKafkaBroker(wired.broker) as broker:
        await broker.publish(json.dumps({"invoice_id": "inv_1"}).encode(), topics.INVOICE_STAMP_FAILED, key=b"inv_1")
        await broker.publish(_event("inv_2"), topics.INVOICE_STAMP_FAILED, key=b"inv_2")

    (letter,) = wired.letters
    assert letter.error_type == "ValidationError"
    assert "issuer_id" in letter.reason and "message" in letter.reason
    assert [e.invoice_id for e in wired.handled] == ["inv_2"]


async def test_poison_message_from_the_handler_is_dead_lettered(wired):
    wired.failures["poison"] = PoisonMessage("la factura no tiene emisor")
    async with TestKafkaBroker(wired.broker) as broker:
        await broker.publish(_event("inv_1", "poison"), topics.INVOICE_STAMP_FAILED, key=b"inv_1", headers={"x-origin": "unit"})
        await broker.publish(_event("inv_2"), topics.INVOICE_STAMP_FAILED, key=b"inv_2")

    (letter,) = wired.letters
    assert letter.error_type == "PoisonMessage"
    assert letter.reason == "la factura no tiene emisor"
    assert letter.key == "inv_1"
    assert json.loads(letter.payload)["invoice_id"] == "inv_1"
    assert letter.headers.get("x-origin") == "unit"
    assert [e.invoice_id for e in wired.handled] == ["inv_2"]


async def test_valid_messages_never_produce_letters(wired):
    async with TestKafkaBroker(wired.broker) as broker:
        for i in range(5):
            await broker.publish(_event(f"inv_{i}"), topics.INVOICE_STAMP_FAILED, key=f"inv_{i}".encode())
    assert len(wired.handled) == 5
    assert wired.letters == []


async def test_transient_failure_is_retried_not_dead_lettered(wired, no_backoff):
    wired.failures["flaky"] = RetryLater("issuer not yet projected")
    async with TestKafkaBroker(wired.broker) as broker:
        # the batch consumer rewinds the partition for a redelivery (see test_batch_consumer.py);
        # FastStream's own consumer (TIMBRA_BATCH_CONSUME=0) gets the exception and seeks back
        with contextlib.suppress(RetryLater):
            await broker.publish(_event("inv_1", "flaky"), topics.INVOICE_STAMP_FAILED, key=b"inv_1")
    assert wired.letters == []
    assert no_backoff == [0.4]
    assert wired.registry.get_sample_value("timbra_consumer_retries_total", {"service": "unit-svc", "topic": topics.INVOICE_STAMP_FAILED, "kind": "transient"}) == 1


# --------------------------------------------------------------------------- DeadLetters directly


class FakeBroker:
    def __init__(self) -> None:
        self.published: list[tuple[bytes, str, dict]] = []

    async def publish(self, body: bytes, topic: str, **kwargs) -> None:
        self.published.append((body, topic, kwargs))


def _msg(topic="invoice.sealed", partition=3, offset=42, key=b"inv_9", body=b"{}", headers=None):
    return SimpleNamespace(raw_message=SimpleNamespace(topic=topic, partition=partition, offset=offset, key=key), body=body, headers=headers or {})


@pytest.fixture
def letters():
    dl = DeadLetters("billing", CollectorRegistry())
    dl.broker = FakeBroker()  # type: ignore[assignment]
    return dl


async def test_send_publishes_a_dead_letter_with_coordinates(letters):
    await letters.send(_msg(body=b'{"x": 1}', headers={"traceparent": b"00-abc"}), ValueError("boom"))
    ((body, topic, kwargs),) = letters.broker.published
    assert topic == topics.DEAD_LETTER
    assert kwargs["key"] == b"inv_9"
    letter = DeadLetter.model_validate_json(body)
    assert (letter.service, letter.original_topic, letter.partition, letter.offset, letter.key) == ("billing", "invoice.sealed", 3, 42, "inv_9")
    assert (letter.error_type, letter.reason, letter.payload) == ("ValueError", "boom", '{"x": 1}')
    assert letter.headers == {"traceparent": "00-abc"}


async def test_send_truncates_huge_reasons(letters):
    await letters.send(_msg(), ValueError("x" * 10_000))
    letter = DeadLetter.model_validate_json(letters.broker.published[0][0])
    assert len(letter.reason) == 4000


async def test_send_without_key(letters):
    await letters.send(_msg(key=None), PoisonMessage("p"))
    ((body, _topic, kwargs),) = letters.broker.published
    assert kwargs["key"] == b""
    assert DeadLetter.model_validate_json(body).key is None


async def test_unknown_errors_are_retried_then_dead_lettered(letters, no_backoff):
    msg = _msg()
    for attempt in range(1, MAX_UNKNOWN_ATTEMPTS):
        with pytest.raises(KeyError):
            await letters.on_failure(msg, KeyError("bug"))
        assert letters.broker.published == [], f"dead-lettered too early at attempt {attempt}"
    assert await letters.on_failure(msg, KeyError("bug")) is None
    (letter_body,) = [b for b, _t, _k in letters.broker.published]
    assert DeadLetter.model_validate_json(letter_body).error_type == "KeyError"
    assert no_backoff == [0.4, 0.8, 1.6, 3.2]


async def test_attempts_are_counted_per_message(letters, no_backoff):
    for offset in range(MAX_UNKNOWN_ATTEMPTS * 2):
        with pytest.raises(KeyError):
            await letters.on_failure(_msg(offset=offset), KeyError("bug"))
    assert letters.broker.published == []


async def test_transient_errors_are_retried_forever_with_capped_backoff(letters, no_backoff):
    msg = _msg()
    for _ in range(MAX_UNKNOWN_ATTEMPTS * 3):
        with pytest.raises(RetryLater):
            await letters.on_failure(msg, RetryLater("later"))
    assert letters.broker.published == []
    assert max(no_backoff) <= 10.0
    assert no_backoff[-1] == 10.0


async def test_dead_lettering_resets_the_attempt_counter(letters, no_backoff):
    msg = _msg()
    for _ in range(MAX_UNKNOWN_ATTEMPTS):
        try:
            await letters.on_failure(msg, KeyError("bug"))
        except KeyError:
            pass
    assert len(letters.broker.published) == 1
    with pytest.raises(KeyError):
        await letters.on_failure(msg, KeyError("bug"))
    assert len(letters.broker.published) == 1


def _labelled(label: str) -> PyMongoError:
    exc = PyMongoError("x")
    exc._add_error_label(label)
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        RetryLater("x"),
        ConnectionError("x"),
        asyncio.TimeoutError(),
        AutoReconnect("x"),
        OperationFailure("not primary", code=10107),
        _labelled("TransientTransactionError"),
        _labelled("RetryableWriteError"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_classification(exc):
    assert is_transient(exc)


def test_aiokafka_errors_are_transient():
    from aiokafka.errors import KafkaConnectionError

    assert is_transient(KafkaConnectionError("down"))


@pytest.mark.parametrize("exc", [KeyError("x"), ValueError("x"), OperationFailure("bad", code=2), PyMongoError("x")], ids=lambda e: type(e).__name__)
def test_bugs_are_not_transient(exc):
    assert not is_transient(exc)
