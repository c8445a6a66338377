"""The operator console's back end: consumer lag, error rate, search terms, the dead-letter store
and replays (service layer with hand-written fakes that record their calls)."""

import json
from typing import Any

import pytest

from timbra_cfdi_builder.domain.operations import REPLAY_OF_HEADER, ReplayRefused, classify, error_rate, group_lag, letter_ids, plan_replay, topic_lags
from timbra_cfdi_builder.operations import LetterNotFound, OperationsService, ReplayFailed
from timbra_shared import topics
from timbra_shared.auth import Principal
from timbra_shared.events import DeadLetter
from timbra_shared.ids import utcnow

OPERATOR = Principal(kind="staff", roles=("operator",), key_id="ses_op1")

# --------------------------------------------------------------------------- lag


def test_group_lag_sums_end_minus_committed_per_topic_and_ignores_topics_never_committed() -> None:
    end = {("invoice.built", 0): 10, ("invoice.built", 1): 5, ("invoice.sealed", 0): 7}
    committed = {("invoice.built", 0): 4, ("invoice.built", 1): 5, ("invoice.sealed", 0): -1}
    rows = group_lag("issuer-profile.seal", committed, end)
    assert [(r.topic, r.lag, r.partitions, r.uncommitted) for r in rows] == [("invoice.built", 6, 2, 0)]


def test_group_lag_counts_uncommitted_partitions_from_the_beginning_and_never_goes_negative() -> None:
    end = {("t", 0): 10, ("t", 1): 3, ("t", 2): 2}
    committed = {("t", 0): 12, ("t", 1): -1, ("t", 2): 1}  # 12 > end: the broker restarted empty
    rows = group_lag("g", committed, end, beginning={("t", 1): 1})
    assert len(rows) == 1
    assert rows[0].lag == 0 + (3 - 1) + (2 - 1)
    assert rows[0].uncommitted == 1


def test_topic_lags_report_the_worst_group_and_the_end_offset() -> None:
    end = {("a", 0): 10, ("a", 1): 10, ("b", 0): 4}
    groups = group_lag("g1", {("a", 0): 10, ("a", 1): 8}, end) + group_lag("g2", {("a", 0): 1, ("a", 1): 10}, end)
    rows = {r.topic: r for r in topic_lags(groups, end)}
    assert rows["a"].end_offset == 20 and rows["a"].lag == 9 and len(rows["a"].groups) == 2
    assert rows["b"].lag == 0 and rows["b"].groups == []


def test_error_rate() -> None:
    assert error_rate(0, 0) is None
    assert error_rate(1, 4) == 0.25


@pytest.mark.parametrize(("term", "kind", "value"), [
    ("inv_01ABC", "invoice_id", "inv_01ABC"),
    ("iss_01ABC", "issuer_id", "iss_01ABC"),
    ("6f1e2d3c-aaaa-4bbb-8ccc-0123456789ab", "uuid", "6F1E2D3C-AAAA-4BBB-8CCC-0123456789AB"),
    ("eku9003173c9", "rfc", "EKU9003173C9"),
    ("XAXX010101000", "rfc", "XAXX010101000"),
    ("  Escuela Kemper ", "name", "Escuela Kemper"),
])
def test_classify_search_terms(term: str, kind: str, value: str) -> None:
    assert classify(term) == (kind, value)


# --------------------------------------------------------------------------- replay rules

LETTER = {
    "original_topic": topics.INVOICE_REQUESTED, "key": "inv_1", "payload": '{"bad": true}', "status": "open",
    "headers": {"content-type": "application/json", "traceparent": "00-abc-def-01", REPLAY_OF_HEADER: "old"},
}


def test_plan_replay_sends_the_original_payload_key_and_headers_marked_as_a_replay() -> None:
    plan = plan_replay(LETTER, "dl_1")
    assert plan.topic == topics.INVOICE_REQUESTED and plan.key == b"inv_1" and plan.payload == b'{"bad": true}'
    assert plan.headers["traceparent"] == "00-abc-def-01" and plan.headers[REPLAY_OF_HEADER] == "dl_1"
    assert plan.corrected is False


def test_plan_replay_with_a_corrected_payload_requires_json() -> None:
    assert plan_replay(LETTER, "dl_1", '{"good": 1}').corrected is True
    with pytest.raises(ReplayRefused) as refused:
        plan_replay(LETTER, "dl_1", "{not json")
    assert refused.value.code == "TIMBRA_REPLAY_INVALID_JSON" and refused.value.path == "payload"


@pytest.mark.parametrize("topic", [topics.DEAD_LETTER, "someone.elses.topic", ""])
def test_plan_replay_refuses_topics_that_are_not_timbras_or_the_dead_letter_topic(topic: str) -> None:
    with pytest.raises(ReplayRefused) as refused:
        plan_replay({**LETTER, "original_topic": topic}, "dl_1")
    assert refused.value.code == "TIMBRA_REPLAY_TOPIC"


def test_letter_ids_from_the_payload_or_the_key() -> None:
    assert letter_ids('{"invoice_id": "inv_9", "issuer_id": "iss_2"}', None) == ("inv_9", "iss_2")
    assert letter_ids("not json", "inv_3") == ("inv_3", None)
    assert letter_ids("[1]", "iss_1") == (None, None)


# --------------------------------------------------------------------------- service with fakes


class FakeLetters:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []

    async def insert(self, doc: dict[str, Any]) -> bool:
        self.calls.append(("insert", doc["_id"]))
        if doc["_id"] in self.docs:
            return False
        self.docs[doc["_id"]] = json.loads(json.dumps(doc, default=str)) | {"received_at": doc["received_at"]}
        return True

    async def get(self, letter_id: str) -> dict[str, Any] | None:
        return self.docs.get(letter_id)

    async def page(self, *, status: str | None, invoice_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [d for d in self.docs.values() if (status is None or d["status"] == status) and (invoice_id is None or d.get("invoice_id") == invoice_id)][:limit]

    async def count(self, status: str | None = None, since: Any = None) -> int:
        return len([d for d in self.docs.values() if (status is None or d["status"] == status) and (since is None or d["received_at"] >= since)])

    async def add_replay(self, letter_id: str, replay: dict[str, Any]) -> dict[str, Any] | None:
        doc = self.docs.get(letter_id)
        if doc is None or doc["status"] == "discarded":
            return None
        doc["status"] = "replayed"
        doc["replays"].append(dict(replay))
        return doc

    async def set_replay_outcome(self, letter_id: str, replay_id: str, outcome: str, error: str | None = None) -> None:
        self.calls.append(("outcome", (letter_id, outcome)))
        doc = self.docs[letter_id]
        for replay in doc["replays"]:
            if replay["id"] == replay_id:
                replay["outcome"] = outcome
        if outcome == "failed":
            doc["status"] = "open"

    async def discard(self, letter_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
        doc = self.docs.get(letter_id)
        if doc is None or doc["status"] != "open":
            return None
        doc["status"], doc["discarded"] = "discarded", record
        return doc

    async def close_siblings(self, letter: dict[str, Any], status: str, fields: dict[str, Any]) -> int:
        if letter.get("partition") is None or letter.get("offset") is None:
            return 0
        same = [d for d in self.docs.values() if (d["original_topic"], d["partition"], d["offset"]) == (letter["original_topic"], letter["partition"], letter["offset"])
                and d["_id"] != letter["_id"] and d["status"] == "open"]
        for doc in same:
            doc.update(status=status, sibling_of=letter["_id"], **fields)
        return len(same)

    async def link_failure(self, original_id: str, new_id: str) -> None:
        self.calls.append(("link", (original_id, new_id)))
        self.docs[original_id].setdefault("failed_again", []).append(new_id)


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, dict[str, str]]] = []
        self.fail = fail

    async def __call__(self, topic: str, payload: bytes, key: bytes | None, headers: dict[str, str]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((topic, payload, key, headers))


class FakeOffsets:
    def __init__(self) -> None:
        self.reads = 0

    async def read(self, topic_names: list[str]) -> Any:
        self.reads += 1
        end = {(topics.INVOICE_BUILT, 0): 8, (topics.INVOICE_BUILT, 1): 2}
        return {"issuer-profile.seal": {(topics.INVOICE_BUILT, 0): 5, (topics.INVOICE_BUILT, 1): 2}}, end, {}


class FakeQueries:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def count_by_status(self, since: Any = None) -> dict[str, int]:
        return {"requested": 2, "stamped": 1, "emailed": 7, "rejected": 2} if since is None else {"emailed": 3, "rejected": 1}

    async def stuck_by_status(self, older_than: Any) -> dict[str, int]:
        return {"requested": 1}

    async def finished_since(self, since: Any) -> dict[str, int]:
        return {"emailed": 3, "rejected": 1}

    async def recent_failures(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        self.calls.append(("invoice", invoice_id))
        return {"_id": invoice_id, "issuer_id": "iss_1", "trace_id": "abc123"} if invoice_id == "inv_1" else None

    async def invoices_where(self, query: dict[str, Any], limit: int = 50) -> list[dict[str, Any]]:
        self.calls.append(("invoices_where", query))
        return [{"_id": "inv_1"}]

    async def issuer(self, issuer_id: str) -> dict[str, Any] | None:
        return {"_id": issuer_id, "rfc": "EKU9003173C9"}

    async def issuers_where(self, *, rfc: str | None = None, name: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        self.calls.append(("issuers_where", rfc or name))
        return [{"_id": "iss_1"}] if rfc == "EKU9003173C9" or name else []


def service(publish: FakePublisher | None = None, **kw: Any) -> tuple[OperationsService, FakeLetters, FakePublisher]:
    letters, publisher = FakeLetters(), publish or FakePublisher()
    ops = OperationsService(letters=letters, queries=kw.get("queries") or FakeQueries(), offsets=kw.get("offsets") or FakeOffsets(), publish=publisher, stuck_after=120,
                            jaeger_url=kw.get("jaeger_url"))
    return ops, letters, publisher


def dead_letter(**changes: Any) -> DeadLetter:
    base = dict(service="cfdi-builder", original_topic=topics.INVOICE_REQUESTED, partition=2, offset=41, key="inv_1", reason="sin emisor",
                error_type="PoisonMessage", payload='{"invoice_id": "inv_1", "request": {}}', headers={"content-type": "application/json"})
    return DeadLetter(**(base | changes))


async def test_a_dead_letter_is_stored_once_with_its_invoice() -> None:
    ops, letters, _ = service()
    letter = dead_letter()
    assert await ops.store_letter(letter) is True
    assert await ops.store_letter(letter) is False  # redelivered
    doc = letters.docs[letter.event_id]
    assert doc["status"] == "open" and doc["invoice_id"] == "inv_1" and doc["original_topic"] == topics.INVOICE_REQUESTED
    assert doc["payload"] == letter.payload and doc["reason"] == "sin emisor"


async def test_replay_republishes_the_original_on_its_topic_and_records_who_and_when() -> None:
    ops, letters, publisher = service()
    letter = dead_letter()
    await ops.store_letter(letter)
    before = utcnow()
    doc = await ops.replay(letter.event_id, OPERATOR, note="ya existe el emisor")
    [(topic, payload, key, headers)] = publisher.sent
    assert topic == topics.INVOICE_REQUESTED and payload == letter.payload.encode() and key == b"inv_1"
    assert headers[REPLAY_OF_HEADER] == letter.event_id
    assert doc["status"] == "replayed"
    [replay] = doc["replays"]
    assert replay["by"] == {"kind": "staff", "key_id": "ses_op1", "roles": ["operator"]}
    assert replay["at"] >= before and replay["outcome"] == "sent" and replay["note"] == "ya existe el emisor" and replay["corrected"] is False


async def test_replay_with_a_corrected_payload_sends_the_correction_and_keeps_it() -> None:
    ops, letters, publisher = service()
    letter = dead_letter()
    await ops.store_letter(letter)
    fixed = '{"invoice_id": "inv_1", "issuer_id": "iss_1", "request": {}}'
    doc = await ops.replay(letter.event_id, OPERATOR, payload=fixed)
    assert publisher.sent[0][1] == fixed.encode()
    assert doc["replays"][0]["corrected"] is True and doc["replays"][0]["payload"] == fixed
    assert letters.docs[letter.event_id]["payload"] == letter.payload  # the original is kept as it came


async def test_a_replay_the_broker_refuses_leaves_the_letter_open() -> None:
    ops, letters, _ = service(FakePublisher(fail=True))
    letter = dead_letter()
    await ops.store_letter(letter)
    with pytest.raises(ReplayFailed):
        await ops.replay(letter.event_id, OPERATOR)
    doc = letters.docs[letter.event_id]
    assert doc["status"] == "open" and doc["replays"][0]["outcome"] == "failed"


async def test_a_replay_that_fails_again_links_back_to_the_original() -> None:
    ops, letters, _ = service()
    first = dead_letter()
    await ops.store_letter(first)
    await ops.replay(first.event_id, OPERATOR)
    again = dead_letter(headers={"content-type": "application/json", REPLAY_OF_HEADER: first.event_id})
    await ops.store_letter(again)
    assert letters.docs[again.event_id]["replay_of"] == first.event_id
    assert letters.docs[first.event_id]["failed_again"] == [again.event_id]


async def test_discarded_letters_cannot_be_replayed_and_unknown_ones_are_not_found() -> None:
    ops, _, publisher = service()
    letter = dead_letter()
    await ops.store_letter(letter)
    doc = await ops.discard(letter.event_id, OPERATOR, "prueba de carga")
    assert doc["status"] == "discarded" and doc["discarded"]["note"] == "prueba de carga"
    with pytest.raises(ReplayRefused):
        await ops.replay(letter.event_id, OPERATOR)
    with pytest.raises(ReplayRefused):
        await ops.discard(letter.event_id, OPERATOR, "otra vez")
    with pytest.raises(LetterNotFound):
        await ops.replay("nope", OPERATOR)
    assert publisher.sent == []


async def test_replaying_or_discarding_a_record_closes_the_letters_other_groups_wrote_for_it() -> None:
    ops, letters, publisher = service()
    # one poison record on invoice.stamped, dead-lettered by three consumer groups; another record apart
    by_group = [dead_letter(service=name, original_topic=topics.INVOICE_STAMPED, offset=7) for name in ("notifier", "billing", "catalog")]
    other = dead_letter(service="notifier", original_topic=topics.INVOICE_STAMPED, offset=8)
    for letter in (*by_group, other):
        await ops.store_letter(letter)
    await ops.replay(by_group[0].event_id, OPERATOR)
    assert len(publisher.sent) == 1  # one republish reaches every group
    assert [letters.docs[x.event_id]["status"] for x in by_group] == ["replayed"] * 3
    assert {letters.docs[x.event_id].get("sibling_of") for x in by_group[1:]} == {by_group[0].event_id}
    assert letters.docs[other.event_id]["status"] == "open"

    again = [dead_letter(service=name, original_topic=topics.INVOICE_STAMPED, offset=9) for name in ("notifier", "billing")]
    for letter in again:
        await ops.store_letter(letter)
    await ops.discard(again[1].event_id, OPERATOR, "evento de prueba")
    assert [letters.docs[x.event_id]["status"] for x in again] == ["discarded", "discarded"]
    assert letters.docs[again[0].event_id]["discarded"]["note"] == "evento de prueba"
    assert letters.docs[other.event_id]["status"] == "open"


async def test_pipeline_counts_stages_statuses_error_rate_and_dead_letters() -> None:
    ops, _, _ = service()
    await ops.store_letter(dead_letter())
    body = await ops.pipeline(60)
    stages = {s["status"]: s for s in body["stages"]}
    assert stages["requested"] == {"status": "requested", "in_flight": 2, "stuck": 1}
    assert "emailed" not in stages  # final statuses are not stages in flight
    statuses = {s["status"]: s for s in body["statuses"]}
    assert statuses["emailed"]["total"] == 7 and statuses["emailed"]["window"] == 3 and statuses["emailed"]["final"] is True
    assert body["total"] == 12
    assert body["error_rate"] == {"finished": 4, "failed": 1, "rate": 0.25, "by_status": {"emailed": 3, "rejected": 1}}
    assert body["dead_letters"] == {"open": 1, "window": 1}


async def test_lag_is_computed_from_the_broker_offsets_and_cached_briefly() -> None:
    offsets = FakeOffsets()
    ops, _, _ = service(offsets=offsets)
    body = await ops.lag()
    built = next(t for t in body["topics"] if t["topic"] == topics.INVOICE_BUILT)
    assert built["lag"] == 3 and built["end_offset"] == 10 and built["groups"][0]["group"] == "issuer-profile.seal"
    assert body["total_lag"] == 3
    await ops.lag()
    assert offsets.reads == 1


async def test_search_by_rfc_finds_the_issuer_and_invoices_as_receptor_or_issuer() -> None:
    queries = FakeQueries()
    ops, _, _ = service(queries=queries)
    found = await ops.search("eku9003173c9")
    assert found["kind"] == "rfc" and found["issuers"] == [{"_id": "iss_1"}]
    query = next(q for name, q in queries.calls if name == "invoices_where")
    assert query == {"$or": [{"customer_rfc": "EKU9003173C9"}, {"issuer_id": {"$in": ["iss_1"]}}]}


async def test_invoice_detail_links_the_trace_when_jaeger_is_configured() -> None:
    ops, _, _ = service(jaeger_url="http://jaeger:16686/")
    found = await ops.invoice("inv_1")
    assert found is not None and found["trace_url"] == "http://jaeger:16686/trace/abc123"
    ops2, _, _ = service()
    assert (await ops2.invoice("inv_1"))["trace_url"] is None
    assert await ops2.invoice("inv_x") is None
