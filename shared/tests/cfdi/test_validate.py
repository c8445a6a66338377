"""validate(): coded findings (SAT CFDI40xxx codes), Spanish messages, node paths."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest
from lxml import etree

from timbra_shared.cfdi import (
    Concepto,
    InformacionGlobal,
    Receptor,
    Traslado,
    build,
    parse_xml,
    to_xml,
    validate,
)
from timbra_shared.cfdi.errors import NotCfdiError, UnsupportedVersionError
from timbra_shared.cfdi.testing import sample_invoice, sample_pago

C = "{http://www.sat.gob.mx/cfd/4}"


def _xml(c=None) -> bytes:
    return to_xml(build(c or sample_invoice()))


def _codes(xml, **kw) -> set[str]:
    kw.setdefault("check_dates", False)
    return {f.code for f in validate(xml, **kw) if f.severity == "error"}


def _edit(xml: bytes, fn) -> bytes:
    root = parse_xml(xml)
    fn(root)
    return etree.tostring(root, encoding="UTF-8")


def test_valid_documents_have_no_errors():
    for c in (sample_invoice(), sample_pago()):
        findings = validate(_xml(c), check_dates=False)
        assert [f.code for f in findings] == ["TIMBRA001"]  # only: not sealed yet (warning)
        assert findings[0].severity == "warning"


def test_finding_shape():
    xml = _edit(_xml(), lambda r: r.set("SubTotal", "1.00"))
    f = next(f for f in validate(xml, check_dates=False) if f.code == "CFDI40108")
    assert f.path == "/cfdi:Comprobante/@SubTotal" and f.severity == "error"
    assert "suma de los importes" in f.message


@pytest.mark.parametrize(
    "edit,code",
    [
        (lambda r: r.set("SubTotal", "6021.01"), "CFDI40108"),
        (lambda r: r.set("SubTotal", "6021.001"), "CFDI40107"),
        (lambda r: r.set("Total", "6552.27"), "CFDI40119"),
        (lambda r: r.set("FormaPago", "77"), "CFDI40104"),
        (lambda r: r.set("MetodoPago", "PPD"), "CFDI40105"),
        (lambda r: r.set("MetodoPago", "XYZ"), "CFDI40124"),
        (lambda r: r.attrib.pop("FormaPago"), "CFDI40103"),
        (lambda r: r.set("Moneda", "ABC"), "CFDI40113"),
        (lambda r: r.set("TipoCambio", "17.5"), "CFDI40114"),
        (lambda r: r.set("LugarExpedicion", "00001"), "CFDI40126"),
        (lambda r: r.set("Exportacion", "09"), "CFDI40123"),
        (lambda r: r.set("Exportacion", "02"), "CFDI40122"),
        (lambda r: r.set("Fecha", "2025-01-15 10:30:00"), "CFDI40101"),
        (lambda r: r.find(C + "Emisor").set("RegimenFiscal", "612"), "CFDI40141"),
        (lambda r: r.find(C + "Emisor").set("RegimenFiscal", "999"), "CFDI40140"),
        (lambda r: r.find(C + "Receptor").set("RegimenFiscalReceptor", "605"), "CFDI40158"),
        (lambda r: r.find(C + "Receptor").set("RegimenFiscalReceptor", "999"), "CFDI40157"),
        (lambda r: r.find(C + "Receptor").set("UsoCFDI", "D01"), "CFDI40161"),
        (lambda r: r.find(C + "Receptor").set("UsoCFDI", "ZZZ"), "CFDI40160"),
        (lambda r: r.find(C + "Receptor").set("Rfc", "NOT-AN-RFC"), "CFDI40143"),
        (lambda r: r.find(C + "Receptor").set("ResidenciaFiscal", "USA"), "CFDI40151"),
        (lambda r: r.find(C + "Receptor").set("Nombre", "PUBLICO EN GENERAL"), "CFDI40146"),
        (lambda r: r.find(f"{C}Conceptos/{C}Concepto").set("ClaveProdServ", "99999999"), "CFDI40162"),
        (lambda r: r.find(f"{C}Conceptos/{C}Concepto").set("ClaveUnidad", "QQQ"), "CFDI40165"),
        (lambda r: r.find(f"{C}Conceptos/{C}Concepto").set("Importe", "2000.00"), "CFDI40167"),
        (lambda r: r.find(f"{C}Conceptos/{C}Concepto").set("ObjetoImp", "01"), "CFDI40172"),
        (lambda r: r.find(f"{C}Conceptos/{C}Concepto").set("ObjetoImp", "99"), "CFDI40170"),
        (lambda r: r.find(f"{C}Conceptos/{C}Concepto").set("Descuento", "2000.00"), "CFDI40169"),
        (lambda r: r.find(f".//{C}Concepto/{C}Impuestos/{C}Traslados/{C}Traslado").set("Importe", "185.00"), "CFDI40180"),
        (lambda r: r.find(f".//{C}Concepto/{C}Impuestos/{C}Traslados/{C}Traslado").set("TasaOCuota", "0.150000"), "CFDI40179"),
        (lambda r: r.find(f".//{C}Concepto/{C}Impuestos/{C}Traslados/{C}Traslado").set("Base", "0"), "CFDI40174"),
        (lambda r: r.find(f".//{C}Concepto/{C}Impuestos/{C}Retenciones/{C}Retencion").set("Importe", "400.00"), "CFDI40186"),
        (lambda r: r.find(f"{C}Impuestos").set("TotalImpuestosTrasladados", "963.37"), "CFDI40205"),
        (lambda r: r.find(f"{C}Impuestos").set("TotalImpuestosRetenidos", "432.11"), "CFDI40203"),
        (lambda r: r.find(f"{C}Impuestos/{C}Traslados/{C}Traslado").set("Importe", "963.00"), "CFDI40221"),
        (lambda r: r.find(f"{C}Impuestos/{C}Traslados/{C}Traslado").set("Base", "6000.00"), "CFDI40215"),
        (lambda r: r.find(f"{C}Impuestos/{C}Retenciones/{C}Retencion").set("Importe", "432.00"), "CFDI40211"),
        (lambda r: r.find(f"{C}Impuestos").attrib.pop("TotalImpuestosRetenidos"), "CFDI40206"),
    ],
)
def test_rule_violations_are_reported_with_their_code(edit, code):
    xml = _edit(_xml(), edit)
    assert code in _codes(xml)


def test_traslado_type_rules():
    t = build(sample_invoice(TipoDeComprobante="T", FormaPago=None, MetodoPago=None, Conceptos=[
        Concepto(ClaveProdServ="01010101", Cantidad=D("1"), ClaveUnidad="H87", Descripcion="M",
                 ValorUnitario=D("100"), ObjetoImp="01")]))
    xml = to_xml(t)
    assert _codes(xml) == set()
    assert "CFDI40109" in _codes(_edit(xml, lambda r: r.set("SubTotal", "1.00")))
    assert "CFDI40103" in _codes(_edit(xml, lambda r: r.set("FormaPago", "01")))
    assert "CFDI40125" in _codes(_edit(xml, lambda r: r.set("MetodoPago", "PUE")))


def _publico(**kw):
    base = dict(
        Receptor=Receptor(Rfc="XAXX010101000", Nombre="PUBLICO EN GENERAL", DomicilioFiscalReceptor="42501",
                          RegimenFiscalReceptor="616", UsoCFDI="S01"),
        InformacionGlobal=InformacionGlobal(Periodicidad="01", Meses="01", Año="2025"),
    )
    base.update(kw)
    return sample_invoice(**base)


def test_publico_en_general_rules():
    assert _codes(_xml(_publico())) == set()
    R = lambda **kw: Receptor(**{**dict(Rfc="XAXX010101000", Nombre="PUBLICO EN GENERAL",  # noqa: E731
                                        DomicilioFiscalReceptor="42501", RegimenFiscalReceptor="616",
                                        UsoCFDI="S01"), **kw})
    assert "CFDI40145" in _codes(_xml(_publico(Receptor=R(Nombre="PUBLICO GENERAL"))))
    assert "CFDI40158" in _codes(_xml(_publico(Receptor=R(RegimenFiscalReceptor="601"))))
    assert "CFDI40161" in _codes(_xml(_publico(Receptor=R(UsoCFDI="G03"))))
    assert "CFDI40149" in _codes(_xml(_publico(Receptor=R(DomicilioFiscalReceptor="06000"))))
    assert "CFDI40130" in _codes(_xml(_publico(InformacionGlobal=None)))
    assert "CFDI40132" in _codes(_xml(_publico(InformacionGlobal=InformacionGlobal(Periodicidad="05", Meses="13", Año="2025"))))
    assert "CFDI40134" in _codes(_xml(_publico(InformacionGlobal=InformacionGlobal(Periodicidad="04", Meses="14", Año="2025"))))
    assert "CFDI40136" in _codes(_xml(_publico(InformacionGlobal=InformacionGlobal(Periodicidad="04", Meses="01", Año="2020"))))
    assert "CFDI40131" in _codes(_xml(_publico(InformacionGlobal=InformacionGlobal(Periodicidad="09", Meses="01", Año="2025"))))


def test_foreign_receptor_rules():
    R = lambda **kw: Receptor(**{**dict(Rfc="XEXX010101000", Nombre="ACME INC", DomicilioFiscalReceptor="42501",  # noqa: E731
                                        RegimenFiscalReceptor="616", UsoCFDI="S01", ResidenciaFiscal="USA",
                                        NumRegIdTrib="123456789"), **kw})
    assert _codes(_xml(sample_invoice(Receptor=R()))) == set()
    assert "CFDI40152" in _codes(_xml(sample_invoice(Receptor=R(ResidenciaFiscal="MEX"))))
    assert "CFDI40150" in _codes(_xml(sample_invoice(Receptor=R(ResidenciaFiscal="QQQ"))))
    assert "CFDI40153" in _codes(_xml(sample_invoice(Receptor=R(ResidenciaFiscal=None))))


@pytest.mark.parametrize(
    "rfc,regimen,uso,ok",
    [
        ("URE180429TM6", "601", "G03", True),   # moral, general de ley
        ("URE180429TM6", "601", "D01", False),  # deducciones personales: sólo físicas
        ("CACX7605101P8", "612", "D01", True),
        ("CACX7605101P8", "605", "G03", False),  # sueldos y salarios no deduce gastos
        ("CACX7605101P8", "605", "CN01", False),  # CN01 sólo en nómina
        ("CACX7605101P8", "626", "G01", True),   # RESICO
        ("CACX7605101P8", "616", "G03", False),
        ("CACX7605101P8", "616", "S01", True),
    ],
)
def test_uso_cfdi_regimen_persona_matrix(rfc, regimen, uso, ok):
    r = Receptor(Rfc=rfc, Nombre="X", DomicilioFiscalReceptor="86991", RegimenFiscalReceptor=regimen, UsoCFDI=uso)
    assert ("CFDI40161" not in _codes(_xml(sample_invoice(Receptor=r)))) is ok


def test_pagos_rules():
    xml = _xml(sample_pago())
    P = "{http://www.sat.gob.mx/Pagos20}"
    assert "TIMBRA206" in _codes(_edit(xml, lambda r: r.find(f".//{P}DoctoRelacionado").set("ImpSaldoInsoluto", "1.00")))
    assert "TIMBRA210" in _codes(_edit(xml, lambda r: r.find(f".//{P}Totales").set("MontoTotalPagos", "1.00")))
    assert "TIMBRA209" in _codes(_edit(xml, lambda r: r.find(f".//{P}TrasladoP").set("ImporteP", "1.00")))
    assert "CFDI40161" in _codes(_edit(xml, lambda r: r.find(C + "Receptor").set("UsoCFDI", "G03")))
    assert "CFDI40113" in _codes(_edit(xml, lambda r: r.set("Moneda", "MXN")))


def test_fecha_range_rules():
    c = sample_invoice(Fecha=None)
    xml = _xml(c)
    now = datetime.now(timezone.utc)
    assert "CFDI40101" not in {f.code for f in validate(xml, at=now)}
    old = _xml(sample_invoice(Fecha="2020-01-01T00:00:00"))
    assert "CFDI40101" in {f.code for f in validate(old, at=now)}
    assert "CFDI40101" in {f.code for f in validate(old, at=datetime(2019, 12, 31, tzinfo=timezone.utc))}  # future
    assert "CFDI40101" not in {f.code for f in validate(old, at=datetime(2020, 1, 2, 6, 0, tzinfo=timezone.utc))}


def test_xsd_findings():
    xml = _edit(_xml(), lambda r: r.set("Version", "4.0") or r.set("Exportacion", "1"))
    findings = validate(xml, xsd=True, check_dates=False)
    assert any(f.code == "XSD" and "Exportacion" in f.message for f in findings)


def test_catalog_checks_can_be_disabled():
    xml = _edit(_xml(), lambda r: r.find(f"{C}Conceptos/{C}Concepto").set("ClaveProdServ", "99999999"))
    assert "CFDI40162" not in _codes(xml, catalogs=False)


def test_non_cfdi_inputs_raise():
    with pytest.raises(NotCfdiError):
        validate(b"<html/>")
    with pytest.raises(UnsupportedVersionError):
        validate(b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/3" Version="3.3"/>')


def test_sat_examples_validate_without_crashing(sat_examples):
    for path in sat_examples:
        findings = validate(path.read_bytes(), xsd=True)
        assert all(re.fullmatch(r"(CFDI40\d{3}|TIMBRA\d{3}|XSD)", f.code) for f in findings)
        assert all(f.path.startswith("/cfdi:Comprobante") for f in findings if f.code != "XSD")
