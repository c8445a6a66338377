"""build(): per-concept amounts, SAT rounding, totals, Pagos 2.0 math; built XML is XSD-valid."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from timbra_shared.cfdi import (
    BuildError,
    Comprobante,
    Concepto,
    Retencion,
    Traslado,
    build,
    parse_xml,
    to_xml,
    validate,
)
from timbra_shared.cfdi.testing import sample_invoice, sample_pago
from timbra_shared.cfdi.xsd import xsd_errors


def _one(**kw) -> Comprobante:
    c = dict(ClaveProdServ="01010101", Cantidad=D("1"), ClaveUnidad="H87", Descripcion="X", ValorUnitario=D("100"),
             Traslados=[Traslado(TasaOCuota=D("0.16"))])
    c.update(kw)
    return sample_invoice(Conceptos=[Concepto(**c)])


def test_payment_sheet_example_from_seed():
    # Actualización $575.00 + Anualidad $550.00: subtotal 1,125.00, IVA 180.00, total 1,305.00
    b = build(sample_invoice(Conceptos=[
        Concepto(ClaveProdServ="84111506", Cantidad=D("1"), ClaveUnidad="E48", Descripcion="Actualización",
                 ValorUnitario=D("575.00"), Traslados=[Traslado(TasaOCuota=D("0.16"))]),
        Concepto(ClaveProdServ="84111506", Cantidad=D("1"), ClaveUnidad="E48", Descripcion="Anualidad",
                 ValorUnitario=D("550.00"), Traslados=[Traslado(TasaOCuota=D("0.16"))]),
    ]))
    assert (b.SubTotal, b.Impuestos.TotalImpuestosTrasladados, b.Total) == (D("1125.00"), D("180.00"), D("1305.00"))


def test_typical_invoice_totals():
    b = build(sample_invoice())
    # 2×575 = 1150.00, 550.00, 3.5×1234.57 = 4320.995 → 4321.00 (half up)
    assert [c.Importe for c in b.Conceptos] == [D("1150.00"), D("550.00"), D("4321.00")]
    assert b.SubTotal == D("6021.00")
    assert [t.Importe for c in b.Conceptos for t in c.Traslados] == [D("184.00"), D("88.00"), D("691.36")]
    assert b.Impuestos.TotalImpuestosTrasladados == D("963.36")
    assert b.Impuestos.TotalImpuestosRetenidos == D("432.10")
    assert b.Total == D("6021.00") + D("963.36") - D("432.10")
    assert b.Impuestos.Traslados[0].Base == D("6021.00")


def test_input_not_mutated_and_build_idempotent():
    c = sample_invoice()
    b1 = build(c)
    assert c.SubTotal is None and c.Conceptos[0].Importe is None and c.Conceptos[0].Traslados[0].Importe is None
    b2 = build(b1)
    assert to_xml(b1) == to_xml(b2)


@pytest.mark.parametrize(
    "cantidad,vu,importe",
    [("1", "0.005", "0.01"), ("3", "0.335", "1.01"), ("1", "2.675", "2.68"), ("0.5", "0.01", "0.01"), ("7", "1.4285714", None)],
)
def test_importe_rounds_half_up_once(cantidad, vu, importe):
    if importe is None:
        with pytest.raises(BuildError, match="6 decimales"):
            build(_one(Cantidad=D(cantidad), ValorUnitario=D(vu)))
        return
    b = build(_one(Cantidad=D(cantidad), ValorUnitario=D(vu)))
    assert b.Conceptos[0].Importe == D(importe)


def test_tax_totals_are_sums_of_rounded_lines_not_rounded_sum():
    # three lines whose exact IVA is x.xx5 each: per-line rounding gives 3 × 0.01 more than rounding the sum
    lines = [Concepto(ClaveProdServ="01010101", Cantidad=D("1"), ClaveUnidad="H87", Descripcion=str(i),
                      ValorUnitario=D("0.03"), Traslados=[Traslado(TasaOCuota=D("0.16"))]) for i in range(3)]
    b = build(sample_invoice(Conceptos=lines))
    assert [c.Traslados[0].Importe for c in b.Conceptos] == [D("0.00")] * 3  # 0.0048 → 0.00
    lines = [Concepto(ClaveProdServ="01010101", Cantidad=D("1"), ClaveUnidad="H87", Descripcion=str(i),
                      ValorUnitario=D("0.05"), Traslados=[Traslado(TasaOCuota=D("0.1"))]) for i in range(3)]
    b = build(sample_invoice(Conceptos=lines))
    assert [c.Traslados[0].Importe for c in b.Conceptos] == [D("0.01")] * 3  # 0.005 → 0.01 (half up)
    assert b.Impuestos.TotalImpuestosTrasladados == D("0.03")  # not round(0.015) = 0.02


def test_currency_decimals_follow_c_moneda():
    jpy = build(sample_invoice(
        Moneda="JPY", TipoCambio=D("0.13"),
        Conceptos=[Concepto(ClaveProdServ="01010101", Cantidad=D("1"), ClaveUnidad="H87", Descripcion="X",
                            ValorUnitario=D("1234.5"), Traslados=[Traslado(TasaOCuota=D("0.16"))])]))
    assert str(jpy.SubTotal) == "1235" and str(jpy.Impuestos.TotalImpuestosTrasladados) == "198"
    clf = build(sample_invoice(
        Moneda="CLF", TipoCambio=D("850.5"),
        Conceptos=[Concepto(ClaveProdServ="01010101", Cantidad=D("1"), ClaveUnidad="H87", Descripcion="X",
                            ValorUnitario=D("1.23456"), Traslados=[Traslado(TasaOCuota=D("0.16"))])]))
    assert str(clf.SubTotal) == "1.2346" and str(clf.Total) == "1.4321"


def test_descuento_per_concept():
    b = build(_one(Descuento=D("10.00")))
    assert b.Descuento == D("10.00") and b.Conceptos[0].Traslados[0].Base == D("90.00")
    assert b.Total == D("100.00") - D("10.00") + D("14.40")
    with pytest.raises(BuildError) as e:
        build(_one(Descuento=D("100.01")))
    assert e.value.code == "CFDI40169"
    with pytest.raises(BuildError):
        build(_one(Descuento=D("1.001")))


def test_exento_has_no_importe_and_no_total_trasladados():
    b = build(_one(Traslados=[Traslado(TipoFactor="Exento")]))
    t = b.Impuestos.Traslados[0]
    assert t.TipoFactor == "Exento" and t.Importe is None and t.TasaOCuota is None
    assert b.Impuestos.TotalImpuestosTrasladados is None
    xml = to_xml(b).decode()
    assert "TotalImpuestosTrasladados" not in xml and 'TipoFactor="Exento"/>' in xml


def test_ieps_cuota_base_is_quantity():
    b = build(_one(Cantidad=D("40"), ValorUnitario=D("22.10"),
                   Traslados=[Traslado(Impuesto="003", TipoFactor="Cuota", TasaOCuota=D("6.4548"))]))
    t = b.Conceptos[0].Traslados[0]
    assert t.Base == D("40") and t.Importe == D("258.19")  # 40 × 6.4548 = 258.192


def test_iva_base_including_ieps_can_be_given_explicitly():
    b = build(_one(Cantidad=D("1"), ValorUnitario=D("100"), Traslados=[
        Traslado(Impuesto="003", TipoFactor="Tasa", TasaOCuota=D("0.08")),
        Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota=D("0.16"), Base=D("108.00"))]))
    assert [t.Importe for t in b.Conceptos[0].Traslados] == [D("8.00"), D("17.28")]


def test_retenciones_grouped_by_impuesto():
    b = build(sample_invoice(Conceptos=[
        Concepto(ClaveProdServ="01010101", Cantidad=D("1"), ClaveUnidad="E48", Descripcion=f"H{i}",
                 ValorUnitario=D("1000"), Traslados=[Traslado(TasaOCuota=D("0.16"))],
                 Retenciones=[Retencion(Impuesto="001", TasaOCuota=D("0.10")),
                              Retencion(Impuesto="002", TasaOCuota=D("0.106667"))]) for i in range(2)]))
    assert [(r.Impuesto, r.Importe) for r in b.Impuestos.Retenciones] == [("001", D("200.00")), ("002", D("213.34"))]
    assert b.Total == D("2000") + D("320") - D("413.34")


@pytest.mark.parametrize("bad", [0.1, 1.5])
def test_floats_are_refused(bad):
    with pytest.raises(BuildError) as e:
        build(_one(ValorUnitario=bad))
    assert e.value.code == "float_amount"


def test_strings_and_ints_are_accepted():
    b = build(_one(Cantidad="2", ValorUnitario=3))
    assert b.SubTotal == D("6.00")


@pytest.mark.parametrize("obj,taxes,code", [("02", False, "CFDI40171"), ("01", True, "CFDI40172"), ("03", True, "CFDI40172")])
def test_objeto_imp_rules(obj, taxes, code):
    kw = {"ObjetoImp": obj}
    if not taxes:
        kw["Traslados"] = []
    with pytest.raises(BuildError) as e:
        build(_one(**kw))
    assert e.value.code == code


def test_exento_retencion_refused():
    with pytest.raises(BuildError) as e:
        build(_one(Retenciones=[Retencion(Impuesto="002", TipoFactor="Exento", TasaOCuota=D("0"))]))
    assert e.value.code == "CFDI40184"


def test_tipo_t_and_p_have_zero_totals():
    t = build(sample_invoice(TipoDeComprobante="T", FormaPago=None, MetodoPago=None, Conceptos=[
        Concepto(ClaveProdServ="01010101", Cantidad=D("10"), ClaveUnidad="H87", Descripcion="M",
                 ValorUnitario=D("100"), ObjetoImp="01")]))
    assert (str(t.SubTotal), str(t.Total), t.Impuestos) == ("0.00", "0.00", None)
    p = build(sample_pago())
    assert (str(p.SubTotal), str(p.Total)) == ("0", "0")
    assert p.Conceptos[0].ClaveProdServ == "84111506" and p.Conceptos[0].ClaveUnidad == "ACT"


def test_pagos20_math():
    p = build(sample_pago()).Pagos
    p1, p2 = p.Pago
    assert p1.Monto == D("2355.00") and p1.TipoCambioP == 1
    assert [d.ImpSaldoInsoluto for d in p1.DoctoRelacionado] == [D("0.00"), D("3950.00")]
    assert [(t.BaseP, t.ImporteP) for t in p1.ImpuestosP.TrasladosP] == [(D("2125.00"), D("340.00"))]
    assert [(r.ImpuestoP, r.ImporteP) for r in p1.ImpuestosP.RetencionesP] == [("001", D("100.00"))]
    assert p2.Monto == D("116.00")
    t = p.Totales
    assert t.MontoTotalPagos == D("2355.00") + D("116.00") * D("20.5")
    assert t.TotalTrasladosBaseIVA16 == D("2125.00") + D("100.00") * D("20.5")
    assert t.TotalTrasladosImpuestoIVA16 == D("340.00") + D("16.00") * D("20.5")
    assert t.TotalRetencionesISR == D("100.00")


def test_pagos_equivalencia_dr_converts_to_payment_currency():
    from timbra_shared.cfdi import DoctoRelacionado, Pago, Pagos, TrasladoDR

    c = sample_pago(Pagos=Pagos(Pago=[Pago(
        FechaPago="2025-01-14T12:00:00", FormaDePagoP="03", MonedaP="MXN",
        DoctoRelacionado=[DoctoRelacionado(
            IdDocumento="C1DF8D01-8436-4E7D-BECF-20F31624280D", MonedaDR="USD", EquivalenciaDR=D("0.05"),
            NumParcialidad=1, ImpSaldoAnt=D("116.00"), ImpPagado=D("116.00"),
            TrasladosDR=[TrasladoDR(BaseDR=D("100.00"), TasaOCuotaDR=D("0.16"))])])]))
    p = build(c).Pagos.Pago[0]
    assert p.Monto == D("2320.00")
    assert (p.ImpuestosP.TrasladosP[0].BaseP, p.ImpuestosP.TrasladosP[0].ImporteP) == (D("2000.00"), D("320.00"))
    findings = validate(to_xml(build(c)), check_dates=False)
    assert [f.code for f in findings if f.severity == "error"] == []


def test_built_documents_are_xsd_valid_and_pass_business_rules(gen_csd):
    from timbra_shared.cfdi import seal

    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location("_cad", pathlib.Path(__file__).with_name("test_cadena.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, comprobante in mod.SHAPES:
        import dataclasses

        comprobante = dataclasses.replace(comprobante, Fecha=None)  # now, local time at LugarExpedicion
        b = build(comprobante)
        if b.InformacionGlobal is not None:
            b.InformacionGlobal = dataclasses.replace(b.InformacionGlobal, Año=b.Fecha[:4])
        if b.Emisor.Rfc != gen_csd.rfc:
            continue
        xml = seal(b, gen_csd)
        assert xsd_errors(parse_xml(xml)) == [], name
        errors = [f for f in validate(xml, check_dates=False) if f.severity == "error"]
        assert errors == [], (name, errors)


def test_invalid_characters_refused():
    with pytest.raises(BuildError):
        to_xml(build(_one(Descripcion="bad \x01 char")))
