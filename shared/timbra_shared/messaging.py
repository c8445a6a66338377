"""Kafka broker set-up shared by every service: telemetry and metrics middlewares, the
dead-letter middleware, and the subscriber defaults (group per service, ``earliest``, ack after
the handler's transaction has committed)."""

import asyncio
import inspect
import json
import os
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faststream import AckPolicy, BaseMiddleware, Context
from faststream.message import AckStatus
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.kafka.message import FAKE_CONSUMER
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry import trace
from opentelemetry.trace import SpanKind, TracerProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import TypeAdapter, ValidationError

from timbra_shared import topics
from timbra_shared.errors import PoisonMessage, is_transient
from timbra_shared.events import DeadLetter
from timbra_shared.logging import get_logger
from timbra_shared.telemetry import carrier_from_current, extract

log = get_logger(__name__)

MAX_UNKNOWN_ATTEMPTS = 5
PERMANENT = (ValidationError, PoisonMessage, json.JSONDecodeError, UnicodeDecodeError)


class DeadLetters:
    """Routes messages that can never be processed to ``timbra.dead_letter`` and keeps consuming."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.broker: KafkaBroker | None = None
        self._attempts: OrderedDict[tuple[str, int, int], int] = OrderedDict()
        self._sent: OrderedDict[tuple[str, int, int, int], None] = OrderedDict()
        self.dead_lettered = Counter("timbra_dead_letters_total", "Messages sent to the dead-letter topic", ["service", "topic"], registry=registry)
        self.retries = Counter("timbra_consumer_retries_total", "Messages redelivered after a failure", ["service", "topic", "kind"], registry=registry)
        self.batch_size = Histogram("timbra_consumer_batch_size", "Events per batch handed to a batch handler", ["service", "group"],
                                    buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500), registry=registry)
        # records behind the log end on the partitions this instance holds, as of its last fetched
        # batch (FastStream exports no lag; the sum over instances is the consumer group's lag)
        self.fetch_wait = Gauge("timbra_consumer_fetch_wait_ms", "Fetch wait the pipeline's consumers use now (FetchWaitTuner)", ["service"], registry=registry)
        self.lag = Gauge("timbra_consumer_lag", "Records not yet consumed on this instance's partitions (as of its last batch)", ["service", "group", "topic"], registry=registry)

    def middleware(self) -> type[BaseMiddleware]:
        owner = self

        class DeadLetterMiddleware(BaseMiddleware):
            async def consume_scope(self, call_next: Any, msg: Any) -> Any:
                if isinstance(msg.raw_message, tuple | list):  # a batch subscriber handles its own failures
                    return await call_next(msg)
                try:
                    return await call_next(msg)
                except PERMANENT as exc:
                    await owner.send(msg, exc)
                    return None
                except Exception as exc:
                    return await owner.on_failure(msg, exc)

        return DeadLetterMiddleware

    def _coordinates(self, msg: Any) -> tuple[str, int, int]:
        raw = msg.raw_message
        return (getattr(raw, "topic", "?"), getattr(raw, "partition", -1), getattr(raw, "offset", -1))

    async def on_failure(self, msg: Any, exc: Exception) -> None:
        topic, partition, offset = where = self._coordinates(msg)
        attempts = self.attempt(where)
        transient = is_transient(exc)
        if not transient and attempts >= MAX_UNKNOWN_ATTEMPTS:
            await self.send(msg, exc)
            return None
        self.retries.labels(self.service, topic, "transient" if transient else "error").inc()
        log.warning("consumer.retry", topic=topic, partition=partition, offset=offset, attempt=attempts, error=repr(exc)[:500])
        await asyncio.sleep(min(0.2 * 2 ** min(attempts, 6), 10.0))
        raise exc

    async def send(self, msg: Any, exc: BaseException) -> None:
        raw = msg.raw_message
        body = msg.body if isinstance(msg.body, bytes) else str(msg.body).encode()
        await self._send(self._coordinates(msg), getattr(raw, "key", None), body, dict(msg.headers or {}), exc)

    async def send_record(self, record: Any, exc: BaseException) -> None:
        """Dead-letter one record of a batch (an aiokafka ``ConsumerRecord``)."""
        where = (record.topic, record.partition, record.offset)
        await self._send(where, record.key, record.value or b"", dict(record.headers or ()), exc)
        self._sent[_identity(record)] = None
        while len(self._sent) > 10_000:
            self._sent.popitem(last=False)

    def already_sent(self, record: Any) -> bool:
        """True for a record this process dead-lettered already (its batch is being redelivered)."""
        return _identity(record) in self._sent

    def attempt(self, where: tuple[str, int, int]) -> int:
        attempts = self._attempts.pop(where, 0) + 1
        self._attempts[where] = attempts
        while len(self._attempts) > 10_000:
            self._attempts.popitem(last=False)
        return attempts

    def forget(self, where: tuple[str, int, int]) -> None:
        self._attempts.pop(where, None)

    async def _send(self, where: tuple[str, int, int], key: Any, body: bytes, headers: dict[str, Any], exc: BaseException) -> None:
        topic, partition, offset = where
        letter = DeadLetter(
            service=self.service,
            original_topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode(errors="replace") if isinstance(key, bytes) else key,
            reason=str(exc)[:4000],
            error_type=type(exc).__name__,
            payload=body.decode(errors="replace"),
            headers={k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in headers.items()},
        )
        assert self.broker is not None
        await self.broker.publish(letter.model_dump_json().encode(), topics.DEAD_LETTER, key=(letter.key or "").encode(), headers={"content-type": "application/json"})
        self.dead_lettered.labels(self.service, topic).inc()
        self._attempts.pop((topic, partition, offset), None)
        log.error("consumer.dead_letter", topic=topic, offset=offset, error_type=letter.error_type, reason=letter.reason[:300])


def make_broker(
    bootstrap_servers: str,
    *,
    service: str,
    tracer_provider: TracerProvider | None,
    registry: CollectorRegistry,
) -> tuple[KafkaBroker, DeadLetters]:
    dead_letters = DeadLetters(service, registry)
    broker = KafkaBroker(
        bootstrap_servers,
        client_id=service,
        enable_idempotence=False,  # tansu cannot InitProducerId; exactly-once effects come from idempotent consumers
        linger_ms=2,
        # A topic that comes back with more partitions (tansu auto-creates 4 when a client reaches a
        # restarted, empty broker before the topics are recreated) is only consumed whole once the
        # consumers' metadata shows the new partitions: every 5 s instead of aiokafka's 5 minutes
        # (measured by test_broker_comes_back_empty.py: 5 s sees the partition in ~6 s; 10 s did not
        # within 90 s here, for reasons inside aiokafka's group coordinator we did not chase).
        metadata_max_age_ms=int(os.environ.get("TIMBRA_KAFKA_METADATA_MAX_AGE_MS", "5000")),
        middlewares=[
            KafkaTelemetryMiddleware(tracer_provider=tracer_provider),
            KafkaPrometheusMiddleware(registry=registry, app_name=service),
            dead_letters.middleware(),
        ],
        logger=None,
    )
    dead_letters.broker = broker
    _DEAD_LETTERS[id(broker)] = dead_letters
    return broker, dead_letters


_DEAD_LETTERS: dict[int, DeadLetters] = {}


# tansu answers a fetch only when its wait expires (no early wake-up on new data), so a hop costs
# about a quarter of this on average: 50 ms keeps hops near 10 ms. Apache Kafka long-polls
# properly; deployments on it can raise this (docker-compose sets 500).
FETCH_WAIT_MS = int(os.environ.get("TIMBRA_KAFKA_FETCH_WAIT_MS", "50"))
# Every consumer costs the broker a fetch per wait, busy or idle (about half of an idle platform's
# CPU was tansu answering ~40 consumers' fetches every 50 ms). Consumers of topics.BACKGROUND_TOPICS
# only, where a few hundred ms more per hop does not matter, fetch less often.
BACKGROUND_FETCH_WAIT_MS = int(os.environ.get("TIMBRA_KAFKA_BACKGROUND_FETCH_WAIT_MS", "500"))


# While a process's consumers receive at least BUSY_RECORDS_PER_S records per second, its
# short-wait consumers fetch with BUSY_FETCH_WAIT_MS instead (FetchWaitTuner): bigger batches and
# fewer empty fetches when the CPU is what limits throughput, short hops when the platform is quiet.
BUSY_FETCH_WAIT_MS = int(os.environ.get("TIMBRA_KAFKA_BUSY_FETCH_WAIT_MS", "200"))
BUSY_RECORDS_PER_S = float(os.environ.get("TIMBRA_KAFKA_BUSY_RECORDS_PER_S", "10"))


def fetch_wait_ms(topic_names: tuple[str, ...], background: bool | None = None) -> int:
    """``background``: None follows the topics; False keeps the short wait (a projection the next
    invoice reads), True takes the long one."""
    if background is None:
        background = bool(topic_names) and all(name in topics.BACKGROUND_TOPICS for name in topic_names)
    return max(FETCH_WAIT_MS, BACKGROUND_FETCH_WAIT_MS) if background else FETCH_WAIT_MS


# Consumers per single-topic subscriber in one process: each gets its share of the partitions and
# processes them in order, so independent invoices overlap their MongoDB and broker round trips.
CONSUMER_WORKERS = int(os.environ.get("TIMBRA_CONSUMER_WORKERS", "1"))


# Per-event handlers consume in batches too (one fetch, one offset commit and one pass through
# FastStream's middlewares per batch instead of per message); TIMBRA_BATCH_CONSUME=0 restores
# FastStream's message-at-a-time consumer (for comparisons).
BATCH_CONSUME = os.environ.get("TIMBRA_BATCH_CONSUME", "1") != "0"


def subscriber(router: KafkaRouter | KafkaBroker, *topic_names: str, group: str, background: bool | None = None, **options: Any) -> Any:
    """The one place that fixes the consumer defaults: at-least-once (ack after the handler has
    committed), a consumer group per subscriber so instances of a service share the work.

    A handler with one typed parameter (the event) is run by a :class:`BatchConsumer`: records
    are fetched in batches and the handler is called for each event in partition order, and the
    offsets are committed once per batch. Handlers with FastStream extras (``Context``…) or
    ``max_workers`` keep FastStream's own consumer. ``background``: see :func:`fetch_wait_ms`."""
    if len(topic_names) == 1 and CONSUMER_WORKERS > 1:
        options.setdefault("max_workers", CONSUMER_WORKERS)

    def decorator(handler: Any) -> Any:
        event_type = _event_type(handler)
        if BATCH_CONSUME and event_type is not None and options.get("max_workers", 1) <= 1:
            consumer = BatchConsumer(handler, TypeAdapter(event_type), group, per_item=True)
            _register_batch(router, topic_names, group, consumer, getattr(handler, "__name__", "handler"), None, dict(options), background)
            return handler
        return router.subscriber(
            *topic_names,
            group_id=group,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            fetch_max_wait_ms=fetch_wait_ms(topic_names, background),
            **options,
        )(handler)

    return decorator


def _event_type(handler: Any) -> Any:
    """The annotation of a handler's only parameter, or None if it has other parameters."""
    try:
        parameters = list(inspect.signature(handler).parameters.values())
        hints = typing.get_type_hints(handler, include_extras=True)
    except (TypeError, ValueError, NameError):
        return None
    if len(parameters) != 1 or parameters[0].default is not inspect.Parameter.empty or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return None
    return hints.get(parameters[0].name)


# ----------------------------------------------------------------------------- batch consumption
# A batch subscriber gets up to TIMBRA_BATCH_MAX records per fetch and hands them to one handler
# call, so a service can commit them in one MongoDB transaction and one offset commit. Delivery
# stays at-least-once: offsets are committed only after the handler returned (its transaction
# committed); a redelivered batch is made harmless by the per-event ``processed`` markers.
BATCH_MAX_RECORDS = int(os.environ.get("TIMBRA_BATCH_MAX", "100"))
# How long an idle batch consumer waits for records before looping (the fetches themselves wait
# FETCH_WAIT_MS at the broker); records already fetched are handed over at once.
BATCH_POLL_MS = int(os.environ.get("TIMBRA_BATCH_POLL_MS", "20"))

_batch_traces: ContextVar[dict[int, dict[str, str]] | None] = ContextVar("timbra_batch_traces", default=None)


def trace_of(event: object) -> dict[str, str] | None:
    """The trace context (W3C headers) under which ``event``, an item of the batch being handled,
    is processed: pass it as ``Unit(trace=...)`` so what the event causes stays in its invoice's trace."""
    traces = _batch_traces.get()
    return traces.get(id(event)) if traces else None


_batch_replays: ContextVar[dict[int, str] | None] = ContextVar("timbra_batch_replays", default=None)


def replay_of(event: object) -> str | None:
    """The dead letter an operator replayed as ``event``, an item of the batch being handled
    (its ``timbra-replay-of`` header), or None for an ordinary delivery."""
    replays = _batch_replays.get()
    return replays.get(id(event)) if replays else None


BatchHandler = Callable[[list[Any]], Awaitable[None]]


class BatchConsumer:
    """Runs a handler over one fetched batch of records, in partition order.

    - A record that cannot be parsed or validated goes to the dead-letter topic alone; the rest
      of the batch is handled.
    - A batch handler (``per_item=False``) gets every event of the batch in one call. If it fails
      transiently (MongoDB down, ``RetryLater``), the batch is rewound and retried after a
      back-off; nothing was committed. Any other failure is isolated: the events are handled again
      one at a time, so those before the bad one commit, the bad one is dead-lettered
      (``PoisonMessage``, or after ``MAX_UNKNOWN_ATTEMPTS``), and those after it carry on.
    - A per-event handler (``per_item=True``, what :func:`subscriber` registers) is called once per
      event, in order, each under its own span.
    - A rewind commits the offsets of what is done and seeks each partition back to its first
      record not done, so a retry never replays events that already took effect.
    """

    def __init__(self, handler: Callable[[Any], Awaitable[Any]], adapter: TypeAdapter[Any], group: str, *, per_item: bool) -> None:
        self.handler = handler
        self.adapter = adapter
        self.group = group
        self.per_item = per_item
        self.tracer = trace.get_tracer("timbra.consumer")
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_topics: set[str] = set()

    async def __call__(self, message: Any, dead_letters: DeadLetters) -> None:
        records = list(message.raw_message)
        self._observe_lag(message, records, dead_letters)
        done: set[int] = set()
        items: list[tuple[int, Any, Any]] = []
        for index, record in enumerate(records):
            if dead_letters.already_sent(record):
                done.add(index)
                continue
            try:
                items.append((index, record, self.adapter.validate_json(record.value or b"")))
            except PERMANENT as exc:
                await dead_letters.send_record(record, exc)
                done.add(index)
        if not items:
            return
        dead_letters.batch_size.labels(dead_letters.service, self.group).observe(len(items))
        spans, traces, replays = [], {}, {}
        for _, record, event in items:
            headers = {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v) for k, v in record.headers or ()}
            if topics.REPLAY_OF_HEADER in headers:
                replays[id(event)] = headers[topics.REPLAY_OF_HEADER]
            span = self.tracer.start_span(f"{record.topic} process", context=extract(headers), kind=SpanKind.CONSUMER, attributes={
                "messaging.system": "kafka", "messaging.destination.name": record.topic, "messaging.kafka.destination.partition": record.partition,
                "messaging.kafka.message.offset": record.offset, "messaging.consumer.group.name": self.group, "messaging.batch.message_count": len(items),
            })
            spans.append(span)
            with trace.use_span(span, end_on_exit=False):
                traces[id(event)] = carrier_from_current()
        token, replays_token = _batch_traces.set(traces), _batch_replays.set(replays)
        structlog.contextvars.unbind_contextvars("invoice_id")
        try:
            await self._handle(message, records, items, spans, done, dead_letters)
        finally:
            _batch_traces.reset(token)
            _batch_replays.reset(replays_token)
            structlog.contextvars.unbind_contextvars("invoice_id")
            for span in spans:
                span.end()

    def _observe_lag(self, message: Any, records: list[Any], dead_letters: DeadLetters) -> None:
        consumer = getattr(message, "consumer", None)
        if consumer is None or consumer is FAKE_CONSUMER or not records:
            return
        try:
            last = {(r.topic, r.partition): r.offset for r in records}
            for (topic, partition), offset in last.items():
                highwater = consumer.highwater(TopicPartition(topic, partition))
                if highwater is not None:
                    self._lag[(topic, partition)] = max(0, highwater - offset - 1)
            assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            for key in [k for k in self._lag if k not in assigned]:  # revoked in a rebalance
                del self._lag[key]
            self._lag_topics |= {t for t, _ in last}
            for topic in self._lag_topics:  # a topic whose partitions all went elsewhere reads 0
                dead_letters.lag.labels(dead_letters.service, self.group, topic).set(sum(v for (t, _), v in self._lag.items() if t == topic))
        except Exception as exc:  # metrics never stop consumption
            log.debug("consumer.lag_unavailable", group=self.group, error=repr(exc)[:200])

    async def _handle(self, message: Any, records: list[Any], items: list[tuple[int, Any, Any]], spans: list[Any], done: set[int], dead_letters: DeadLetters) -> None:
        if not self.per_item and len(items) > 1:
            try:
                await self.handler([event for _, _, event in items])
                dead_letters.forget(_where(items[0][1]))
                return
            except Exception as exc:
                if is_transient(exc):
                    await self._rewind(message, records, done, items[0][1], exc, dead_letters)
                    return
                log.warning("consumer.batch_isolating", group=self.group, size=len(items), error=repr(exc)[:300])
        for (index, record, event), span in zip(items, spans, strict=True):
            try:
                invoice_id = getattr(event, "invoice_id", None)
                if invoice_id:  # log lines name the event's invoice, never the previous event's
                    structlog.contextvars.bind_contextvars(invoice_id=invoice_id)
                else:
                    structlog.contextvars.unbind_contextvars("invoice_id")
                with trace.use_span(span, end_on_exit=False):
                    await (self.handler(event) if self.per_item else self.handler([event]))
                dead_letters.forget(_where(record))
            except PERMANENT as exc:
                await dead_letters.send_record(record, exc)
            except Exception as exc:
                if is_transient(exc) or dead_letters.attempt(_where(record)) < MAX_UNKNOWN_ATTEMPTS:
                    await self._rewind(message, records, done, record, exc, dead_letters)
                    return
                await dead_letters.send_record(record, exc)
                dead_letters.forget(_where(record))
            done.add(index)

    async def _rewind(self, message: Any, records: list[Any], done: set[int], failed: Any, exc: Exception, dead_letters: DeadLetters) -> None:
        """Retry from ``failed`` after a back-off: commit what is done, seek back to what is not."""
        where = _where(failed)
        transient = is_transient(exc)
        attempts = dead_letters.attempt(where) if transient else dead_letters._attempts.get(where, 1)
        dead_letters.retries.labels(dead_letters.service, failed.topic, "transient" if transient else "error").inc()
        log.warning("consumer.retry", topic=failed.topic, partition=failed.partition, offset=failed.offset, attempt=attempts, group=self.group, error=repr(exc)[:500])
        await asyncio.sleep(min(0.2 * 2 ** min(attempts, 6), 10.0))
        commit: dict[tuple[str, int], int] = {}
        seek: dict[tuple[str, int], int] = {}
        for index, record in enumerate(records):
            partition = (record.topic, record.partition)
            if partition in seek:
                continue
            if index in done:
                commit[partition] = record.offset + 1
            else:
                seek[partition] = record.offset
        consumer = getattr(message, "consumer", None)
        if consumer is not None and consumer is not FAKE_CONSUMER:
            if commit:
                try:
                    await consumer.commit({TopicPartition(t, p): offset for (t, p), offset in commit.items()})
                except KafkaError as error:  # a rebalance took the partition: its new owner starts from the last commit
                    log.warning("consumer.commit_failed", group=self.group, error=repr(error))
            for (t, p), offset in seek.items():
                consumer.seek(TopicPartition(t, p), offset)
        message.committed = AckStatus.NACKED  # so FastStream neither commits the batch nor seeks it back itself


def _where(record: Any) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


def _identity(record: Any) -> tuple[str, int, int, int]:
    return (record.topic, record.partition, record.offset, hash(record.value))


async def _undecoded(msg: Any) -> None:
    return None  # the batch consumer validates each record itself, so one bad record spoils nothing else


def _run_batch(consumer: BatchConsumer) -> Callable[..., Awaitable[None]]:
    async def consume(body: Any, message: Any = Context("message"), broker: Any = Context("broker")) -> None:
        dead_letters = _DEAD_LETTERS.get(id(broker))
        if dead_letters is None:  # a broker not made by make_broker (unit tests)
            dead_letters = _DEAD_LETTERS[id(broker)] = DeadLetters("unknown", CollectorRegistry())
            dead_letters.broker = broker
        await consumer(message, dead_letters)

    return consume


def _register_batch(router: KafkaRouter | KafkaBroker, topic_names: tuple[str, ...], group: str, consumer: BatchConsumer, name: str, max_records: int | None,
                    options: dict[str, Any], background: bool | None = None) -> None:
    consume = _run_batch(consumer)
    consume.__name__ = consume.__qualname__ = name
    router.subscriber(
        *topic_names,
        group_id=group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        fetch_max_wait_ms=fetch_wait_ms(topic_names, background),
        batch=True,
        max_records=max_records or BATCH_MAX_RECORDS,
        batch_timeout_ms=BATCH_POLL_MS,
        decoder=_undecoded,
        **options,
    )(consume)


def batch_subscriber(
    router: KafkaRouter | KafkaBroker,
    *topic_names: str,
    group: str,
    model: Any,
    max_records: int | None = None,
    **options: Any,
) -> Callable[[BatchHandler], BatchHandler]:
    """Like :func:`subscriber`, for a handler that takes ``list[model]`` (``model`` may be a union):
    the events of one fetch, in partition order, to be committed together."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)

    def decorator(handler: BatchHandler) -> BatchHandler:
        if BATCH_CONSUME:
            _register_batch(router, topic_names, group, BatchConsumer(handler, adapter, group, per_item=False), getattr(handler, "__name__", "batch_handler"), max_records, options)
            return handler

        async def one(event: Any) -> None:  # TIMBRA_BATCH_CONSUME=0: FastStream's consumer, batches of one
            await handler([event])

        one.__annotations__["event"] = model
        one.__name__ = one.__qualname__ = getattr(handler, "__name__", "batch_handler")
        router.subscriber(*topic_names, group_id=group, auto_offset_reset="earliest", ack_policy=AckPolicy.NACK_ON_ERROR,
                          fetch_max_wait_ms=fetch_wait_ms(topic_names), **options)(one)
        return handler

    return decorator


# ----------------------------------------------------------------------------- offsets past the end
# Kafka answers a fetch beyond a partition's end with OFFSET_OUT_OF_RANGE and the consumer resets
# to ``auto_offset_reset``. tansu answers with no records instead, so a consumer whose broker came
# back empty (the embedded broker keeps nothing) would wait at its old offset for ever, and so
# would a group that re-committed that offset to the new broker. This watch does the reset.
OFFSET_CHECK_S = float(os.environ.get("TIMBRA_OFFSET_CHECK_S", "5"))


def _consumers_of(broker: Any) -> list[Any]:
    found: list[Any] = []
    for sub in broker.subscribers:
        for consumer in getattr(sub, "consumer_subgroup", None) or [getattr(sub, "consumer", None)]:
            if consumer is not None and consumer is not FAKE_CONSUMER and consumer not in found:
                found.append(consumer)
    return found


class FetchWaitTuner:
    """Switches the fetch wait of a process's short-wait consumers between their own (quiet) and
    ``busy_ms`` (busy). The load is the growth of the highwater marks of the partitions they are
    assigned, over the last ``window_s``: busy once it reaches ``busy_rate`` records/s, quiet again
    once it has stayed below half of that for ``hold_s``. The hold is there because a stage
    receives a busy pipeline's records in waves (the one before it commits in batches), and a wait
    that flapped with each wave kept most of the short wait's cost. tansu answers an empty fetch
    only when its wait expires, so under load a longer wait means fewer fetches and bigger batches
    (one transaction and one offset commit each); on a quiet platform each hop stays within the
    short wait.

    aiokafka reads the wait from its fetcher for every request it builds, so setting it there
    takes effect from the next fetch."""

    def __init__(self, broker: Any, *, busy_ms: int = BUSY_FETCH_WAIT_MS, busy_rate: float = BUSY_RECORDS_PER_S,
                 window_s: float = 2.0, hold_s: float = 10.0, interval: float = 0.25, dead_letters: "DeadLetters | None" = None) -> None:
        self.broker = broker
        self.busy_ms = busy_ms
        self.busy_rate = busy_rate
        self.window_s = window_s
        self.hold_s = hold_s
        self.interval = interval
        self.dead_letters = dead_letters
        self.busy = False
        self._quiet_ms: dict[int, int] = {}
        self._samples: list[tuple[float, int]] = []
        self._flowing_at = float("-inf")

    def _highwaters(self, consumers: list[Any]) -> int:
        total = 0
        for consumer in consumers:
            try:
                for tp in consumer.assignment():
                    total += consumer.highwater(tp) or 0
            except Exception:  # stopped or not started yet
                continue
        return total

    def _observe(self, now: float, consumers: list[Any]) -> None:
        total = self._highwaters(consumers)
        if self._samples and total < self._samples[-1][1]:  # a rebalance, or a broker that came back empty
            self._samples.clear()
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.pop(0)

    def rate(self) -> float:
        """Records per second over (about) the last ``window_s``."""
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        return (last - first) / (t1 - t0) if t1 > t0 else 0.0

    def tune_once(self, now: float) -> bool:
        consumers = _consumers_of(self.broker)
        self._observe(now, consumers)
        recent = self.rate()
        if recent >= self.busy_rate / 2:
            self._flowing_at = now
        busy = recent >= self.busy_rate or (self.busy and now - self._flowing_at < self.hold_s)
        if busy != self.busy:
            log.info("consumer.fetch_wait", busy=busy, records_per_s=round(recent, 1), wait_ms=self.busy_ms if busy else FETCH_WAIT_MS)
        self.busy = busy
        for consumer in consumers:
            fetcher = getattr(consumer, "_fetcher", None)
            if fetcher is None:
                continue
            quiet = self._quiet_ms.setdefault(id(consumer), fetcher._fetch_max_wait_ms)
            if quiet < self.busy_ms:  # the background consumers' longer wait is left alone
                fetcher._fetch_max_wait_ms = self.busy_ms if busy else quiet
        if self.dead_letters is not None:
            self.dead_letters.fetch_wait.labels(self.dead_letters.service).set(self.busy_ms if busy else FETCH_WAIT_MS)
        return busy

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            self.tune_once(loop.time())


class PastEndWatch:
    """Rewinds to the beginning (``earliest``) every assigned partition whose position is beyond
    the broker's highwater on two checks in a row; a healthy broker never shows that."""

    def __init__(self, broker: KafkaBroker, *, interval: float = OFFSET_CHECK_S) -> None:
        self.broker = broker
        self.interval = interval
        self._suspects: set[tuple[int, TopicPartition]] = set()
        self.rewound = 0

    def consumers(self) -> list[Any]:
        return _consumers_of(self.broker)

    async def check_once(self) -> int:
        suspects: set[tuple[int, TopicPartition]] = set()
        rewound = 0
        for consumer in self.consumers():
            try:
                assigned = list(consumer.assignment())
            except Exception:  # stopped or not started yet
                continue
            for tp in assigned:
                try:
                    highwater = consumer.highwater(tp)
                    position = await asyncio.wait_for(consumer.position(tp), timeout=1)
                except Exception:  # rebalancing, or no position yet: look again next time
                    continue
                if highwater is None or position <= highwater:
                    continue
                key = (id(consumer), tp)
                if key not in self._suspects:
                    suspects.add(key)
                    continue
                log.warning("consumer.offset_past_end", topic=tp.topic, partition=tp.partition, position=position, highwater=highwater)
                await consumer.seek_to_beginning(tp)
                rewound += 1
        self._suspects = suspects
        self.rewound += rewound
        return rewound

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()
