"""Type P receipts (Pagos 2.0) from the request's ``payments``: SAT's fixed values, the taxes of
each related document split out of the amount paid, and the refusals."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from lxml import etree

from timbra_cfdi_builder.domain.comprobante import build_cfdi
from timbra_cfdi_builder.service import InvoiceInvalid
from timbra_shared.events import InvoiceRequest

ISSUER = {"rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE", "tax_regime": "601", "zip": "42501"}
CUSTOMER = {"rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO DE CUAUTITLAN IZCALLI", "tax_regime": "603", "zip": "54700", "use": "G03"}
P20 = "{http://www.sat.gob.mx/Pagos20}"
UUID = "759B5415-2893-41BD-AB15-FA5C51DA05A4"


def receipt(**payment: object) -> InvoiceRequest:
    doc = {"uuid": UUID.lower(), "installment": 2, "previous_balance": "1160.00", "amount_paid": "1000.00"}
    body = {"date": "2026-01-15T12:00:00", "payment_form": "03", "amount": "1000.00", "related_documents": [doc]} | payment
    return InvoiceRequest.model_validate({"type": "P", "customer": CUSTOMER, "payments": [body]})


def test_payment_receipt_values_and_taxes() -> None:
    built = build_cfdi(receipt(), ISSUER, serie="P", folio=7, now=datetime.now(UTC))
    root = etree.fromstring(built.xml.encode() if isinstance(built.xml, str) else built.xml)
    assert (root.get("TipoDeComprobante"), root.get("Moneda"), root.get("Total"), root.get("FormaPago"), root.get("MetodoPago")) == ("P", "XXX", "0", None, None)
    assert root.find("{http://www.sat.gob.mx/cfd/4}Receptor").get("UsoCFDI") == "CP01"
    pago = root.find(f".//{P20}Pago")
    assert (pago.get("FechaPago"), pago.get("FormaDePagoP"), pago.get("Monto")) == ("2026-01-15T12:00:00", "03", "1000.00")
    doc = pago.find(f"{P20}DoctoRelacionado")
    assert (doc.get("IdDocumento"), doc.get("NumParcialidad"), doc.get("ImpSaldoAnt"), doc.get("ImpPagado"), doc.get("ImpSaldoInsoluto")) == (UUID, "2", "1160.00", "1000.00", "160.00")
    traslado = doc.find(f".//{P20}TrasladoDR")
    assert Decimal(traslado.get("BaseDR")) + Decimal(traslado.get("ImporteDR")) == Decimal("1000.00")
    assert (traslado.get("BaseDR"), traslado.get("ImporteDR")) == ("862.07", "137.93")
    assert built.summary.customer_id is None and built.summary.use == "CP01", "the catalog must not learn CP01 as the customer's default"


def test_payment_receipt_refusals() -> None:
    with pytest.raises(InvoiceInvalid) as no_payments:
        build_cfdi(InvoiceRequest.model_validate({"type": "P", "customer": CUSTOMER}), ISSUER, serie=None, folio=1, now=datetime.now(UTC))
    assert no_payments.value.problems[0].code == "TIMBRA_PAYMENTS_REQUIRED"
    invoice = InvoiceRequest.model_validate({"type": "I", "customer": CUSTOMER, "payment_form": "03", "payment_method": "PUE",
                                             "items": [{"product": {"description": "x", "product_key": "81111500", "unit_key": "E48", "price": "1"}}],
                                             "payments": receipt().model_dump(mode="json")["payments"]})
    with pytest.raises(InvoiceInvalid) as wrong_type:
        build_cfdi(invoice, ISSUER, serie=None, folio=1, now=datetime.now(UTC))
    assert wrong_type.value.problems[0].code == "TIMBRA_PAYMENTS_TYPE"
