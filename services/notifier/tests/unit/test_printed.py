"""The printed representation: the SAT verification URL and what the PDF template receives."""

from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from lxml import etree

from timbra_notifier.domain.printed import VERIFY_URL, printed_context, verification_url

SELLO = "Gb0kTBV7SGAP3BpGtms/5plSBwGCh1XVRsOmZDYNB1OLk4AILGD3PUUNWO6T+fobsXBCkMHmzpiksW6TCfXcnHQ3eiqTll3WQyk4ulqPne9pU3HQszS0vl4BmOBzMlW9oyj/rc9hfs0sR3sIAcBjctKoG9uk+EvSKg=="
UUID = "5FB2822E-396D-4725-8521-CDC4BDD20CCF"


def test_verification_url_format():
    url = verification_url(UUID, "EKU9003173C9", "URE180429TM6", "1305.00", SELLO)
    assert url == f"{VERIFY_URL}?id={UUID}&re=EKU9003173C9&rr=URE180429TM6&tt=000000000000001305.000000&fe=+EvSKg=="


@pytest.mark.parametrize(
    ("total", "tt"),
    [
        ("0", "000000000000000000.000000"),
        ("0.5", "000000000000000000.500000"),
        ("232.00", "000000000000000232.000000"),
        ("1234567.891234", "000000000001234567.891234"),
        ("999999999999999999.999999", "999999999999999999.999999"),
    ],
)
def test_total_is_zero_padded_to_25_characters_with_6_decimals(total, tt):
    url = verification_url(UUID, "EKU9003173C9", "URE180429TM6", total, SELLO)
    value = url.split("&tt=")[1].split("&")[0]
    assert value == tt
    assert len(value) == 25
    assert Decimal(value) == Decimal(total)


def test_fe_is_the_last_8_characters_of_the_sello():
    url = verification_url(UUID, "EKU9003173C9", "URE180429TM6", "1", "ABCDEFGHIJKLMNOP")
    assert url.endswith("&fe=IJKLMNOP")


def test_url_starts_with_the_sat_service():
    assert verification_url(UUID, "A", "B", "1", SELLO).startswith("https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx?id=")


def test_rfc_with_ampersand_survives_in_the_url():
    url = verification_url(UUID, "A&C010101AB1", "URE180429TM6", "1", SELLO)
    query = parse_qs(urlparse(url).query)
    assert query["re"] == ["A&C010101AB1"]


# --------------------------------------------------------------------------- printed_context


def test_printed_context_of_a_stamped_cfdi(stamped_xml):
    context = printed_context(stamped_xml)
    root = etree.fromstring(stamped_xml)
    assert context["c"]["Total"] == "1305.00"
    assert context["total_letra"] == "UN MIL TRESCIENTOS CINCO PESOS 00/100 M.N."
    assert context["tipo_nombre"] == "Factura"
    assert context["emisor"]["Rfc"] == "EKU9003173C9"
    assert context["receptor"]["Nombre"] == "UNIVERSIDAD ROBOTICA ESPAÑOLA"
    assert context["impuestos"] == {"TotalImpuestosTrasladados": "180.00"}
    (concepto,) = context["conceptos"]
    assert concepto["Importe"] == "1125.00"
    assert concepto["impuestos"] == ["Traslado IVA Tasa 0.160000 base 1125.00 importe 180.00"]
    assert concepto["n"] == 1
    assert context["partidas"] == [{"n": 1, "tipo": "Traslado", "impuesto": "IVA", "factor": "Tasa", "tasa": "0.160000", "base": "1125.00", "importe": "180.00"}]
    assert context["tfd"]["UUID"] and context["tfd"]["SelloCFD"] == root.attrib["Sello"]
    assert context["cadena_tfd"].startswith(f"||1.1|{context['tfd']['UUID']}|")
    assert context["qr"].startswith("data:image/png;base64,")
    assert context["verification_url"].startswith(VERIFY_URL + "?id=" + context["tfd"]["UUID"])
    block = context["seal_block"]
    sello = block[1:block.index("Sello digital del SAT:")]
    assert "".join(sello) == root.attrib["Sello"] and all(len(line) <= 120 for line in block[1:])
    assert context["watermark"] is None


def test_printed_context_without_a_stamp_has_no_qr(stamped_xml):
    root = etree.fromstring(stamped_xml)
    complemento = root.find("{http://www.sat.gob.mx/cfd/4}Complemento")
    root.remove(complemento)
    context = printed_context(etree.tostring(root), watermark="SIN VALIDEZ FISCAL")
    assert context["qr"] is None
    assert context["tfd"] == {} and context["cadena_tfd"] == ""
    assert context["watermark"] == "SIN VALIDEZ FISCAL"


def test_the_qr_decodes_to_the_verification_url(stamped_xml):
    zxingcpp = pytest.importorskip("zxingcpp")
    from PIL import Image
    import base64
    import io

    context = printed_context(stamped_xml)
    png = base64.b64decode(context["qr"].split(",", 1)[1])
    image = Image.open(io.BytesIO(png)).convert("L").resize((400, 400), Image.NEAREST)
    (barcode,) = zxingcpp.read_barcodes(image)
    assert barcode.text == context["verification_url"]
    assert "&tt=000000000000001305.000000&" in barcode.text


def test_tax_breakdown_is_referenced_by_line_number():
    from timbra_shared.cfdi import Comprobante, Concepto, Emisor, Receptor, Retencion, Traslado, build, to_xml

    comprobante = Comprobante(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(Rfc="URE180429TM6", Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA", DomicilioFiscalReceptor="86991", RegimenFiscalReceptor="601", UsoCFDI="G03"),
        LugarExpedicion="42501", FormaPago="03", MetodoPago="PUE",
        Conceptos=[
            Concepto(ClaveProdServ="81112101", Cantidad="1", ClaveUnidad="E48", Descripcion="Asesoría", ValorUnitario="1000.00",
                     Traslados=[Traslado(TasaOCuota="0.160000")], Retenciones=[Retencion(Impuesto="001", TasaOCuota="0.100000")]),
            Concepto(ClaveProdServ="01010101", Cantidad="1", ClaveUnidad="H87", Descripcion="Donativo", ValorUnitario="50.00", ObjetoImp="01"),
            Concepto(ClaveProdServ="81112101", Cantidad="1", ClaveUnidad="E48", Descripcion="Soporte", ValorUnitario="200.00", Traslados=[Traslado(TasaOCuota="0.080000")]),
        ],
    )
    context = printed_context(to_xml(build(comprobante)))
    assert [(t["n"], t["tipo"], t["impuesto"], t["tasa"], t["importe"]) for t in context["partidas"]] == [
        (1, "Traslado", "IVA", "0.160000", "160.00"), (1, "Retención", "ISR", "0.100000", "100.00"), (3, "Traslado", "IVA", "0.080000", "16.00"),
    ]
    lines = context["partidas_text"].splitlines()
    assert lines[0].split() == ["Partida", "Tipo", "Impuesto", "Factor", "Tasa", "o", "cuota", "Base", "Importe"]
    assert lines[1].split()[:3] == ["1", "Traslado", "IVA"] and lines[2].split()[:3] == ["1", "Retención", "ISR"]
    assert lines[3].split()[0] == "2" and "No objeto" in lines[3]
    assert lines[4].split()[0] == "3" and lines[4].split()[-1] == "16.00"
    assert {(t["impuesto"], t["tasa"], t["importe"]) for t in context["impuestos_resumen"]} == {("IVA", "0.160000", "160.00"), ("IVA", "0.080000", "16.00"), ("ISR", "", "100.00")}


def test_pagos_20_payments_and_related_documents():
    from timbra_shared.cfdi import Comprobante, DoctoRelacionado, Emisor, Pago, Pagos, Receptor, TrasladoDR, build, to_xml

    comprobante = Comprobante(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(Rfc="URE180429TM6", Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA", DomicilioFiscalReceptor="86991", RegimenFiscalReceptor="601", UsoCFDI="CP01"),
        LugarExpedicion="42501", TipoDeComprobante="P", Moneda="XXX",
        Pagos=Pagos(Pago=[Pago(FechaPago="2025-01-10T12:00:00", FormaDePagoP="03", MonedaP="MXN", TipoCambioP="1", DoctoRelacionado=[
            DoctoRelacionado(IdDocumento=UUID, MonedaDR="MXN", NumParcialidad=1, ImpSaldoAnt="1305.00", ImpPagado="1000.00", Serie="F", Folio="1",
                             TrasladosDR=[TrasladoDR(BaseDR="862.068966", TasaOCuotaDR="0.160000")]),
        ])]),
    )
    context = printed_context(to_xml(build(comprobante)))
    assert context["tipo_nombre"] == "Recibo de pago"
    (pago,) = context["pagos"]["pagos"]
    assert pago["Monto"] == "1000.00" and pago["forma"].startswith("03 - Transferencia")
    (docto,) = pago["doctos"]
    assert (docto["IdDocumento"], docto["ImpSaldoAnt"], docto["ImpPagado"], docto["ImpSaldoInsoluto"]) == (UUID, "1305.00", "1000.00", "305.00")
    assert docto["impuestos"][0]["impuesto"] == "IVA"
    assert context["pagos"]["totales"]["MontoTotalPagos"] == "1000.00"
    assert context["total_letra"] == "UN MIL PESOS 00/100 M.N."
