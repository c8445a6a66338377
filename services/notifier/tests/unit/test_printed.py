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
    assert concepto["impuestos"] == ["Traslado 002 Tasa 0.160000 base 1125.00 importe 180.00"]
    assert context["tfd"]["UUID"] and context["tfd"]["SelloCFD"] == root.attrib["Sello"]
    assert context["cadena_tfd"].startswith(f"||1.1|{context['tfd']['UUID']}|")
    assert context["qr"].startswith("data:image/svg+xml;base64,")
    assert context["watermark"] is None


def test_printed_context_without_a_stamp_has_no_qr(stamped_xml):
    root = etree.fromstring(stamped_xml)
    complemento = root.find("{http://www.sat.gob.mx/cfd/4}Complemento")
    root.remove(complemento)
    context = printed_context(etree.tostring(root), watermark="SIN VALIDEZ FISCAL")
    assert context["qr"] is None
    assert context["tfd"] == {} and context["cadena_tfd"] == ""
    assert context["watermark"] == "SIN VALIDEZ FISCAL"
