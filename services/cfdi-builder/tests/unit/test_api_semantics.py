"""Idempotency conflicts and requests produced straight onto Kafka that fail validation
(``InvoiceService`` with the in-memory fakes of conftest.py)."""

from datetime import timedelta

import pytest

from timbra_cfdi_builder.service import IdempotencyConflict
from timbra_shared import topics
from timbra_shared.auth import Principal
from timbra_shared.errors import Problem, RetryLater
from timbra_shared.events import InvoiceBuilt, InvoiceRejected, InvoiceRequest, InvoiceRequested
from timbra_shared.ids import utcnow

PRINCIPAL = Principal(kind="issuer", issuer_id="iss_1", livemode=False, key_id="key_1")


async def test_http_replay_with_the_same_body_returns_the_first_invoice(service, fakes, request_body):
    first, created = await service.request(PRINCIPAL, InvoiceRequest.model_validate(request_body(idempotency_key="k-1")))
    again, created_again = await service.request(PRINCIPAL, InvoiceRequest.model_validate(request_body(idempotency_key="k-1")))
    assert (created, created_again) == (True, False)
    assert again["_id"] == first["_id"] and len(fakes.invoices.docs) == 1


async def test_http_replay_with_another_body_is_a_conflict(service, fakes, request_body):
    first, _ = await service.request(PRINCIPAL, InvoiceRequest.model_validate(request_body(idempotency_key="k-2")))
    with pytest.raises(IdempotencyConflict) as raised:
        await service.request(PRINCIPAL, InvoiceRequest.model_validate(request_body(idempotency_key="k-2", payment_form="01")))
    assert raised.value.invoice_id == first["_id"]
    assert len(fakes.invoices.docs) == 1


async def test_kafka_duplicate_with_another_body_becomes_a_rejected_invoice(service, fakes, request_body):
    await service.on_requested(InvoiceRequested(invoice_id="inv_a", issuer_id="iss_1", request=InvoiceRequest.model_validate(request_body(idempotency_key="k-3"))))
    await service.on_requested(InvoiceRequested(invoice_id="inv_b", issuer_id="iss_1", request=InvoiceRequest.model_validate(request_body(idempotency_key="k-3", payment_form="01"))))
    built, rejected = fakes.store.emitted
    assert isinstance(built, InvoiceBuilt) and built.invoice_id == "inv_a"
    assert isinstance(rejected, InvoiceRejected) and rejected.invoice_id == "inv_b"
    assert [(e.code, e.path) for e in rejected.errors] == [("TIMBRA_IDEMPOTENCY_CONFLICT", "idempotency_key")]
    assert fakes.invoices.docs["inv_b"]["idempotency_key"] is None  # the key still names inv_a
    assert fakes.invoices.docs["inv_a"]["idempotency_key"] == "k-3"


async def test_invalid_request_on_kafka_becomes_a_rejected_invoice_once(service, fakes):
    payload = {"invoice_id": "inv_x", "issuer_id": "iss_1", "request": {"type": "E", "items": [{"product": {"description": "x"}}]}}
    problems = [Problem("TIMBRA_VALIDATION", "items[0].product.price: Campo obligatorio.", path="items[0].product.price")]
    assert await service.on_invalid_request(payload, problems) is True
    assert await service.on_invalid_request(payload, problems) is True  # redelivered: nothing new
    (rejected,) = fakes.store.emitted
    assert rejected.invoice_id == "inv_x" and rejected.stage == "requested"
    assert [e.path for e in rejected.errors] == ["items[0].product.price"]
    doc = fakes.invoices.docs["inv_x"]
    assert (doc["issuer_id"], doc["source"], doc["request"]["type"]) == ("iss_1", "kafka", "E")
    assert fakes.store.dedupe_keys[0] == f"{topics.INVOICE_REQUESTED}:inv_x"


@pytest.mark.parametrize("payload", [
    {"issuer_id": "iss_1", "request": {}},                          # no invoice id
    {"invoice_id": "inv_y", "request": {}},                         # no issuer
    {"invoice_id": "inv_y", "issuer_id": "iss_unknown", "request": {}},
    {"invoice_id": 7, "issuer_id": "iss_1", "request": {}},
])
async def test_invalid_request_without_a_known_issuer_is_not_recorded(service, fakes, payload):
    assert await service.on_invalid_request(payload, [Problem("TIMBRA_VALIDATION", "x")]) is False
    assert fakes.store.emitted == [] and fakes.invoices.docs == {}


async def test_invalid_request_naming_another_issuers_invoice_is_not_recorded(service, fakes, request_body):
    await service.on_requested(InvoiceRequested(invoice_id="inv_a", issuer_id="iss_1", request=InvoiceRequest.model_validate(request_body())))
    assert await service.on_invalid_request({"invoice_id": "inv_a", "issuer_id": "iss_2", "request": {}}, [Problem("TIMBRA_VALIDATION", "x")]) is False
    assert len(fakes.store.emitted) == 1


async def test_unknown_issuer_with_a_clock_far_ahead_is_rejected_not_retried_forever(service, fakes, request_body):
    future = InvoiceRequested(invoice_id="inv_f", issuer_id="iss_nobody", request=InvoiceRequest.model_validate(request_body()), occurred_at=utcnow() + timedelta(days=1))
    await service.on_requested(future)
    (rejected,) = fakes.store.emitted
    assert rejected.errors[0].code == "TIMBRA_ISSUER_UNKNOWN"
    recent = InvoiceRequested(invoice_id="inv_g", issuer_id="iss_nobody", request=InvoiceRequest.model_validate(request_body()))
    with pytest.raises(RetryLater):  # just created: the issuer's profile may not be projected yet
        await service.on_requested(recent)


async def test_customer_fields_for_the_list_filters(service, fakes, request_body):
    await service.on_requested(InvoiceRequested(invoice_id="inv_c", issuer_id="iss_1", request=InvoiceRequest.model_validate(request_body())))
    doc = fakes.invoices.docs["inv_c"]
    assert doc["customer_rfc"] == "URE180429TM6" and doc["customer_id"] is None
    (status_call,) = fakes.invoices.status_calls
    assert status_call["fields"]["customer_rfc"] == "URE180429TM6"


def test_a_final_status_recorded_at_the_same_instant_as_its_step_reads_last() -> None:
    from timbra_cfdi_builder.api import present

    at = utcnow()
    doc = {"_id": "inv_1", "issuer_id": "iss_1", "status": "canceled", "created_at": at, "timeline": [
        {"status": "cancellation_pending", "at": at - timedelta(seconds=5), "service": "cancellation"},
        {"status": "canceled", "at": at, "service": "cancellation"},
        {"status": "cancellation_accepted", "at": at, "service": "cancellation"},
    ]}
    assert [t["status"] for t in present(doc)["timeline"]] == ["cancellation_pending", "cancellation_accepted", "canceled"]


def test_the_invoice_names_its_customer_as_requested_then_as_built() -> None:
    from timbra_cfdi_builder.api import present

    at = utcnow()
    requested = {"_id": "inv_1", "issuer_id": "iss_1", "status": "requested", "created_at": at, "customer_id": None, "customer_rfc": "URE180429TM6",
                 "request": {"customer": {"rfc": "ure180429tm6", "legal_name": "Universidad Robótica Española"}}}
    assert present(requested)["customer"] == {"id": None, "rfc": "URE180429TM6", "legal_name": "Universidad Robótica Española"}
    built = {**requested, "status": "built", "customer_id": "cus_1", "summary": {"rfc_receptor": "URE180429TM6", "nombre_receptor": "UNIVERSIDAD ROBOTICA ESPAÑOLA"}}
    assert present(built)["customer"] == {"id": "cus_1", "rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA"}
