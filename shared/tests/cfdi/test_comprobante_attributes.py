"""``comprobante_attributes``: the root's attributes read from its start tag agree with the
hardened parser, and anything unusual goes through that parser."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from timbra_shared.cfdi import build, load_csd, parse_xml, seal
from timbra_shared.cfdi.errors import XmlError
from timbra_shared.cfdi.testing import make_csd, sample_invoice
from timbra_shared.cfdi.xmlparse import comprobante_attributes

NS = "http://www.sat.gob.mx/cfd/4"


def test_a_sealed_cfdi():
    cer, key = make_csd()
    xml = seal(build(sample_invoice(Fecha="2025-06-15T11:00:00", Folio="77")), load_csd(cer, key, "12345678a"))
    root = parse_xml(xml)
    assert comprobante_attributes(xml, "Fecha", "LugarExpedicion", "Folio") == {
        "Fecha": "2025-06-15T11:00:00", "LugarExpedicion": root.get("LugarExpedicion"), "Folio": "77",
    }
    assert comprobante_attributes(xml, "NoSuchAttribute") == {}


@settings(max_examples=200, deadline=None)
@given(fecha=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30).filter(lambda t: all(c >= " " or c in "\t\n\r" for c in t)),
       lugar=st.from_regex(r"\A[0-9]{5}\Z"), prefix=st.booleans())
def test_agrees_with_the_parser_for_any_value_lxml_writes(fecha, lugar, prefix):
    root = etree.Element(f"{{{NS}}}Comprobante", nsmap={"cfdi": NS})
    root.set("Serie", 'a"b\'c>d')
    root.set("Fecha", fecha)
    root.set("LugarExpedicion", lugar)
    etree.SubElement(root, f"{{{NS}}}Emisor").set("Fecha", "not the root's")
    xml = etree.tostring(root, xml_declaration=prefix, encoding="UTF-8")
    assert comprobante_attributes(xml, "Fecha", "LugarExpedicion") == {"Fecha": fecha, "LugarExpedicion": lugar}


def test_single_quotes_and_spacing():
    xml = b"<?xml version='1.0'?>\n<cfdi:Comprobante xmlns:cfdi='http://www.sat.gob.mx/cfd/4' Fecha = '2025-01-02T03:04:05'\n LugarExpedicion=\"64000\"/>"
    assert comprobante_attributes(xml, "Fecha", "LugarExpedicion") == {"Fecha": "2025-01-02T03:04:05", "LugarExpedicion": "64000"}


def test_a_character_reference_is_resolved_by_the_parser():
    xml = b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Fecha="2025-01-02T03:04:0&#53;"/>'
    assert comprobante_attributes(xml, "Fecha") == {"Fecha": "2025-01-02T03:04:05"}


def test_a_doctype_is_refused_as_the_parser_refuses_it():
    xml = b'<!DOCTYPE x [<!ENTITY e "2025">]><cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Fecha="&e;-01-02T03:04:05"/>'
    with pytest.raises(XmlError) as err:
        comprobante_attributes(xml, "Fecha")
    assert err.value.code == "xml_forbidden_dtd"


def test_a_comprobante_that_is_not_the_root_is_not_read_as_one():
    xml = b'<wrapper><cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Fecha="2025-01-02T03:04:05"/></wrapper>'
    assert comprobante_attributes(xml, "Fecha") == {}  # the parser's root is <wrapper>


def test_malformed_xml_raises_the_parsers_error():
    with pytest.raises(XmlError):
        comprobante_attributes(b"<cfdi:Comprobante Fecha=", "Fecha")


def test_an_attribute_name_inside_another_value_is_not_taken_for_it():
    xml = b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Serie="a Fecha=" Fecha="2025-01-02T03:04:05"/>'
    assert comprobante_attributes(xml, "Fecha") == {"Fecha": "2025-01-02T03:04:05"}


def test_a_greater_than_sign_inside_a_value_does_not_end_the_tag():
    xml = b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Serie="a>b" Fecha="2025-01-02T03:04:05"/>'
    assert comprobante_attributes(xml, "Fecha", "Serie") == {"Fecha": "2025-01-02T03:04:05", "Serie": "a>b"}
