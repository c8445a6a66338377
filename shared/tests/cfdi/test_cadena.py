"""Cadena original: the pure-Python implementations must equal SAT's XSLT (run by lxml)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from lxml import etree

from timbra_shared.cfdi import (
    ACuentaTerceros,
    CfdiRelacionados,
    Concepto,
    Emisor,
    InformacionGlobal,
    Receptor,
    Retencion,
    Traslado,
    build,
    cadena_of_model,
    cadena_original,
    cadena_xslt,
    parse_xml,
    to_xml,
)
from timbra_shared.cfdi.cadena import xslt_path
from timbra_shared.cfdi.errors import NotCfdiError, UnsupportedVersionError
from timbra_shared.cfdi.testing import sample_invoice, sample_pago


def _oracle(xml: bytes) -> str:
    """SAT's XSLT straight from the satcfdi wheel, independent of our wrapper."""
    doc = etree.fromstring(xml)
    return str(etree.XSLT(etree.parse(xslt_path("cfdi40")))(doc.getroottree()))


def _iva(rate="0.160000"):
    return [Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota=Decimal(rate))]


def _shapes():
    yield "typical", sample_invoice()
    yield "pago20", sample_pago()
    yield "usd_descuentos", sample_invoice(
        Moneda="USD",
        TipoCambio=Decimal("17.1234"),
        Conceptos=[
            Concepto(ClaveProdServ="01010101", Cantidad=Decimal("3"), ClaveUnidad="H87", Descripcion="A",
                     ValorUnitario=Decimal("33.333333"), Descuento=Decimal("0.99"), Traslados=_iva()),
            Concepto(ClaveProdServ="01010101", Cantidad=Decimal("0.5"), ClaveUnidad="KGM", Descripcion="B",
                     ValorUnitario=Decimal("10.05"), Traslados=_iva("0.080000")),
        ],
    )
    yield "jpy_zero_decimals", sample_invoice(
        Moneda="JPY", TipoCambio=Decimal("0.1321"),
        Conceptos=[Concepto(ClaveProdServ="01010101", Cantidad=Decimal("7"), ClaveUnidad="H87", Descripcion="X",
                            ValorUnitario=Decimal("1234.5"), Traslados=_iva())],
    )
    yield "exento_iva0_ieps", sample_invoice(
        Conceptos=[
            Concepto(ClaveProdServ="50202306", Cantidad=Decimal("12"), ClaveUnidad="H87", Descripcion="Refresco",
                     ValorUnitario=Decimal("15.50"),
                     Traslados=[Traslado(Impuesto="003", TipoFactor="Tasa", TasaOCuota=Decimal("0.080000")),
                                Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota=Decimal("0.160000"))]),
            Concepto(ClaveProdServ="15101514", Cantidad=Decimal("40"), ClaveUnidad="LTR", Descripcion="Gasolina",
                     ValorUnitario=Decimal("22.10"),
                     Traslados=[Traslado(Impuesto="003", TipoFactor="Cuota", TasaOCuota=Decimal("6.454800"))]),
            Concepto(ClaveProdServ="50131700", Cantidad=Decimal("1"), ClaveUnidad="H87", Descripcion="Leche",
                     ValorUnitario=Decimal("28"), Traslados=_iva("0.000000")),
            Concepto(ClaveProdServ="85121600", Cantidad=Decimal("1"), ClaveUnidad="E48", Descripcion="Consulta",
                     ValorUnitario=Decimal("800"), Traslados=[Traslado(Impuesto="002", TipoFactor="Exento")]),
            Concepto(ClaveProdServ="01010101", Cantidad=Decimal("1"), ClaveUnidad="H87", Descripcion="No objeto",
                     ValorUnitario=Decimal("5"), ObjetoImp="01"),
            Concepto(ClaveProdServ="01010101", Cantidad=Decimal("1"), ClaveUnidad="H87", Descripcion="Sin desglose",
                     ValorUnitario=Decimal("5"), ObjetoImp="03"),
        ],
    )
    yield "retenciones_terceros_aduana_predial", sample_invoice(
        Emisor=Emisor(Rfc="CACX7605101P8", Nombre="XOCHILT CASAS CHAVEZ", RegimenFiscal="612",
                      FacAtrAdquirente="0123456789"),
        CondicionesDePago="Contado | 30 días & <más>",
        Confirmacion="ECVH1",
        CfdiRelacionados=[CfdiRelacionados(TipoRelacion="04", UUIDs=["ED1752FE-E865-4FF2-BFE1-0F552E770DC9",
                                                                     "F4F09AEF-57F2-4BE0-A828-87D1A80ED61C"]),
                          CfdiRelacionados(TipoRelacion="07", UUIDs=["CB36554D-AF7B-4EBC-97CB-8C40FDFD9E20"])],
        Conceptos=[
            Concepto(ClaveProdServ="80131500", Cantidad=Decimal("1"), ClaveUnidad="E48", Descripcion="Renta",
                     ValorUnitario=Decimal("10000"), NoIdentificacion="SKU-1", Unidad="Mes",
                     Traslados=_iva(),
                     Retenciones=[Retencion(Impuesto="001", TasaOCuota=Decimal("0.100000")),
                                  Retencion(Impuesto="002", TasaOCuota=Decimal("0.106667"))],
                     CuentaPredial=["51888", "A-77"],
                     ACuentaTerceros=ACuentaTerceros(RfcACuentaTerceros="URE180429TM6",
                                                     NombreACuentaTerceros="UNIVERSIDAD ROBOTICA ESPAÑOLA",
                                                     RegimenFiscalACuentaTerceros="601",
                                                     DomicilioFiscalACuentaTerceros="86991")),
            Concepto(ClaveProdServ="25172504", Cantidad=Decimal("4"), ClaveUnidad="H87", Descripcion="Llanta",
                     ValorUnitario=Decimal("999.99"), Traslados=_iva(),
                     InformacionAduanera=["21  47  3807  8003832", "21  47  3807  8003833"]),
        ],
    )
    yield "publico_en_general", sample_invoice(
        Receptor=Receptor(Rfc="XAXX010101000", Nombre="PUBLICO EN GENERAL", DomicilioFiscalReceptor="42501",
                          RegimenFiscalReceptor="616", UsoCFDI="S01"),
        InformacionGlobal=InformacionGlobal(Periodicidad="04", Meses="01", Año=2025),
    )
    yield "extranjero", sample_invoice(
        Receptor=Receptor(Rfc="XEXX010101000", Nombre="ACME INC", DomicilioFiscalReceptor="42501",
                          RegimenFiscalReceptor="616", UsoCFDI="S01", ResidenciaFiscal="USA", NumRegIdTrib="123456789"),
        Exportacion="01",
    )
    yield "whitespace_and_escaping", sample_invoice(
        Serie="  A  B ",
        Folio="x\ty",
        Conceptos=[Concepto(ClaveProdServ="01010101", Cantidad=Decimal("1"), ClaveUnidad="H87",
                            Descripcion='  Tornillo  "3/8" \n  de <acero> & más  ', ValorUnitario=Decimal("1.5"),
                            Traslados=_iva())],
    )
    yield "traslado_egreso", sample_invoice(TipoDeComprobante="E", CfdiRelacionados=[
        CfdiRelacionados(TipoRelacion="01", UUIDs=["ED1752FE-E865-4FF2-BFE1-0F552E770DC9"])])
    yield "tipo_T", sample_invoice(
        TipoDeComprobante="T", FormaPago=None, MetodoPago=None,
        Receptor=Receptor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", DomicilioFiscalReceptor="42501",
                          RegimenFiscalReceptor="601", UsoCFDI="S01"),
        Conceptos=[Concepto(ClaveProdServ="01010101", Cantidad=Decimal("10"), ClaveUnidad="H87",
                            Descripcion="Mercancía", ValorUnitario=Decimal("100"), ObjetoImp="01")],
    )


SHAPES = list(_shapes())


@pytest.mark.parametrize("name,comprobante", SHAPES, ids=[s[0] for s in SHAPES])
def test_cadena_equals_sat_xslt_for_built_documents(name, comprobante):
    built = build(comprobante)
    built.NoCertificado = "30001000000500003416"
    xml = to_xml(built)
    expected = _oracle(xml)
    assert cadena_of_model(built) == expected  # fast path used when sealing a model
    assert cadena_original(xml) == expected  # XML walk used by seal_xml / verify
    assert cadena_xslt(xml) == expected


def test_sat_example_files_cadena_equals_xslt(sat_examples):
    assert len(sat_examples) == 4
    for path in sat_examples:
        xml = path.read_bytes()
        assert cadena_original(xml) == _oracle(xml), path.name


def test_sat_example_with_pretty_print_and_comments(sat_examples):
    # Re-serialised with different whitespace/comments: the cadena must not change.
    for path in sat_examples:
        root = parse_xml(path.read_bytes())
        root.insert(0, etree.Comment(" comentario "))
        again = etree.tostring(root, pretty_print=True, encoding="UTF-8")
        assert cadena_original(again) == _oracle(again) == _oracle(path.read_bytes())


def _doc(extra_complement: str = "", concept_extra: str = "", root_attrs: str = "") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Fecha="2025-01-01T00:00:00"
  NoCertificado="30001000000500003416" SubTotal="10.00" Moneda="MXN" Total="10.00" TipoDeComprobante="I"
  Exportacion="01" LugarExpedicion="42501" Sello="" Certificado="" {root_attrs}>
  <cfdi:Emisor Rfc="EKU9003173C9" Nombre="ESCUELA &#10; KEMPER&#9;URGATE" RegimenFiscal="601"/>
  <cfdi:Receptor Rfc="URE180429TM6" Nombre="UNIVERSIDAD" DomicilioFiscalReceptor="86991"
     RegimenFiscalReceptor="601" UsoCFDI="G03"/>
  <cfdi:Conceptos>
    <cfdi:Concepto ClaveProdServ="01010101" Cantidad="1" ClaveUnidad="H87" Descripcion="X" ValorUnitario="10"
       Importe="10.00" ObjetoImp="01">{concept_extra}</cfdi:Concepto>
  </cfdi:Conceptos>
  <cfdi:Complemento>{extra_complement}</cfdi:Complemento>
</cfdi:Comprobante>""".encode()


EDGE_CASES = {
    "empty_optional_attribute": _doc(root_attrs='Serie="" Folio="  "'),
    "unknown_complement_text": _doc('<x:Foo xmlns:x="urn:x" A="1">  texto <x:B>libre</x:B>\n</x:Foo>'),
    "tfd_inside_complemento": _doc(
        '<tfd:TimbreFiscalDigital xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital" Version="1.1" '
        'UUID="ED1752FE-E865-4FF2-BFE1-0F552E770DC9" FechaTimbrado="2025-01-01T00:00:10" RfcProvCertif="SPR190613I52" '
        'SelloCFD="abc" NoCertificadoSAT="30001000000500003456" SelloSAT="def"/>'),
    "parte_and_complemento_concepto": _doc(concept_extra=(
        '<cfdi:ComplementoConcepto><y:Z xmlns:y="urn:y">hola</y:Z></cfdi:ComplementoConcepto>'
        '<cfdi:Parte ClaveProdServ="01010101" Cantidad="2" Descripcion="P" ValorUnitario="1" Importe="2">'
        '<cfdi:InformacionAduanera NumeroPedimento="21  47  3807  8003832"/></cfdi:Parte>'
        '<cfdi:Parte ClaveProdServ="01010102" Cantidad="1" Descripcion="Q"/>')),
    "implocal_complement_falls_back_to_xslt": _doc(
        '<implocal:ImpuestosLocales xmlns:implocal="http://www.sat.gob.mx/implocal" version="1.0" '
        'TotaldeRetenciones="0.00" TotaldeTraslados="0.30"><implocal:TrasladosLocales ImpLocTrasladado="ISH" '
        'TasadeTraslado="3.00" Importe="0.30"/></implocal:ImpuestosLocales>'),
    "missing_required_attribute": _doc(root_attrs='Serie="S"').replace(b' Moneda="MXN"', b""),
    "whitespace_in_values": _doc(root_attrs='Serie=" S" Folio="F " CondicionesDePago="a&#13;&#10;b&#9; c  d" Confirmacion="   "'),
    "elements_out_of_schema_order": _doc(concept_extra=(
        '<cfdi:Parte ClaveProdServ="01010101" Cantidad="1" Descripcion="antes"/>'
        '<cfdi:Impuestos><cfdi:Retenciones><cfdi:Retencion Base="10" Impuesto="001" TipoFactor="Tasa" TasaOCuota="0.100000" Importe="1.00"/>'
        '</cfdi:Retenciones><cfdi:Traslados><cfdi:Traslado Base="10" Impuesto="002" TipoFactor="Tasa" TasaOCuota="0.160000" Importe="1.60"/>'
        '</cfdi:Traslados><cfdi:Parte ClaveProdServ="01010103" Cantidad="3" Descripcion="dentro de Impuestos"/></cfdi:Impuestos>'
        '<cfdi:CuentaPredial Numero="1"/><cfdi:InformacionAduanera NumeroPedimento="2"/>'
        '<cfdi:Impuestos><cfdi:Traslados><cfdi:Traslado Base="5" Impuesto="003" TipoFactor="Exento"/></cfdi:Traslados></cfdi:Impuestos>'
    )).replace(b"<cfdi:Conceptos>", b'<cfdi:Impuestos TotalImpuestosTrasladados="1.60"><cfdi:Traslados><cfdi:Traslado Base="10" '
               b'Impuesto="002" TipoFactor="Tasa" TasaOCuota="0.160000" Importe="1.60"/></cfdi:Traslados><cfdi:Retenciones>'
               b'<cfdi:Retencion Impuesto="001" Importe="1.00"/></cfdi:Retenciones></cfdi:Impuestos><cfdi:Conceptos>')
    .replace(b"<cfdi:Emisor ", b'<cfdi:Receptor Rfc="XAXX010101000" Nombre="OTRO" DomicilioFiscalReceptor="42501" '
             b'RegimenFiscalReceptor="616" UsoCFDI="S01"/><!-- c --><cfdi:Emisor '),
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_cadena_edge_cases_equal_xslt(name):
    xml = EDGE_CASES[name]
    assert cadena_original(xml) == _oracle(xml)


def test_tfd_cadena_equals_xslt():
    tfd = etree.fromstring(
        b'<tfd:TimbreFiscalDigital xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital" Version="1.1" '
        b'UUID="ED1752FE-E865-4FF2-BFE1-0F552E770DC9" FechaTimbrado="2025-01-01T00:00:10" '
        b'RfcProvCertif="SPR190613I52" Leyenda=" una  leyenda " SelloCFD="abc==" '
        b'NoCertificadoSAT="30001000000500003456" SelloSAT="def"/>'
    )
    oracle = str(etree.XSLT(etree.parse(xslt_path("tfd11")))(tfd.getroottree()))
    assert cadena_original(tfd) == oracle
    assert oracle == "||1.1|ED1752FE-E865-4FF2-BFE1-0F552E770DC9|2025-01-01T00:00:10|SPR190613I52|una leyenda|abc==|30001000000500003456||"


def test_cadena_rejects_non_cfdi_and_cfdi33():
    with pytest.raises(NotCfdiError):
        cadena_original(b"<foo/>")
    with pytest.raises(UnsupportedVersionError):
        cadena_original(b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/3" Version="3.3"/>')
