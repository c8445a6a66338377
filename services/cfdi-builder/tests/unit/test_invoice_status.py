"""The invoice status machine (``domain/invoice.py``) and the rule that applies it
(``InvoiceRepository.apply_status``): out-of-order events never move an invoice back, and
final statuses win.

``apply_status`` expresses the rule as a MongoDB update pipeline; here it runs against a tiny
in-memory collection that evaluates the handful of aggregation operators the pipeline uses, so
the real expression is what gets tested.
"""

import copy
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timbra_cfdi_builder.adapters.repository import InvoiceRepository
from timbra_cfdi_builder.domain.invoice import FINAL, IN_FLIGHT, RANK, SERVICE_OF_STATUS, STATUS_OF_TOPIC, InvoiceStatus
from timbra_shared import topics
from timbra_shared.ids import utcnow

S = InvoiceStatus
HAPPY_PATH = [S.BUILT, S.SEALED, S.FUNDED, S.STAMPED, S.RENDERED, S.EMAILED]
FAILURES = [S.REJECTED, S.STAMP_FAILED]


# --------------------------------------------------------------------------- the status table


def test_every_status_has_a_rank():
    assert set(RANK) == set(InvoiceStatus)


def test_happy_path_ranks_strictly_increase():
    ranks = [RANK[s] for s in [S.REQUESTED, *HAPPY_PATH]]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


def test_failures_outrank_every_step_and_cancellation_outranks_everything():
    assert all(RANK[f] > RANK[s] for f in FAILURES for s in HAPPY_PATH)
    assert all(RANK[S.CANCELED] > RANK[s] for s in InvoiceStatus if s is not S.CANCELED)


def test_status_of_topic_covers_every_status_topic():
    assert set(STATUS_OF_TOPIC) == set(topics.STATUS_TOPICS)
    assert STATUS_OF_TOPIC[topics.INVOICE_STAMP_FAILED] is S.STAMP_FAILED


def test_in_flight_is_everything_not_final():
    assert set(IN_FLIGHT) == {s.value for s in InvoiceStatus} - {s.value for s in FINAL}
    assert "requested" in IN_FLIGHT and "stamped" in IN_FLIGHT and "emailed" not in IN_FLIGHT


def test_every_in_flight_status_has_an_owner_for_redrives():
    assert all(s in SERVICE_OF_STATUS for s in IN_FLIGHT)


# --------------------------------------------------------------------------- a tiny aggregation evaluator


def _eval(expr: Any, doc: dict[str, Any]) -> Any:
    if isinstance(expr, str) and expr.startswith("$"):
        return doc.get(expr[1:])
    if isinstance(expr, list):
        return [_eval(e, doc) for e in expr]
    if isinstance(expr, dict):
        if len(expr) == 1:
            (op, arg), = expr.items()
            if op == "$literal":
                return arg
            if op == "$and":
                return all(_eval(a, doc) for a in arg)
            if op == "$not":
                return not _eval(arg[0], doc)
            if op == "$lt":
                a, b = _eval(arg, doc)
                return a < b
            if op == "$in":
                value, array = _eval(arg, doc)
                return value in array
            if op == "$cond":
                cond, then, other = arg
                return _eval(then, doc) if _eval(cond, doc) else _eval(other, doc)
            if op == "$ifNull":
                value = _eval(arg[0], doc)
                return value if value is not None else _eval(arg[1], doc)
            if op == "$concatArrays":
                return [x for part in _eval(arg, doc) for x in part]
            if op.startswith("$"):
                raise NotImplementedError(op)
        return {k: _eval(v, doc) for k, v in expr.items()}
    return expr


class PipelineCollection:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def update_one(self, query: dict[str, Any], update: list[dict[str, Any]], session: Any = None) -> SimpleNamespace:
        doc = self.docs.get(query["_id"])
        excluded = query.get("timeline.status", {}).get("$ne")
        if doc is None or excluded in [t["status"] for t in doc.get("timeline", [])]:
            return SimpleNamespace(modified_count=0)
        for stage in update:
            (op, fields), = stage.items()
            assert op == "$set"
            computed = {k: _eval(v, doc) for k, v in fields.items()}  # evaluated against the input document
            doc.update(computed)
        return SimpleNamespace(modified_count=1)


def _repo() -> tuple[InvoiceRepository, PipelineCollection]:
    collection = PipelineCollection()
    repo = InvoiceRepository(SimpleNamespace(invoices=collection))
    collection.docs["inv_1"] = {"_id": "inv_1", "status": "requested", "status_rank": 0, "timeline": [{"status": "requested", "at": utcnow(), "service": "cfdi-builder"}]}
    return repo, collection


async def _apply(repo: InvoiceRepository, *statuses: InvoiceStatus, fields: dict | None = None) -> list[bool]:
    t0 = utcnow()
    return [
        await repo.apply_status("inv_1", s, at=t0 + timedelta(milliseconds=i), service=SERVICE_OF_STATUS.get(s, "x"), fields=fields)
        for i, s in enumerate(statuses)
    ]


async def test_in_order_events_walk_the_happy_path():
    repo, collection = _repo()
    assert await _apply(repo, *HAPPY_PATH) == [True] * 6
    doc = collection.docs["inv_1"]
    assert doc["status"] == "emailed" and doc["status_rank"] == RANK[S.EMAILED]
    assert [t["status"] for t in doc["timeline"]] == ["requested", "built", "sealed", "funded", "stamped", "rendered", "emailed"]


async def test_a_late_event_lands_on_the_timeline_but_does_not_move_the_status_back():
    repo, collection = _repo()
    assert await _apply(repo, S.BUILT, S.STAMPED, S.SEALED, S.FUNDED) == [True] * 4
    doc = collection.docs["inv_1"]
    assert doc["status"] == "stamped"
    assert [t["status"] for t in doc["timeline"]] == ["requested", "built", "stamped", "sealed", "funded"]


async def test_a_duplicate_event_is_recorded_once():
    repo, collection = _repo()
    assert await _apply(repo, S.BUILT, S.BUILT) == [True, False]
    assert [t["status"] for t in collection.docs["inv_1"]["timeline"]] == ["requested", "built"]


@pytest.mark.parametrize("final", FAILURES)
@pytest.mark.parametrize("late", HAPPY_PATH)
async def test_a_failure_is_not_overwritten_by_a_late_step(final, late):
    repo, collection = _repo()
    await _apply(repo, final, late)
    assert collection.docs["inv_1"]["status"] == final.value


async def test_the_first_failure_wins():
    repo, collection = _repo()
    await _apply(repo, S.STAMP_FAILED, S.REJECTED)
    assert collection.docs["inv_1"]["status"] == "stamp_failed"


async def test_emailed_is_not_overwritten_by_late_steps():
    repo, collection = _repo()
    await _apply(repo, S.EMAILED, S.RENDERED, S.STAMPED, S.BUILT)
    assert collection.docs["inv_1"]["status"] == "emailed"


async def test_cancellation_wins_over_everything():
    repo, collection = _repo()
    await _apply(repo, *HAPPY_PATH, S.CANCELED, S.REJECTED)
    assert collection.docs["inv_1"]["status"] == "canceled"


async def test_fields_are_stored_literally():
    repo, collection = _repo()
    await _apply(repo, S.REJECTED, fields={"message": "$not_a_field_path", "errors": [{"code": "X", "message": "$x"}]})
    doc = collection.docs["inv_1"]
    assert doc["message"] == "$not_a_field_path"
    assert doc["errors"] == [{"code": "X", "message": "$x"}]


async def test_unknown_invoice_is_not_changed():
    repo, collection = _repo()
    assert await repo.apply_status("inv_missing", S.BUILT, at=utcnow(), service="cfdi-builder") is False
    assert set(collection.docs) == {"inv_1"}


def _expected_status(sequence: list[InvoiceStatus]) -> InvoiceStatus:
    """The rule, stated independently: the first failure or cancellation is final (a cancellation
    beats a failure); otherwise the furthest step reached."""
    seen: list[InvoiceStatus] = []
    for s in sequence:
        if s not in seen:
            seen.append(s)
    if S.CANCELED in seen:
        return S.CANCELED
    failures = [s for s in seen if s in FAILURES]
    if failures:
        return failures[0]
    return max(seen, key=RANK.__getitem__, default=S.REQUESTED)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*HAPPY_PATH, *FAILURES]), max_size=12))
async def test_status_never_moves_backward_and_failures_are_final(sequence):
    repo, collection = _repo()
    previous_rank = 0
    for i, status in enumerate(sequence):
        await repo.apply_status("inv_1", status, at=utcnow() + timedelta(milliseconds=i), service="x")
        doc = collection.docs["inv_1"]
        assert doc["status_rank"] >= previous_rank
        previous_rank = doc["status_rank"]
    doc = collection.docs["inv_1"]
    assert doc["status"] == _expected_status(sequence).value
    assert doc["status_rank"] == RANK[S(doc["status"])]
    assert [t["status"] for t in doc["timeline"]] == ["requested", *dict.fromkeys(s.value for s in sequence)]


# --------------------------------------------------------------------------- stuck query


class FindCollection(PipelineCollection):
    def __init__(self) -> None:
        super().__init__()
        self.queries: list[dict[str, Any]] = []

    def find(self, query, projection=None):
        self.queries.append(query)

        def backing_off_ok(doc, clause):
            bound = clause["redrive_at"]
            if bound is None:
                return doc.get("redrive_at") is None
            return doc.get("redrive_at") is not None and doc["redrive_at"] < bound["$lt"]

        def match(doc):
            return (
                doc["status"] in query["status"]["$in"]
                and doc["updated_at"] < query["updated_at"]["$lt"]
                and any(backing_off_ok(doc, clause) for clause in query["$or"])
            )

        docs = [copy.deepcopy(d) for d in self.docs.values() if match(d)]

        class Cursor:
            def limit(self, n):
                self.n = n
                return self

            async def to_list(self, _):
                return docs[: self.n]

        return Cursor()


async def test_stuck_finds_only_idle_in_flight_invoices_not_backing_off():
    collection = FindCollection()
    repo = InvoiceRepository(SimpleNamespace(invoices=collection))
    now = utcnow()
    collection.docs = {
        "idle": {"_id": "idle", "status": "sealed", "updated_at": now - timedelta(minutes=10), "redrive_at": None},
        "busy": {"_id": "busy", "status": "sealed", "updated_at": now - timedelta(seconds=1), "redrive_at": None},
        "final": {"_id": "final", "status": "rejected", "updated_at": now - timedelta(hours=1), "redrive_at": None},
        "backing_off": {"_id": "backing_off", "status": "funded", "updated_at": now - timedelta(hours=1), "redrive_at": now + timedelta(minutes=5)},
        "due_again": {"_id": "due_again", "status": "funded", "updated_at": now - timedelta(hours=1), "redrive_at": now - timedelta(seconds=1)},
    }
    found = await repo.stuck(older_than=timedelta(minutes=1))
    assert sorted(d["_id"] for d in found) == ["due_again", "idle"]
