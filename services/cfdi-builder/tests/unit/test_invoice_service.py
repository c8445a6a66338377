"""``InvoiceService`` with in-memory fakes of its ports (see conftest.py)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from lxml import etree

from timbra_cfdi_builder import service as service_module
from timbra_cfdi_builder.domain.invoice import InvoiceStatus
from timbra_shared import topics
from timbra_shared.auth import Principal
from timbra_shared.errors import RetryLater
from timbra_shared.events import (
    ErrorDetail,
    InvoiceBuilt,
    InvoiceEmailed,
    InvoiceRejected,
    InvoiceRequest,
    InvoiceRequested,
    InvoiceStamped,
    InvoiceSummary,
    IssuerProfileChanged,
    RedriveInvoice,
)
from timbra_shared.ids import utcnow

ISSUER_PRINCIPAL = Principal(kind="issuer", issuer_id="iss_1", livemode=False, key_id="key_1")


def _requested(body, *, invoice_id="inv_1", issuer_id="iss_1", age=timedelta(0)) -> InvoiceRequested:
    return InvoiceRequested(invoice_id=invoice_id, issuer_id=issuer_id, request=InvoiceRequest.model_validate(body), occurred_at=utcnow() - age)


# --------------------------------------------------------------------------- on_requested


async def test_on_requested_builds_and_emits_invoice_built_once(service, fakes, request_body):
    event = _requested(request_body())
    await service.on_requested(event)

    (built,) = fakes.store.emitted
    assert isinstance(built, InvoiceBuilt)
    assert (built.invoice_id, built.issuer_id) == ("inv_1", "iss_1")
    assert built.summary.total == Decimal("232.00")
    assert (built.summary.serie, built.summary.folio) == ("F", "1")
    root = etree.fromstring(built.xml.encode())
    assert root.attrib["Total"] == "232.00" and root.attrib["Serie"] == "F" and root.attrib["Folio"] == "1"
    assert fakes.store.dedupe_keys == [f"{topics.INVOICE_REQUESTED}:inv_1"]


async def test_on_requested_writes_inside_the_transaction(service, fakes, request_body):
    await service.on_requested(_requested(request_body()))
    (tx,) = fakes.store.transactions
    ((doc, session),) = fakes.invoices.inserts
    assert session is tx.session
    assert doc["_id"] == "inv_1" and doc["status"] == "requested" and doc["source"] == "kafka"
    assert fakes.folios.calls == [("iss_1", "F", tx.session)]
    (status_call,) = fakes.invoices.status_calls
    assert status_call["status"] is InvoiceStatus.BUILT and status_call["session"] is tx.session
    assert status_call["fields"]["folio"] == "1" and status_call["fields"]["total"] == "232.00"


async def test_redelivered_request_emits_nothing_and_burns_no_folio(service, fakes, request_body):
    event = _requested(request_body())
    await service.on_requested(event)
    await service.on_requested(event)
    await service.on_requested(event)
    assert len(fakes.store.emitted) == 1
    assert len(fakes.folios.calls) == 1
    assert len(fakes.build.calls) == 1


async def test_folios_are_consecutive_per_serie(service, fakes, request_body):
    for i in range(3):
        await service.on_requested(_requested(request_body(), invoice_id=f"inv_{i}"))
    await service.on_requested(_requested(request_body(series="X"), invoice_id="inv_x"))
    folios = [(e.summary.serie, e.summary.folio) for e in fakes.store.of_type(InvoiceBuilt)]
    assert folios == [("F", "1"), ("F", "2"), ("F", "3"), ("X", "1")]


async def test_serie_comes_from_the_issuer_per_type(service, fakes, request_body, issuer):
    fakes.issuers.issuers["iss_1"]["series"] = {"E": "NC"}
    await service.on_requested(_requested(request_body(type="E", related=[{"relationship": "01", "uuids": ["5FB2822E-396D-4725-8521-CDC4BDD20CCF"]}])))
    assert fakes.build.calls[0]["serie"] == "NC"


# --------------------------------------------------------------------------- a consumed batch


async def test_a_batch_is_built_in_one_transaction_reading_each_issuer_once(service, fakes, request_body, issuer):
    fakes.issuers.issuers["iss_2"] = {**issuer, "issuer_id": "iss_2", "_id": "iss_2"}
    events = [_requested(request_body(), invoice_id=f"inv_{i}", issuer_id="iss_2" if i % 2 else "iss_1") for i in range(5)]
    await service.on_requested_many(events)

    (tx,) = fakes.store.transactions
    assert sorted(fakes.issuers.gets) == ["iss_1", "iss_2"]
    built = fakes.store.of_type(InvoiceBuilt)
    assert [b.invoice_id for b in built] == [f"inv_{i}" for i in range(5)]
    assert [(b.issuer_id, b.summary.folio) for b in built] == [("iss_1", "1"), ("iss_2", "1"), ("iss_1", "2"), ("iss_2", "2"), ("iss_1", "3")]
    assert all(call[2] is tx.session for call in fakes.folios.calls)
    assert fakes.store.dedupe_keys == [f"{topics.INVOICE_REQUESTED}:inv_{i}" for i in range(5)]


async def test_a_batch_with_a_redelivered_request_builds_it_once(service, fakes, request_body):
    event = _requested(request_body())
    await service.on_requested_many([event, _requested(request_body(), invoice_id="inv_2"), event])
    assert [b.invoice_id for b in fakes.store.of_type(InvoiceBuilt)] == ["inv_1", "inv_2"]
    assert len(fakes.folios.calls) == 2


async def test_a_request_that_must_wait_commits_the_ones_before_it_first(service, fakes, request_body):
    events = [_requested(request_body(), invoice_id="inv_1"), _requested(request_body(), invoice_id="inv_2", issuer_id="iss_new"), _requested(request_body(), invoice_id="inv_3")]
    with pytest.raises(RetryLater):
        await service.on_requested_many(events)
    assert [b.invoice_id for b in fakes.store.of_type(InvoiceBuilt)] == ["inv_1"]
    assert set(fakes.invoices.docs) == {"inv_1"}

    fakes.issuers.issuers["iss_new"] = {**fakes.issuers.issuers["iss_1"], "issuer_id": "iss_new", "_id": "iss_new"}
    await service.on_requested_many(events)  # the consumer's retry: inv_1 is not built again
    assert [b.invoice_id for b in fakes.store.of_type(InvoiceBuilt)] == ["inv_1", "inv_2", "inv_3"]
    assert [b.summary.folio for b in fakes.store.of_type(InvoiceBuilt)] == ["1", "1", "2"]


async def test_one_idempotency_key_twice_in_a_batch_makes_one_invoice(service, fakes, request_body):
    body = request_body(idempotency_key="pedido-77")
    await service.on_requested_many([_requested(body, invoice_id="inv_a"), _requested(body, invoice_id="inv_b")])
    assert [b.invoice_id for b in fakes.store.of_type(InvoiceBuilt)] == ["inv_a"]
    assert set(fakes.invoices.docs) == {"inv_a"}


async def test_one_idempotency_key_for_two_different_requests_in_a_batch_rejects_the_second(service, fakes, request_body):
    first, second = request_body(idempotency_key="pedido-78"), request_body(idempotency_key="pedido-78", use="G01")
    await service.on_requested_many([_requested(first, invoice_id="inv_a"), _requested(second, invoice_id="inv_b")])
    assert [b.invoice_id for b in fakes.store.of_type(InvoiceBuilt)] == ["inv_a"]
    (rejected,) = fakes.store.of_type(InvoiceRejected)
    assert rejected.invoice_id == "inv_b" and [e.code for e in rejected.errors] == ["TIMBRA_IDEMPOTENCY_CONFLICT"]
    assert fakes.invoices.docs["inv_b"]["idempotency_key"] is None


async def test_unknown_issuer_is_retried_while_the_request_is_recent(service, fakes, request_body):
    event = _requested(request_body(), issuer_id="iss_new")
    with pytest.raises(RetryLater):
        await service.on_requested(event)
    assert fakes.store.emitted == []
    assert fakes.store.processed == set()
    assert fakes.invoices.docs == {}


async def test_unknown_issuer_is_built_once_its_profile_arrives(service, fakes, request_body, issuer):
    event = _requested(request_body(), issuer_id="iss_new")
    with pytest.raises(RetryLater):
        await service.on_requested(event)
    await service.on_issuer(IssuerProfileChanged(**{**{k: v for k, v in issuer.items() if k != "_id"}, "issuer_id": "iss_new"}))
    await service.on_requested(event)
    (built,) = fakes.store.emitted
    assert isinstance(built, InvoiceBuilt) and built.issuer_id == "iss_new"


async def test_unknown_issuer_is_rejected_after_the_wait(service, fakes, request_body):
    event = _requested(request_body(), issuer_id="iss_ghost", age=service_module.ISSUER_WAIT + timedelta(seconds=1))
    await service.on_requested(event)
    (rejected,) = fakes.store.emitted
    assert isinstance(rejected, InvoiceRejected)
    assert (rejected.stage, rejected.service) == ("requested", "cfdi-builder")
    assert [e.code for e in rejected.errors] == ["TIMBRA_ISSUER_UNKNOWN"]
    assert rejected.message == rejected.errors[0].message
    assert fakes.invoices.docs["inv_1"]["issuer_id"] == "iss_ghost"  # the invoice exists to show the rejection
    assert fakes.folios.calls == []


async def test_disabled_type_is_rejected_without_a_folio(service, fakes, request_body):
    await service.on_requested(_requested(request_body(type="T")))
    (rejected,) = fakes.store.emitted
    assert isinstance(rejected, InvoiceRejected)
    (error,) = rejected.errors
    assert (error.code, error.path, error.source) == ("TIMBRA_TYPE_DISABLED", "type", "timbra")
    assert "T" in error.message
    assert fakes.folios.calls == []
    assert fakes.build.calls == []


async def test_issuer_without_enabled_types_accepts_every_type(service, fakes, request_body):
    del fakes.issuers.issuers["iss_1"]["enabled_types"]
    await service.on_requested(_requested(request_body(type="E", related=[{"relationship": "01", "uuids": ["5FB2822E-396D-4725-8521-CDC4BDD20CCF"]}])))
    assert isinstance(fakes.store.emitted[0], InvoiceBuilt)


async def test_invalid_request_is_rejected_with_its_problems(service, fakes, request_body):
    await service.on_requested(_requested(request_body(items=[])))
    (rejected,) = fakes.store.emitted
    assert isinstance(rejected, InvoiceRejected)
    assert [(e.code, e.path) for e in rejected.errors] == [("TIMBRA_ITEMS_REQUIRED", "items")]
    assert fakes.invoices.status_calls == []


async def test_several_problems_are_summarized(service, fakes, request_body):
    await service.on_requested(_requested(request_body(payment_form="ZZ", use="ZZZ")))
    (rejected,) = fakes.store.emitted
    assert len(rejected.errors) >= 2
    assert rejected.message == f"La factura tiene {len(rejected.errors)} errores."


async def test_duplicate_idempotency_key_from_kafka_is_ignored(service, fakes, request_body):
    await service.on_requested(_requested(request_body(idempotency_key="order-1"), invoice_id="inv_a"))
    await service.on_requested(_requested(request_body(idempotency_key="order-1"), invoice_id="inv_b"))
    assert [e.invoice_id for e in fakes.store.emitted] == ["inv_a"]
    assert set(fakes.invoices.docs) == {"inv_a"}


async def test_same_idempotency_key_of_another_issuer_is_not_a_duplicate(service, fakes, request_body, issuer):
    fakes.issuers.issuers["iss_2"] = {**issuer, "issuer_id": "iss_2"}
    await service.on_requested(_requested(request_body(idempotency_key="order-1"), invoice_id="inv_a"))
    await service.on_requested(_requested(request_body(idempotency_key="order-1"), invoice_id="inv_b", issuer_id="iss_2"))
    assert [e.invoice_id for e in fakes.store.emitted] == ["inv_a", "inv_b"]


async def test_request_for_an_invoice_of_another_issuer_is_ignored(service, fakes, request_body):
    await service.on_requested(_requested(request_body()))
    forged = _requested(request_body(), issuer_id="iss_evil")
    await service.on_requested(forged)
    assert len(fakes.store.emitted) == 1
    assert fakes.invoices.docs["inv_1"]["issuer_id"] == "iss_1"


# --------------------------------------------------------------------------- HTTP requests


async def test_http_request_stores_the_invoice_and_emits_invoice_requested(service, fakes, request_body):
    doc, created = await service.request(ISSUER_PRINCIPAL, InvoiceRequest.model_validate(request_body(**{"global": {"periodicity": "01", "months": "01", "year": 2025}})))
    assert created
    assert doc["_id"].startswith("inv_") and doc["status"] == "requested" and doc["source"] == "http"
    assert doc["request"]["global"] == {"periodicity": "01", "months": "01", "year": 2025}
    (event,) = fakes.store.emitted
    assert isinstance(event, InvoiceRequested)
    assert (event.invoice_id, event.issuer_id, event.source) == (doc["_id"], "iss_1", "http")


async def test_http_request_then_pipeline_builds_without_a_second_insert(service, fakes, request_body):
    doc, _ = await service.request(ISSUER_PRINCIPAL, InvoiceRequest.model_validate(request_body()))
    (requested,) = fakes.store.emitted
    await service.on_requested(requested)
    assert len(fakes.invoices.inserts) == 1
    assert isinstance(fakes.store.emitted[-1], InvoiceBuilt)
    assert fakes.invoices.docs[doc["_id"]]["status"] == "built"


async def test_http_request_with_a_known_idempotency_key_returns_the_original(service, fakes, request_body):
    first, created = await service.request(ISSUER_PRINCIPAL, InvoiceRequest.model_validate(request_body(idempotency_key="k1")))
    again, created_again = await service.request(ISSUER_PRINCIPAL, InvoiceRequest.model_validate(request_body(idempotency_key="k1")))
    assert created and not created_again
    assert again["_id"] == first["_id"]
    assert len(fakes.store.emitted) == 1


# --------------------------------------------------------------------------- read model


async def test_on_status_records_rejections_with_their_errors(service, fakes):
    event = InvoiceRejected(invoice_id="inv_1", issuer_id="iss_1", stage="sealed", service="billing", message="Sin folios", errors=[ErrorDetail(code="TIMBRA_NO_CREDITS", message="Sin folios")])
    await service.on_status(event)
    (call,) = fakes.invoices.status_calls
    assert call["status"] is InvoiceStatus.REJECTED
    assert call["service"] == "billing"
    assert call["at"] == event.occurred_at
    assert call["fields"] == {"errors": [{"code": "TIMBRA_NO_CREDITS", "message": "Sin folios", "source": "timbra", "path": None}], "message": "Sin folios"}


async def test_on_status_records_the_uuid_and_the_owning_service(service, fakes):
    summary = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="U", total=Decimal("1"))
    await service.on_status(InvoiceStamped(invoice_id="inv_1", issuer_id="iss_1", summary=summary, uuid="UUID-1", fecha_timbrado="2025-01-01T00:00:00", xml="<x/>", pac="sandbox"))
    await service.on_status(InvoiceEmailed(invoice_id="inv_1", issuer_id="iss_1", recipients=[]))
    stamped, emailed = fakes.invoices.status_calls
    assert (stamped["status"], stamped["service"], stamped["fields"]) == (InvoiceStatus.STAMPED, "stamping", {"uuid": "UUID-1"})
    assert (emailed["status"], emailed["service"], emailed["fields"]) == (InvoiceStatus.EMAILED, "notifier", {})


# --------------------------------------------------------------------------- sweeper


def _stuck_invoice(fakes, invoice_id: str, status: str, *, idle: timedelta, redrives: int = 0) -> None:
    fakes.invoices.docs[invoice_id] = {"_id": invoice_id, "issuer_id": "iss_1", "status": status, "updated_at": utcnow() - idle, "redrives": redrives, "redrive_at": None}


async def test_sweeper_redrives_stuck_invoices(service, fakes):
    _stuck_invoice(fakes, "inv_stuck", "sealed", idle=timedelta(minutes=5))
    _stuck_invoice(fakes, "inv_recent", "sealed", idle=timedelta(seconds=5))
    _stuck_invoice(fakes, "inv_done", "emailed", idle=timedelta(hours=1))
    _stuck_invoice(fakes, "inv_rejected", "rejected", idle=timedelta(hours=1))

    assert await service.sweep_once() == 1
    (command,) = fakes.redrives.commands
    assert isinstance(command, RedriveInvoice)
    assert (command.invoice_id, command.issuer_id, command.stuck_status, command.attempt) == ("inv_stuck", "iss_1", "sealed", 1)


async def test_sweeper_backs_off_exponentially(service, fakes):
    _stuck_invoice(fakes, "inv_1", "funded", idle=timedelta(minutes=5))
    before = utcnow()
    await service.sweep_once()
    ((invoice_id, attempt, next_at),) = fakes.invoices.redriven
    assert (invoice_id, attempt) == ("inv_1", 1)
    assert before + timedelta(seconds=59) <= next_at <= utcnow() + timedelta(seconds=61)

    # a second sweep right away does nothing: the invoice is backing off
    assert await service.sweep_once() == 0
    assert len(fakes.redrives.commands) == 1


@pytest.mark.parametrize(("previous", "factor"), [(1, 2), (2, 4), (4, 16), (5, 32), (6, 32), (20, 32)])
async def test_sweeper_backoff_doubles_and_is_capped(service, fakes, previous, factor):
    _stuck_invoice(fakes, "inv_1", "stamped", idle=timedelta(hours=2), redrives=previous)
    before = utcnow()
    await service.sweep_once()
    (command,) = fakes.redrives.commands
    assert command.attempt == previous + 1
    ((_, attempt, next_at),) = fakes.invoices.redriven
    assert attempt == previous + 1
    expected = service.stuck_after * factor
    assert before + expected - timedelta(seconds=1) <= next_at <= utcnow() + expected + timedelta(seconds=1)


async def test_sweeper_with_nothing_stuck(service, fakes):
    assert await service.sweep_once() == 0
    assert fakes.redrives.commands == [] and fakes.invoices.redriven == []


async def test_a_batch_of_statuses_is_one_bulk_write_in_order(service, fakes):
    summary = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="U", total=Decimal("1"))
    events = [
        InvoiceStamped(invoice_id="inv_1", issuer_id="iss_1", summary=summary, uuid="UUID-1", fecha_timbrado="2025-01-01T00:00:00", xml="<x/>", pac="sandbox"),
        InvoiceRejected(invoice_id="inv_2", issuer_id="iss_1", stage="sealed", service="billing", message="Sin folios", errors=[]),
        InvoiceEmailed(invoice_id="inv_1", issuer_id="iss_1", recipients=[]),
    ]
    await service.on_statuses(events)
    assert fakes.invoices.bulk_calls == 1
    calls = [(c["invoice_id"], c["status"], c["service"]) for c in fakes.invoices.status_calls]
    assert calls == [("inv_1", InvoiceStatus.STAMPED, "stamping"), ("inv_2", InvoiceStatus.REJECTED, "billing"), ("inv_1", InvoiceStatus.EMAILED, "notifier")]
    assert fakes.invoices.status_calls[0]["fields"] == {"uuid": "UUID-1"}
