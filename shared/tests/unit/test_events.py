"""Event and command contracts: the envelope, one ``event_type`` per class, the ``StatusEvent``
union, and the validation of the public ``InvoiceRequest``."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from timbra_shared import topics
from timbra_shared.events import (
    PIPELINE_EVENTS,
    SCHEMA_VERSION,
    DeadLetter,
    ErrorDetail,
    InvoiceBuilt,
    InvoiceEmailed,
    InvoiceFunded,
    InvoiceRejected,
    InvoiceRendered,
    InvoiceRequest,
    InvoiceRequested,
    InvoiceSealed,
    InvoiceStamped,
    InvoiceStampFailed,
    InvoiceSummary,
    IssuerProfileChanged,
    RedriveInvoice,
    StatusEvent,
)

SUMMARY = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="UNIVERSIDAD ROBOTICA ESPAÑOLA", total=Decimal("232.00"))
IDS = {"invoice_id": "inv_1", "issuer_id": "iss_1"}

# One valid instance of every status event, keyed by its class.
STATUS_SAMPLES = {
    InvoiceBuilt: InvoiceBuilt(**IDS, summary=SUMMARY, xml="<cfdi/>"),
    InvoiceSealed: InvoiceSealed(**IDS, summary=SUMMARY, xml="<cfdi/>", no_certificado="30001000000500003416"),
    InvoiceFunded: InvoiceFunded(**IDS, summary=SUMMARY, xml="<cfdi/>", reservation_id="res_1"),
    InvoiceRejected: InvoiceRejected(**IDS, stage="sealed", service="billing", message="Sin folios", errors=[ErrorDetail(code="TIMBRA_NO_CREDITS", message="Sin folios")]),
    InvoiceStamped: InvoiceStamped(**IDS, summary=SUMMARY, uuid="5FB2822E-396D-4725-8521-CDC4BDD20CCF", fecha_timbrado="2025-06-15T12:00:00", xml="<cfdi/>", pac="sandbox"),
    InvoiceStampFailed: InvoiceStampFailed(**IDS, message="rechazado", errors=[ErrorDetail(code="CFDI40102", message="sello", source="pac")]),
    InvoiceRendered: InvoiceRendered(**IDS, summary=SUMMARY, uuid="5FB2822E-396D-4725-8521-CDC4BDD20CCF", pdf_bytes=1234),
    InvoiceEmailed: InvoiceEmailed(**IDS, recipients=["a@example.com"], message_id="<inv_1@timbra.local>"),
}

PRODUCT = {"description": "Servicio", "product_key": "01010101", "unit_key": "E48", "price": "100.00"}


def _request(**overrides):
    body = {"customer": {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991"}, "items": [{"product": dict(PRODUCT)}]}
    body.update(overrides)
    return body


# --------------------------------------------------------------------------- envelope


def test_envelope_defaults_are_filled_in():
    event = InvoiceBuilt(**IDS, summary=SUMMARY, xml="<cfdi/>")
    assert event.invoice_id == "inv_1" and event.issuer_id == "iss_1"
    assert len(event.event_id) == 26
    assert event.schema_version == SCHEMA_VERSION == 1
    assert event.occurred_at.tzinfo is not None
    assert abs((datetime.now(UTC) - event.occurred_at).total_seconds()) < 5


def test_every_event_gets_its_own_event_id():
    a = InvoiceEmailed(**IDS, recipients=[])
    b = InvoiceEmailed(**IDS, recipients=[])
    assert a.event_id != b.event_id


def test_envelope_requires_invoice_and_issuer():
    with pytest.raises(ValidationError) as info:
        InvoiceEmailed(recipients=[])
    missing = {err["loc"][0] for err in info.value.errors() if err["type"] == "missing"}
    assert {"invoice_id", "issuer_id"} <= missing


def test_envelope_ignores_fields_from_newer_producers():
    raw = json.loads(STATUS_SAMPLES[InvoiceEmailed].model_dump_json())
    raw["added_in_v2"] = {"anything": True}
    event = InvoiceEmailed.model_validate_json(json.dumps(raw))
    assert event.recipients == ["a@example.com"]
    assert not hasattr(event, "added_in_v2")


def test_events_are_immutable():
    event = STATUS_SAMPLES[InvoiceEmailed]
    with pytest.raises(ValidationError):
        event.invoice_id = "inv_other"  # type: ignore[misc]


@pytest.mark.parametrize("cls", [*PIPELINE_EVENTS.values(), RedriveInvoice], ids=lambda c: c.__name__)
def test_event_type_is_the_topic_and_nothing_else(cls):
    field = cls.model_fields["event_type"]
    assert field.default == cls.topic
    assert get_args(field.annotation) == (cls.topic,)


@pytest.mark.parametrize("cls", list(STATUS_SAMPLES), ids=lambda c: c.__name__)
def test_an_event_refuses_another_topics_event_type(cls):
    raw = json.loads(STATUS_SAMPLES[cls].model_dump_json())
    raw["event_type"] = topics.INVOICE_REQUESTED
    with pytest.raises(ValidationError):
        cls.model_validate(raw)


def test_pipeline_events_cover_every_pipeline_topic_once():
    assert tuple(PIPELINE_EVENTS) == topics.PIPELINE_TOPICS
    assert all(cls.topic == topic for topic, cls in PIPELINE_EVENTS.items())
    assert len(set(topics.ALL_TOPICS)) == len(topics.ALL_TOPICS)
    assert topics.DEAD_LETTER in topics.ALL_TOPICS and topics.INVOICE_REDRIVE in topics.ALL_TOPICS


# --------------------------------------------------------------------------- StatusEvent

STATUS_ADAPTER = TypeAdapter(StatusEvent)


def test_status_event_union_covers_exactly_the_status_topics():
    (union, *_meta) = get_args(StatusEvent)
    members = get_args(union)
    assert sorted(m.topic for m in members) == sorted(topics.STATUS_TOPICS)
    assert set(members) == set(STATUS_SAMPLES)


@pytest.mark.parametrize("cls", list(STATUS_SAMPLES), ids=lambda c: c.__name__)
def test_status_event_parses_each_status_event_as_its_own_class(cls):
    original = STATUS_SAMPLES[cls]
    parsed = STATUS_ADAPTER.validate_json(original.model_dump_json())
    assert type(parsed) is cls
    assert parsed == original


def test_status_event_parses_bytes_from_the_wire_with_unknown_fields():
    raw = json.loads(STATUS_SAMPLES[InvoiceStamped].model_dump_json())
    raw["future"] = 1
    parsed = STATUS_ADAPTER.validate_json(json.dumps(raw).encode())
    assert isinstance(parsed, InvoiceStamped)
    assert parsed.uuid == "5FB2822E-396D-4725-8521-CDC4BDD20CCF"


@pytest.mark.parametrize("event_type", [topics.INVOICE_REQUESTED, topics.INVOICE_REDRIVE, "invoice.unknown", None])
def test_status_event_refuses_what_is_not_a_status(event_type):
    raw = json.loads(STATUS_SAMPLES[InvoiceEmailed].model_dump_json())
    raw["event_type"] = event_type
    with pytest.raises(ValidationError):
        STATUS_ADAPTER.validate_python(raw)


def test_decimal_totals_survive_the_wire_exactly():
    event = STATUS_SAMPLES[InvoiceStamped]
    parsed = STATUS_ADAPTER.validate_json(event.model_dump_json())
    assert parsed.summary.total == Decimal("232.00")
    assert isinstance(parsed.summary.total, Decimal)


# --------------------------------------------------------------------------- InvoiceRequest


def test_invoice_request_defaults():
    request = InvoiceRequest.model_validate(_request())
    assert request.type == "I" and request.currency == "MXN" and request.export == "01"
    product = request.items[0].product
    assert request.items[0].quantity == Decimal(1)
    assert product.taxability == "02"
    assert [(t.type, t.rate, t.factor, t.withholding) for t in product.taxes] == [("IVA", Decimal("0.16"), "Tasa", False)]


def test_global_alias_is_accepted_and_serialized_back_as_global():
    request = InvoiceRequest.model_validate(_request(customer=None, **{"global": {"periodicity": "04", "months": "06", "year": 2025}}))
    assert request.global_info is not None
    assert (request.global_info.periodicity, request.global_info.months, request.global_info.year) == ("04", "06", 2025)
    dumped = request.model_dump(mode="json", by_alias=True)
    assert dumped["global"] == {"periodicity": "04", "months": "06", "year": 2025}
    assert "global_info" not in dumped
    assert InvoiceRequest.model_validate(dumped) == request


def test_global_info_may_also_be_given_by_its_python_name():
    request = InvoiceRequest.model_validate(_request(global_info={"periodicity": "01", "months": "01", "year": 2024}))
    assert request.global_info is not None and request.global_info.year == 2024


def test_invoice_requested_round_trips_through_json_with_the_alias():
    request = InvoiceRequest.model_validate(_request(**{"global": {"periodicity": "01", "months": "13", "year": 2025}}))
    event = InvoiceRequested(**IDS, request=request)
    wire = event.model_dump_json(by_alias=True)
    assert '"global"' in wire
    assert InvoiceRequested.model_validate_json(wire) == event


@pytest.mark.parametrize(
    "global_info",
    [
        {"periodicity": "06", "months": "01", "year": 2025},
        {"periodicity": "01", "months": "19", "year": 2025},
        {"periodicity": "01", "months": "00", "year": 2025},
        {"periodicity": "01", "months": "1", "year": 2025},
        {"periodicity": "01", "months": "01", "year": 2020},
    ],
)
def test_global_info_is_validated(global_info):
    with pytest.raises(ValidationError):
        InvoiceRequest.model_validate(_request(**{"global": global_info}))


def test_up_to_ten_emails_are_accepted():
    request = InvoiceRequest.model_validate(_request(emails=[f"u{i}@example.com" for i in range(10)]))
    assert len(request.emails) == 10


def test_more_than_ten_emails_are_refused():
    with pytest.raises(ValidationError) as info:
        InvoiceRequest.model_validate(_request(emails=[f"u{i}@example.com" for i in range(11)]))
    (error,) = info.value.errors()
    assert error["loc"] == ("emails",)
    assert error["type"] == "too_long"


@pytest.mark.parametrize("product_key", ["0101010", "010101010", "0101010A", "", " 01010101", "01-01-01"])
def test_bad_product_key_is_refused_with_its_path(product_key):
    with pytest.raises(ValidationError) as info:
        InvoiceRequest.model_validate(_request(items=[{"product": {**PRODUCT, "product_key": product_key}}]))
    assert [e["loc"] for e in info.value.errors()] == [("items", 0, "product", "product_key")]


@pytest.mark.parametrize(
    ("item", "loc"),
    [
        ({"product": {**PRODUCT, "price": "-1"}}, ("items", 0, "product", "price")),
        ({"product": {**PRODUCT, "price": "1.0000001"}}, ("items", 0, "product", "price")),
        ({"product": {**PRODUCT, "description": "   "}}, ("items", 0, "product", "description")),
        ({"product": {**PRODUCT, "taxability": "06"}}, ("items", 0, "product", "taxability")),
        ({"product": PRODUCT, "quantity": "0"}, ("items", 0, "quantity")),
        ({"product": PRODUCT, "discount": "-5"}, ("items", 0, "discount")),
        ({"product": {**PRODUCT, "taxes": [{"type": "IVA", "rate": "101"}]}}, ("items", 0, "product", "taxes", 0, "rate")),
        ({"product": {**PRODUCT, "taxes": [{"type": "VAT", "rate": "0.16"}]}}, ("items", 0, "product", "taxes", 0, "type")),
    ],
)
def test_item_fields_are_validated(item, loc):
    with pytest.raises(ValidationError) as info:
        InvoiceRequest.model_validate(_request(items=[item]))
    assert loc in [e["loc"] for e in info.value.errors()]


def test_unknown_request_fields_are_refused():
    with pytest.raises(ValidationError) as info:
        InvoiceRequest.model_validate(_request(custmer={"rfc": "X"}))
    assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("type_", ["N", "i", ""])
def test_comprobante_type_is_a_closed_set(type_):
    with pytest.raises(ValidationError):
        InvoiceRequest.model_validate(_request(type=type_))


def test_idempotency_key_length_is_bounded():
    InvoiceRequest.model_validate(_request(idempotency_key="k" * 200))
    with pytest.raises(ValidationError):
        InvoiceRequest.model_validate(_request(idempotency_key="k" * 201))


def test_related_needs_at_least_one_uuid():
    with pytest.raises(ValidationError):
        InvoiceRequest.model_validate(_request(related=[{"relationship": "04", "uuids": []}]))


# --------------------------------------------------------------------------- other contracts


def test_issuer_profile_is_keyed_by_issuer_and_defaults_to_every_type():
    profile = IssuerProfileChanged(issuer_id="iss_1", version=3, rfc="EKU9003173C9", legal_name="ESCUELA KEMPER URGATE", tax_regime="601", zip="42501", slug="escuela-kemper-urgate")
    assert profile.topic == topics.ISSUER_PROFILE
    assert profile.enabled_types == ["I", "E", "T", "P"]
    assert not hasattr(profile, "invoice_id")


def test_dead_letter_shape():
    letter = DeadLetter(service="billing", original_topic=topics.INVOICE_SEALED, reason="bad", error_type="ValidationError", payload="{")
    assert letter.topic == topics.DEAD_LETTER
    assert letter.event_type == "dead_letter"
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
    with pytest.raises(ValidationError):
        DeadLetter.model_validate({**letter.model_dump(), "unexpected": 1})


def test_redrive_defaults_to_first_attempt():
    command = RedriveInvoice(**IDS, stuck_status="sealed")
    assert command.attempt == 1
    assert command.topic == topics.INVOICE_REDRIVE == command.event_type
