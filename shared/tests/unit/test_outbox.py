"""The transactional outbox: the document it stores, and the relay (fast path, poller, redrive)
against a fake publish function and a tiny in-memory collection."""

import asyncio
import json
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from timbra_shared import outbox as outbox_module
from timbra_shared import topics
from timbra_shared.events import InvoiceBuilt, InvoiceEmailed, InvoiceSummary, IssuerProfileChanged
from timbra_shared.ids import utcnow
from timbra_shared.outbox import Outbox, outbox_document
from timbra_shared.telemetry import carrier_from_current

SUMMARY = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="XAXX010101000", nombre_receptor="PUBLICO EN GENERAL", total=Decimal("116.00"))
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def _built(invoice_id: str = "inv_1") -> InvoiceBuilt:
    return InvoiceBuilt(invoice_id=invoice_id, issuer_id="iss_1", summary=SUMMARY, xml="<cfdi:Comprobante/>")


# --------------------------------------------------------------------------- the document


def test_outbox_document_shape():
    event = _built()
    doc = outbox_document(event)
    assert doc["_id"] == event.event_id
    assert doc["topic"] == topics.INVOICE_BUILT
    assert doc["key"] == "inv_1"
    assert doc["invoice_id"] == "inv_1"
    assert doc["sent_at"] is None and doc["lease_until"] is None
    assert doc["created_at"].tzinfo is not None
    assert InvoiceBuilt.model_validate_json(doc["payload"]) == event
    assert json.loads(doc["payload"])["event_type"] == topics.INVOICE_BUILT


def test_outbox_document_without_a_span_has_an_empty_carrier():
    assert outbox_document(_built())["trace"] == {}


def test_outbox_document_stores_the_current_trace():
    tracer = TracerProvider().get_tracer("unit")
    with tracer.start_as_current_span("build") as span:
        doc = outbox_document(_built())
    match = TRACEPARENT.match(doc["trace"]["traceparent"])
    assert match
    assert match.group(1) == format(span.get_span_context().trace_id, "032x")
    assert match.group(2) == format(span.get_span_context().span_id, "016x")


def test_outbox_document_key_override():
    assert outbox_document(_built(), key="custom")["key"] == "custom"


def test_issuer_profile_is_keyed_by_issuer():
    profile = IssuerProfileChanged(issuer_id="iss_7", version=1, rfc="EKU9003173C9", legal_name="ESCUELA KEMPER URGATE", tax_regime="601", zip="42501", slug="ekm")
    doc = outbox_document(profile)
    assert doc["topic"] == topics.ISSUER_PROFILE
    assert doc["key"] == "iss_7"
    assert doc["invoice_id"] is None


# --------------------------------------------------------------------------- fakes


def _get(doc: dict[str, Any], field: str) -> Any:
    return doc.get(field)


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for field, cond in query.items():
        if field == "$or":
            if not any(_matches(doc, q) for q in cond):
                return False
            continue
        value = _get(doc, field)
        if isinstance(cond, dict) and any(k.startswith("$") for k in cond):
            for op, arg in cond.items():
                if op == "$in" and value not in arg:
                    return False
                if op == "$lt" and (value is None or not value < arg):
                    return False
        elif value != cond:
            return False
    return True


class FakeCursor:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def sort(self, field: str, direction: int) -> "FakeCursor":
        return FakeCursor(sorted(self.docs, key=lambda d: d[field], reverse=direction < 0))

    def limit(self, n: int) -> "FakeCursor":
        return FakeCursor(self.docs[:n])

    async def to_list(self, _length: int | None) -> list[dict[str, Any]]:
        return [dict(d) for d in self.docs]


class FakeOutboxCollection:
    """Only what ``Outbox`` calls: ``find`` (with sort/limit/to_list) and ``update_many``."""

    def __init__(self, docs: list[dict[str, Any]] = ()) -> None:
        self.docs: dict[str, dict[str, Any]] = {d["_id"]: dict(d) for d in docs}
        self.updates: list[tuple[dict, dict]] = []

    def insert(self, doc: dict[str, Any]) -> None:
        self.docs[doc["_id"]] = dict(doc)

    def find(self, query: dict[str, Any], projection: dict[str, int] | None = None) -> FakeCursor:
        return FakeCursor([d for d in self.docs.values() if _matches(d, query)])

    async def update_many(self, query: dict[str, Any], update: dict[str, Any]) -> None:
        self.updates.append((query, update))
        for doc in self.docs.values():
            if _matches(doc, query):
                doc.update(update["$set"])

    def unsent(self) -> set[str]:
        return {i for i, d in self.docs.items() if d["sent_at"] is None}


class FakePublish:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.failing: set[str] = set()  # invoice ids whose publish raises
        self.event = asyncio.Event()

    async def __call__(self, topic: str, payload: bytes, key: bytes, headers: dict[str, str]) -> None:
        self.calls.append({"topic": topic, "payload": payload, "key": key, "headers": headers, "trace": carrier_from_current()})
        self.event.set()
        if key.decode() in self.failing:
            raise ConnectionError("broker down")

    def invoice_ids(self) -> list[str]:
        return [json.loads(c["payload"])["invoice_id"] for c in self.calls]


async def _eventually(predicate, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def relay():
    collection = FakeOutboxCollection()
    publish = FakePublish()
    outbox = Outbox(collection, publish, poll_interval=3600, orphan_after=3600)  # poller effectively off
    await outbox.start()
    yield outbox, collection, publish
    await outbox.stop()


# --------------------------------------------------------------------------- fast path


async def test_fast_path_publishes_and_marks_sent(relay):
    outbox, collection, publish = relay
    docs = [outbox_document(_built(f"inv_{i}")) for i in range(3)]
    for d in docs:
        collection.insert(d)
    outbox.dispatch(docs)
    await _eventually(lambda: not collection.unsent())

    assert sorted(publish.invoice_ids()) == ["inv_0", "inv_1", "inv_2"]
    call = publish.calls[0]
    assert call["topic"] == topics.INVOICE_BUILT
    assert call["key"] == json.loads(call["payload"])["invoice_id"].encode()
    assert call["headers"] == {"content-type": "application/json"}
    assert InvoiceBuilt.model_validate_json(call["payload"]).xml == "<cfdi:Comprobante/>"
    assert all(d["sent_at"] is not None and d["lease_until"] is None for d in collection.docs.values())
    assert outbox.published == 3


async def test_fast_path_marks_several_commits_events_with_one_update(relay, monkeypatch):
    # A window far longer than three commits take even on a loaded machine; 20 ms is the default.
    monkeypatch.setattr(outbox_module, "MARK_SENT_AFTER_S", 1.0)
    outbox, collection, publish = relay
    commits = [[outbox_document(_built(f"inv_{c}_{i}")) for i in range(2)] for c in range(3)]
    for docs in commits:
        for d in docs:
            collection.insert(d)
        outbox.dispatch(docs)
        await _eventually(lambda docs=docs: {d["_id"] for d in docs} <= {json.loads(c["payload"])["event_id"] for c in publish.calls})
    assert not collection.updates  # all three published inside the window: nothing marked yet
    await _eventually(lambda: not collection.unsent(), timeout=10)

    assert len(publish.calls) == 6
    ((query, _update),) = collection.updates  # published one commit after another, marked once
    assert sorted(query["_id"]["$in"]) == sorted(d["_id"] for docs in commits for d in docs)


async def test_stopping_marks_what_was_published(relay):
    outbox, collection, publish = relay
    doc = outbox_document(_built("inv_1"))
    collection.insert(doc)
    outbox.dispatch([doc])
    await _eventually(lambda: publish.calls)
    await outbox.stop()
    assert collection.unsent() == set()


async def test_fast_path_failures_leave_documents_unsent(relay):
    outbox, collection, publish = relay
    publish.failing = {"inv_bad"}
    docs = [outbox_document(_built("inv_ok")), outbox_document(_built("inv_bad"))]
    for d in docs:
        collection.insert(d)
    outbox.dispatch(docs)
    await _eventually(lambda: len(publish.calls) == 2 and collection.updates)
    await asyncio.sleep(0.02)

    bad_id = docs[1]["_id"]
    assert collection.unsent() == {bad_id}
    assert outbox.published == 1
    ((query, _update),) = collection.updates
    assert bad_id not in query["_id"]["$in"]
    assert query["sent_at"] is None  # never overwrites an earlier sent_at


async def test_all_failing_does_not_touch_the_collection(relay):
    outbox, collection, publish = relay
    publish.failing = {"inv_1"}
    doc = outbox_document(_built("inv_1"))
    collection.insert(doc)
    outbox.dispatch([doc])
    await _eventually(lambda: publish.calls)
    await asyncio.sleep(0.02)
    assert collection.updates == []
    assert collection.unsent() == {doc["_id"]}


async def test_fast_path_keeps_running_after_a_failure(relay):
    outbox, collection, publish = relay
    publish.failing = {"inv_1"}
    first = outbox_document(_built("inv_1"))
    collection.insert(first)
    outbox.dispatch([first])
    await _eventually(lambda: publish.calls)
    second = outbox_document(_built("inv_2"))
    collection.insert(second)
    outbox.dispatch([second])
    await _eventually(lambda: second["_id"] not in collection.unsent())
    assert collection.unsent() == {first["_id"]}


async def test_publish_continues_the_stored_trace(relay):
    outbox, collection, publish = relay
    with TracerProvider().get_tracer("unit").start_as_current_span("work") as span:
        doc = outbox_document(_built("inv_1"))
    trace_id = format(span.get_span_context().trace_id, "032x")
    collection.insert(doc)
    outbox.dispatch([doc])
    await _eventually(lambda: publish.calls)
    published_trace = publish.calls[0]["trace"]
    assert TRACEPARENT.match(published_trace["traceparent"]).group(1) == trace_id


# --------------------------------------------------------------------------- poller and redrive


async def test_poller_publishes_what_the_fast_path_missed():
    collection = FakeOutboxCollection()
    publish = FakePublish()
    orphan = outbox_document(_built("inv_orphan"))
    orphan["created_at"] = utcnow() - timedelta(seconds=10)
    fresh = outbox_document(_built("inv_fresh"))  # the fast path is still on it
    collection.insert(orphan)
    collection.insert(fresh)
    outbox = Outbox(collection, publish, poll_interval=0.01, orphan_after=3.0)
    await outbox.start()
    try:
        await _eventually(lambda: orphan["_id"] not in collection.unsent())
        await asyncio.sleep(0.05)
    finally:
        await outbox.stop()
    assert publish.invoice_ids().count("inv_orphan") == 1
    assert "inv_fresh" not in publish.invoice_ids()
    assert collection.docs[orphan["_id"]]["lease_until"] is None


async def test_poller_does_not_republish_sent_or_leased_documents():
    collection = FakeOutboxCollection()
    publish = FakePublish()
    old = utcnow() - timedelta(seconds=10)
    sent = outbox_document(_built("inv_sent")) | {"created_at": old, "sent_at": old}
    leased = outbox_document(_built("inv_leased")) | {"created_at": old, "lease_until": utcnow() + timedelta(seconds=30), "lease_owner": "relay-other"}
    collection.insert(sent)
    collection.insert(leased)
    outbox = Outbox(collection, publish, poll_interval=0.01, orphan_after=3.0)
    await outbox.start()
    await asyncio.sleep(0.1)
    await outbox.stop()
    assert publish.calls == []


async def test_requeue_publishes_every_event_of_the_invoice_again_in_order(relay):
    outbox, collection, publish = relay
    t0 = utcnow() - timedelta(minutes=5)
    built = outbox_document(_built("inv_1")) | {"created_at": t0, "sent_at": t0}
    emailed = outbox_document(InvoiceEmailed(invoice_id="inv_1", issuer_id="iss_1", recipients=[])) | {"created_at": t0 + timedelta(seconds=1), "sent_at": t0}
    other = outbox_document(_built("inv_2")) | {"created_at": t0, "sent_at": t0}
    for d in (emailed, other, built):
        collection.insert(d)

    assert await outbox.requeue("inv_1") == 2
    await _eventually(lambda: len(publish.calls) == 2)
    assert [c["topic"] for c in publish.calls] == [topics.INVOICE_BUILT, topics.INVOICE_EMAILED]
    assert collection.docs[built["_id"]]["sent_at"] == t0  # the original send time is kept
