"""``build_cfdi``: from Timbra's request vocabulary to an unsigned CFDI 4.0."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from timbra_cfdi_builder.domain.comprobante import build_cfdi
from timbra_cfdi_builder.service import InvoiceInvalid
from timbra_shared.events import InvoiceRequest

NS = {"cfdi": "http://www.sat.gob.mx/cfd/4"}


def _now() -> datetime:
    # The catalog validator compares Fecha with the wall clock, so "now" must be close to it.
    return datetime.now(UTC).replace(microsecond=0)


def _build(body, issuer, *, serie="F", folio=7, now=None):
    return build_cfdi(InvoiceRequest.model_validate(body), issuer, serie=serie, folio=folio, now=now or _now())


def _root(built):
    return etree.fromstring(built.xml)


def _node(root, path):
    (node,) = root.xpath(path, namespaces=NS)
    return node.attrib


def test_realistic_invoice(issuer, request_body):
    now = _now()
    built = _build(request_body(), issuer, now=now)
    root = _root(built)
    comprobante = root.attrib
    assert comprobante["Version"] == "4.0"
    assert comprobante["TipoDeComprobante"] == "I"
    assert comprobante["Serie"] == "F" and comprobante["Folio"] == "7"
    assert comprobante["SubTotal"] == "200.00"
    assert comprobante["Total"] == "232.00"
    assert comprobante["Moneda"] == "MXN"
    assert comprobante["LugarExpedicion"] == "42501"
    assert comprobante["FormaPago"] == "03" and comprobante["MetodoPago"] == "PUE"
    assert comprobante["Exportacion"] == "01"
    assert _node(root, "/cfdi:Comprobante/cfdi:Emisor") == {"Rfc": "EKU9003173C9", "Nombre": "ESCUELA KEMPER URGATE", "RegimenFiscal": "601"}
    assert _node(root, "/cfdi:Comprobante/cfdi:Receptor") == {
        "Rfc": "URE180429TM6",
        "Nombre": "UNIVERSIDAD ROBOTICA ESPAÑOLA",
        "DomicilioFiscalReceptor": "86991",
        "RegimenFiscalReceptor": "601",
        "UsoCFDI": "G03",
    }
    concepto = _node(root, "//cfdi:Concepto")
    assert (concepto["ClaveProdServ"], concepto["Cantidad"], concepto["ClaveUnidad"], concepto["ValorUnitario"], concepto["Importe"], concepto["ObjetoImp"]) == ("81111500", "2", "E48", "100.00", "200.00", "02")
    traslado = _node(root, "/cfdi:Comprobante/cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado")
    assert (traslado["Base"], traslado["Impuesto"], traslado["TipoFactor"], traslado["TasaOCuota"], traslado["Importe"]) == ("200.00", "002", "Tasa", "0.160000", "32.00")
    assert _node(root, "/cfdi:Comprobante/cfdi:Impuestos")["TotalImpuestosTrasladados"] == "32.00"
    assert not root.xpath("//cfdi:InformacionGlobal", namespaces=NS)


def test_fecha_is_local_time_at_the_place_of_issue(issuer, request_body):
    now = _now()
    built = _build(request_body(), issuer, now=now)
    expected = now.astimezone(ZoneInfo("America/Mexico_City")).strftime("%Y-%m-%dT%H:%M:%S")
    assert _root(built).attrib["Fecha"] == expected
    assert built.summary.fecha == expected


def test_summary_carries_what_downstream_needs(issuer, request_body):
    built = _build(request_body(emails=["conta@ure.mx", "pagos@ure.mx"], ticket_id="t_1"), issuer)
    summary = built.summary
    assert (summary.type, summary.serie, summary.folio) == ("I", "F", "7")
    assert (summary.rfc_emisor, summary.rfc_receptor, summary.nombre_receptor) == ("EKU9003173C9", "URE180429TM6", "UNIVERSIDAD ROBOTICA ESPAÑOLA")
    assert summary.total == Decimal("232.00")
    assert summary.use == "G03" and summary.ticket_id == "t_1"
    # customer email first, duplicates removed, order kept
    assert summary.recipients == ["pagos@ure.mx", "conta@ure.mx"]


def test_recipients_are_capped_at_ten(issuer, request_body, customer):
    customer["emails"] = [f"c{i}@ure.mx" for i in range(8)]
    built = _build(request_body(customer=customer, emails=[f"r{i}@ure.mx" for i in range(8)]), issuer)
    assert len(built.summary.recipients) == 10
    assert built.summary.recipients[0] == "pagos@ure.mx"


def test_publico_en_general_with_global_information(issuer, product):
    body = {"items": [{"product": product}], "payment_form": "01", "payment_method": "PUE", "global": {"periodicity": "04", "months": "05", "year": 2025}}
    built = _build(body, issuer, serie=None, folio=None)
    root = _root(built)
    assert _node(root, "/cfdi:Comprobante/cfdi:Receptor") == {
        "Rfc": "XAXX010101000",
        "Nombre": "PUBLICO EN GENERAL",
        "DomicilioFiscalReceptor": "42501",
        "RegimenFiscalReceptor": "616",
        "UsoCFDI": "S01",
    }
    assert _node(root, "/cfdi:Comprobante/cfdi:InformacionGlobal") == {"Periodicidad": "04", "Meses": "05", "Año": "2025"}
    assert "Serie" not in root.attrib and "Folio" not in root.attrib
    assert built.summary.rfc_receptor == "XAXX010101000" and built.summary.recipients == []


def test_generic_rfc_given_as_customer_uses_the_issuer_zip(issuer, request_body, customer):
    customer.update(rfc="xaxx-010101-000", legal_name="PUBLICO EN GENERAL", tax_regime="616", zip="06000")
    built = _build(request_body(customer=customer, use=None, **{"global": {"periodicity": "01", "months": "01", "year": 2025}}), issuer)
    receptor = _node(_root(built), "/cfdi:Comprobante/cfdi:Receptor")
    assert receptor["Rfc"] == "XAXX010101000"
    assert receptor["DomicilioFiscalReceptor"] == "42501"
    assert receptor["UsoCFDI"] == "S01"


def test_customer_rfc_is_normalized(issuer, request_body, customer):
    customer["rfc"] = "ure-180429 tm6"
    built = _build(request_body(customer=customer), issuer)
    assert _node(_root(built), "/cfdi:Comprobante/cfdi:Receptor")["Rfc"] == "URE180429TM6"


def test_use_defaults_to_the_customer_then_g03(issuer, request_body, customer):
    assert _build(request_body(use=None), issuer).summary.use == "G03"
    customer["use"] = "G01"
    assert _build(request_body(use=None, customer=customer), issuer).summary.use == "G01"
    assert _build(request_body(use="G03", customer=customer), issuer).summary.use == "G03"


def test_tax_included_price_is_split_out(issuer, request_body, product):
    product.update(price="116.00", tax_included=True)
    built = _build(request_body(items=[{"product": product}]), issuer)
    root = _root(built)
    assert _node(root, "//cfdi:Concepto")["ValorUnitario"] == "100.000000"
    assert root.attrib["SubTotal"] == "100.00"
    assert root.attrib["Total"] == "116.00"


@pytest.mark.parametrize(("price", "quantity"), [("100.00", "1"), ("10.00", "3"), ("99.99", "2"), ("2.00", "9"), ("5.00", "11")])
def test_tax_included_total_is_what_the_customer_was_quoted(issuer, request_body, product, price, quantity):
    product.update(price=price, tax_included=True)
    built = _build(request_body(items=[{"product": product, "quantity": quantity}]), issuer)
    assert Decimal(_root(built).attrib["Total"]) == (Decimal(price) * Decimal(quantity)).quantize(Decimal("0.01"))


@pytest.mark.parametrize(("price", "quantity"), [("1.00", "7"), ("0.10", "13"), ("33.33", "3"), ("0.01", "1")])
def test_tax_included_total_is_within_a_cent_when_no_exact_split_exists(issuer, request_body, product, price, quantity):
    # 7 x $1.00 with IVA included: Importe 6.03 -> Total 6.99, Importe 6.04 -> Total 7.01; no split gives 7.00.
    product.update(price=price, tax_included=True)
    built = _build(request_body(items=[{"product": product, "quantity": quantity}]), issuer)
    quoted = Decimal(price) * Decimal(quantity)
    assert abs(Decimal(_root(built).attrib["Total"]) - quoted) <= Decimal("0.01")


def test_tax_included_is_ignored_without_taxes(issuer, request_body, product):
    product.update(price="116.00", tax_included=True, taxability="01")
    root = _root(_build(request_body(items=[{"product": product}]), issuer))
    assert root.attrib["Total"] == "116.00"
    assert _node(root, "//cfdi:Concepto")["ValorUnitario"] == "116.00"


def test_withholdings_reduce_the_total(issuer, request_body, product):
    product["taxes"] = [{"type": "IVA", "rate": "0.16"}, {"type": "ISR", "rate": "0.10", "withholding": True}]
    root = _root(_build(request_body(items=[{"product": product}]), issuer))
    assert root.attrib["SubTotal"] == "100.00"
    assert _node(root, "/cfdi:Comprobante/cfdi:Impuestos")["TotalImpuestosRetenidos"] == "10.00"
    assert root.attrib["Total"] == "106.00"


def test_discount_is_subtracted(issuer, request_body):
    root = _root(_build(request_body(items=[{"product": {"description": "x", "product_key": "81111500", "unit_key": "E48", "price": "100.00"}, "discount": "20.00"}]), issuer))
    assert root.attrib["Descuento"] == "20.00"
    assert root.attrib["SubTotal"] == "100.00"
    assert root.attrib["Total"] == "92.80"


def test_missing_items_is_invalid_with_a_code_and_path(issuer, request_body):
    with pytest.raises(InvoiceInvalid) as info:
        _build(request_body(items=[]), issuer)
    (problem,) = info.value.problems
    assert (problem.code, problem.path, problem.source) == ("TIMBRA_ITEMS_REQUIRED", "items", "timbra")
    assert "TIMBRA_ITEMS_REQUIRED" in str(info.value)


def test_missing_customer_without_global_info_is_invalid(issuer, request_body):
    with pytest.raises(InvoiceInvalid) as info:
        _build(request_body(customer=None), issuer)
    (problem,) = info.value.problems
    assert (problem.code, problem.path) == ("TIMBRA_CUSTOMER_REQUIRED", "customer")


def test_item_without_product_is_invalid_with_its_index(issuer, request_body, product):
    with pytest.raises(InvoiceInvalid) as info:
        _build(request_body(items=[{"product": product}, {"quantity": 1}]), issuer)
    (problem,) = info.value.problems
    assert (problem.code, problem.path) == ("TIMBRA_PRODUCT_REQUIRED", "items[1]")


def test_an_unresolved_customer_id_is_not_found(issuer, request_body):
    # the service replaces customer_id by the projected customer; one left unresolved is not found
    with pytest.raises(InvoiceInvalid) as info:
        _build(request_body(customer=None, customer_id="cus_1"), issuer)
    assert (info.value.problems[0].code, info.value.problems[0].path) == ("TIMBRA_CUSTOMER_NOT_FOUND", "customer_id")


def test_payment_receipts_need_payments(issuer, request_body):
    with pytest.raises(InvoiceInvalid) as info:
        _build(request_body(type="P"), issuer)
    assert (info.value.problems[0].code, info.value.problems[0].path) == ("TIMBRA_PAYMENTS_REQUIRED", "payments")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"payment_form": "ZZ"}, "CFDI40104"),
        ({"use": "ZZZ"}, "CFDI40160"),
        ({"export": "99"}, "CFDI40123"),
    ],
)
def test_sat_rules_become_coded_problems(issuer, request_body, overrides, code):
    with pytest.raises(InvoiceInvalid) as info:
        _build(request_body(**overrides), issuer)
    found = {p.code: p for p in info.value.problems}
    assert code in found
    assert found[code].source == "sat"


def test_unknown_unit_key_is_reported_on_its_concepto(issuer, request_body, product):
    product["unit_key"] = "NOPE"
    with pytest.raises(InvoiceInvalid) as info:
        _build(request_body(items=[{"product": product}]), issuer)
    (problem,) = [p for p in info.value.problems if p.code == "CFDI40165"]
    assert "Concepto[1]" in (problem.path or "")


def test_a_fresh_invoice_has_no_problems_about_its_date(issuer, request_body):
    built = _build(request_body(), issuer, now=_now() - timedelta(seconds=30))
    assert built.summary.total == Decimal("232.00")
