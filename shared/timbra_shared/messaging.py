"""Kafka broker set-up shared by every service: telemetry and metrics middlewares, the
dead-letter middleware, and the subscriber defaults (group per service, ``earliest``, ack after
the handler's transaction has committed)."""

import asyncio
import json
import os
from collections import OrderedDict
from typing import Any

from faststream import AckPolicy, BaseMiddleware
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from timbra_shared import topics
from timbra_shared.errors import PoisonMessage, RetryLater
from timbra_shared.events import DeadLetter
from timbra_shared.logging import get_logger

log = get_logger(__name__)

MAX_UNKNOWN_ATTEMPTS = 5
PERMANENT = (ValidationError, PoisonMessage, json.JSONDecodeError, UnicodeDecodeError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, RetryLater | ConnectionFailure | asyncio.TimeoutError | ConnectionError):
        return True
    if isinstance(exc, PyMongoError) and (
        exc.has_error_label("TransientTransactionError") or exc.has_error_label("RetryableWriteError")
    ):
        return True
    if isinstance(exc, OperationFailure) and exc.code in {11600, 11602, 91, 189, 10107, 13435, 13436}:
        return True
    return type(exc).__module__.startswith("aiokafka")


class DeadLetters:
    """Routes messages that can never be processed to ``timbra.dead_letter`` and keeps consuming."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.broker: KafkaBroker | None = None
        self._attempts: OrderedDict[tuple[str, int, int], int] = OrderedDict()
        self.dead_lettered = Counter("timbra_dead_letters_total", "Messages sent to the dead-letter topic", ["service", "topic"], registry=registry)
        self.retries = Counter("timbra_consumer_retries_total", "Messages redelivered after a failure", ["service", "topic", "kind"], registry=registry)

    def middleware(self) -> type[BaseMiddleware]:
        owner = self

        class DeadLetterMiddleware(BaseMiddleware):
            async def consume_scope(self, call_next: Any, msg: Any) -> Any:
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
        attempts = self._attempts.pop(where, 0) + 1
        self._attempts[where] = attempts
        while len(self._attempts) > 10_000:
            self._attempts.popitem(last=False)
        transient = _is_transient(exc)
        if not transient and attempts >= MAX_UNKNOWN_ATTEMPTS:
            await self.send(msg, exc)
            return None
        self.retries.labels(self.service, topic, "transient" if transient else "error").inc()
        log.warning("consumer.retry", topic=topic, partition=partition, offset=offset, attempt=attempts, error=repr(exc)[:500])
        await asyncio.sleep(min(0.2 * 2 ** min(attempts, 6), 10.0))
        raise exc

    async def send(self, msg: Any, exc: BaseException) -> None:
        topic, partition, offset = self._coordinates(msg)
        raw = msg.raw_message
        key = getattr(raw, "key", None)
        body = msg.body if isinstance(msg.body, bytes) else str(msg.body).encode()
        letter = DeadLetter(
            service=self.service,
            original_topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode(errors="replace") if isinstance(key, bytes) else key,
            reason=str(exc)[:4000],
            error_type=type(exc).__name__,
            payload=body.decode(errors="replace"),
            headers={k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in (msg.headers or {}).items()},
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
        middlewares=[
            KafkaTelemetryMiddleware(tracer_provider=tracer_provider),
            KafkaPrometheusMiddleware(registry=registry, app_name=service),
            dead_letters.middleware(),
        ],
        logger=None,
    )
    dead_letters.broker = broker
    return broker, dead_letters


# tansu answers a fetch only when its wait expires (no early wake-up on new data), so a hop costs
# about a quarter of this on average: 50 ms keeps hops near 10 ms. Apache Kafka long-polls
# properly; deployments on it can raise this (docker-compose sets 500).
FETCH_WAIT_MS = int(os.environ.get("TIMBRA_KAFKA_FETCH_WAIT_MS", "50"))
# Consumers per single-topic subscriber in one process: each gets its share of the partitions and
# processes them in order, so independent invoices overlap their MongoDB and broker round trips.
CONSUMER_WORKERS = int(os.environ.get("TIMBRA_CONSUMER_WORKERS", "1"))


def subscriber(router: KafkaRouter | KafkaBroker, *topic_names: str, group: str, **options: Any) -> Any:
    """The one place that fixes the consumer defaults: at-least-once (ack after the handler has
    committed), a consumer group per subscriber so instances of a service share the work."""
    if len(topic_names) == 1 and CONSUMER_WORKERS > 1:
        options.setdefault("max_workers", CONSUMER_WORKERS)
    return router.subscriber(
        *topic_names,
        group_id=group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        fetch_max_wait_ms=FETCH_WAIT_MS,
        **options,
    )
