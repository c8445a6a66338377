"""How the notifier reads the status topics: invoice.requested leniently (producers writing straight
to Kafka may leave the envelope fields out, and an invalid request is the builder's to reject), every
other event strictly."""

import pytest
from pydantic import TypeAdapter, ValidationError

from timbra_notifier.handlers import PipelineEvent
from timbra_shared.events import InvoiceBuilt, InvoiceRequested, InvoiceRequestSeen, InvoiceSummary

EVENTS = TypeAdapter(PipelineEvent)
REQUEST = {
    "customer": {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991"},
    "items": [{"product": {"description": "Colegiatura", "product_key": "86121500", "unit_key": "E48", "price": "562.50"}, "quantity": "1"}],
    "payment_form": "01", "payment_method": "PUE", "notes": "Entregar en recepción",
}


def test_a_minimal_request_without_envelope_fields_is_read():
    event = EVENTS.validate_python({"invoice_id": "inv_1", "issuer_id": "iss_1", "request": REQUEST})
    assert isinstance(event, InvoiceRequestSeen)
    parsed = event.parsed()
    assert isinstance(parsed, InvoiceRequested) and parsed.invoice_id == "inv_1" and parsed.request.notes == "Entregar en recepción"


def test_an_invalid_request_is_seen_but_not_parsed():
    event = EVENTS.validate_python({"event_type": "invoice.requested", "invoice_id": "inv_2", "issuer_id": "iss_1", "request": {**REQUEST, "payment_method": "AL CONTADO", "items": [{"quantity": "muchos"}]}})
    assert isinstance(event, InvoiceRequestSeen) and event.parsed() is None


def test_other_events_stay_strict():
    summary = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="URE", total="10.00")
    built = InvoiceBuilt(invoice_id="inv_3", issuer_id="iss_1", summary=summary, xml="<x/>")
    assert isinstance(EVENTS.validate_json(built.model_dump_json()), InvoiceBuilt)
    with pytest.raises(ValidationError):
        EVENTS.validate_python({"event_type": "invoice.built", "invoice_id": "inv_3", "issuer_id": "iss_1"})  # no summary
    with pytest.raises(ValidationError):
        EVENTS.validate_python({"invoice_id": "inv_4", "issuer_id": "iss_1"})  # neither a type nor a request
