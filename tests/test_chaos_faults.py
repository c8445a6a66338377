"""Chaos with traffic flowing, on a platform of its own (module-scoped): mongod stopped for 20
seconds, the SMTP server down for 30 seconds, and a poison message (malformed JSON and a payload
that breaks the contract) on every topic. Afterwards every invoice is emailed exactly once with
one UUID, the PAC stamped each once, each mail arrived once, and the credit ledger balances."""

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from timbra_shared import topics
from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.chaos import Traffic, assert_exactly_once, mails_per_invoice, pac_stamp_count
from timbra_shared.devstack.platform import SERVICES
from timbra_shared.devstack.scenario import TimbraClient
from timbra_shared.ids import new_id
from timbra_shared.mongo import make_client

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]

ENV = {
    "TIMBRA_STUCK_AFTER": "6", "TIMBRA_SWEEP_INTERVAL": "1", "TIMBRA_OUTBOX_POLL": "0.5",
    "TIMBRA_EMAIL_RETRY_BASE": "1",  # SMTP outage: retries at 1, 2, 4, 8 … s
}

# Who consumes each topic (every consumer group of these services must dead-letter a poison
# message and go on).
CONSUMERS: dict[str, set[str]] = {
    topics.INVOICE_REQUESTED: {"cfdi-builder", "cancellation", "notifier"},
    topics.INVOICE_BUILT: {"issuer-profile", "cfdi-builder", "notifier"},
    topics.INVOICE_SEALED: {"billing", "cfdi-builder", "notifier"},
    topics.INVOICE_FUNDED: {"stamping", "cfdi-builder", "notifier"},
    topics.INVOICE_REJECTED: {"cancellation", "catalog", "cfdi-builder", "notifier"},
    topics.INVOICE_STAMPED: {"billing", "cancellation", "catalog", "cfdi-builder", "notifier"},
    topics.INVOICE_STAMP_FAILED: {"billing", "cancellation", "catalog", "cfdi-builder", "notifier"},
    topics.INVOICE_RENDERED: {"cfdi-builder", "notifier"},
    topics.INVOICE_EMAILED: {"cfdi-builder", "notifier"},
    topics.INVOICE_REDRIVE: set(SERVICES),
    topics.CANCELLATION_REQUESTED: {"cancellation", "notifier"},
    topics.CANCELLATION_PENDING: {"cfdi-builder", "notifier"},
    topics.CANCELLATION_ACCEPTED: {"cfdi-builder", "notifier"},
    topics.CANCELLATION_REJECTED: {"cfdi-builder", "notifier"},
    topics.CANCELLATION_COMPLETED: {"catalog", "cfdi-builder", "notifier"},
    topics.CANCELLATION_ESCALATED: {"cfdi-builder"},
    topics.ISSUER_PROFILE: {"billing", "cancellation", "catalog", "cfdi-builder", "notifier"},
    topics.NOTIFICATION_REQUESTED: {"notifier"},
    topics.CATALOG_CUSTOMERS: {"cfdi-builder"},
    topics.CATALOG_PRODUCTS: {"cfdi-builder"},
    topics.CATALOG_TICKETS: {"cfdi-builder"},
    topics.POS_TICKETS: {"catalog"},
    # the operator console's projection (cfdi-builder) reads the dead letters themselves
    topics.DEAD_LETTER: {"cfdi-builder"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    config = PlatformConfig.for_tests(tmp_path_factory.mktemp("chaos-faults"), extra_env=ENV)
    async with Platform(config) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(platform: Platform) -> AsyncIterator[TimbraClient]:
    async with TimbraClient(platform.url("ingress"), platform.admin_key, timeout=30) as api:
        yield api


def _pids(platform: Platform) -> dict[str, int | None]:
    return {name: platform.pid(name) for name in (*SERVICES, "ingress")}


def _started_between(traffic: Traffic, start: float, end: float) -> int:
    return sum(1 for t in traffic.started_at if start <= t <= end)


async def test_mongod_stopped_for_20_seconds(client, platform) -> None:
    credits = 300
    issuer = await client.onboard(rfc="MON010101AA1", legal_name="MONGO CAIDO", tax_regime="601", zip_code="06000", credits=credits)
    stamps_before, pids = await pac_stamp_count(platform), _pids(platform)
    traffic = Traffic(client, issuer, new_id(), rate=3).start()
    await asyncio.sleep(6)
    await platform.stop_mongo()
    down = time.monotonic()
    await asyncio.sleep(20)
    await platform.start_mongo()
    up = time.monotonic()
    await asyncio.sleep(8)
    ids = await traffic.stop()
    assert _started_between(traffic, down, up) >= 30, "requests must keep arriving while mongod is down"
    await assert_exactly_once(client, platform, issuer, ids, stamps_before=stamps_before, credits=credits)
    assert _pids(platform) == pids, "a process died (or was restarted) during the outage"


async def test_smtp_down_every_email_is_delivered_once_when_it_is_back(client, platform) -> None:
    credits = 300
    issuer = await client.onboard(rfc="SMT010101AA1", legal_name="CORREO CAIDO", tax_regime="601", zip_code="06000", credits=credits)
    stamps_before, pids = await pac_stamp_count(platform), _pids(platform)
    traffic = Traffic(client, issuer, new_id(), rate=3).start()
    await asyncio.sleep(5)
    await platform.kill_service("smtp-sink")
    await asyncio.sleep(30)
    # nothing of what was posted during the outage could have been delivered yet
    in_flight = list(traffic.ids.values())
    await platform.restart_service("smtp-sink")
    await asyncio.sleep(5)
    ids = await traffic.stop()
    await assert_exactly_once(client, platform, issuer, ids, stamps_before=stamps_before, credits=credits)
    mongo = make_client(platform.mongodb_url)
    try:
        retried = await mongo["timbra_notifier"].emails.count_documents({"_id": {"$in": in_flight}, "attempts": {"$gt": 1}})
    finally:
        await mongo.close()
    assert retried >= 10, f"only {retried} deliveries needed a retry: the outage did not bite"
    assert _pids(platform) == pids, "a process died (or was restarted) during the outage"


def _poison(tag: str, topic: str) -> dict[str, bytes]:
    return {
        "malformed": f'{{"poison": "{tag}:malformed:{topic}", "event_type": '.encode(),
        # valid JSON, but no contract accepts it: unknown event type, no invoice or issuer
        "invalid": json.dumps({"poison": f"{tag}:invalid:{topic}", "event_type": "poison.pill", "event_id": 42, "invoice_id": None}).encode(),
    }


async def _dead_letters(bootstrap: str, tag: str, wanted: set[tuple[str, str, str]], timeout: float) -> set[tuple[str, str, str]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    seen: set[tuple[str, str, str]] = set()
    try:
        partitions = [TopicPartition(topics.DEAD_LETTER, p) for p in consumer.partitions_for_topic(topics.DEAD_LETTER) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while not wanted <= seen and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        letter = json.loads(record.value)
                    except ValueError:  # our own poison on timbra.dead_letter itself
                        continue
                    if isinstance(letter, dict) and letter.get("event_type") == "dead_letter" and f'"{tag}:' in letter["payload"]:
                        kind, topic = letter["payload"].split(f"{tag}:", 1)[1].split(":", 1)
                        seen.add((topic.split('"', 1)[0], kind, letter["service"]))
    finally:
        await consumer.stop()
    return seen


async def test_a_poison_message_on_every_topic_is_dead_lettered_and_traffic_keeps_flowing(client, platform) -> None:
    assert set(CONSUMERS) == set(topics.ALL_TOPICS), "a new topic: say who consumes it"
    credits = 200
    issuer = await client.onboard(rfc="POI010101AA1", legal_name="MENSAJES VENENOSOS", tax_regime="601", zip_code="06000", credits=credits)
    stamps_before, pids = await pac_stamp_count(platform), _pids(platform)
    traffic = Traffic(client, issuer, new_id(), rate=3).start()
    await asyncio.sleep(4)
    tag = new_id()
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for topic in topics.ALL_TOPICS:
            for body in _poison(tag, topic).values():
                for partition in sorted(await producer.partitions_for(topic)):  # every partition's consumer
                    await producer.send_and_wait(topic, body, key=f"poison-{tag}".encode(), partition=partition)
    finally:
        await producer.stop()
    await asyncio.sleep(12)
    ids = await traffic.stop()

    wanted = {(topic, kind, service) for topic, services in CONSUMERS.items() for service in services for kind in ("malformed", "invalid")}
    seen = await _dead_letters(platform.kafka_bootstrap, tag, wanted, timeout=120)
    assert wanted - seen == set(), sorted(wanted - seen)
    assert {s for s in seen if s[2] not in CONSUMERS[s[0]]} == set(), "a service dead-lettered a topic it does not consume?"
    await assert_exactly_once(client, platform, issuer, ids, stamps_before=stamps_before, credits=credits)
    assert _pids(platform) == pids, "a consumer crashed"
    assert set((await mails_per_invoice(platform, ids)).values()) == {1}
