"""Hardened XML parsing: no DTD, no entities, no network, bounded size."""

from __future__ import annotations

import re
import threading

from lxml import etree

from .errors import NotCfdiError, UnsupportedVersionError, XmlError

MAX_XML_BYTES = 5 * 1024 * 1024

NS_CFDI4 = "http://www.sat.gob.mx/cfd/4"
NS_CFDI3 = "http://www.sat.gob.mx/cfd/3"
NS_PAGO20 = "http://www.sat.gob.mx/Pagos20"
NS_TFD = "http://www.sat.gob.mx/TimbreFiscalDigital"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"

TAG_COMPROBANTE = "{%s}Comprobante" % NS_CFDI4
TAG_TFD = "{%s}TimbreFiscalDigital" % NS_TFD

_local = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parsers are not thread-safe: one per thread.
    p = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=False,
            remove_pis=False,
            collect_ids=False,
        )
        _local.parser = p
    return p


def parse_xml(data: bytes | str, *, max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse untrusted XML safely and return the root element.

    Raises :class:`XmlError` (code ``xml_too_large``, ``xml_forbidden_dtd``,
    ``xml_malformed`` or ``xml_empty``) with a Spanish message.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise XmlError("xml_malformed", f"Se esperaban bytes con XML, no {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise XmlError(
            "xml_too_large",
            f"El XML mide {len(data)} bytes; el máximo permitido es {max_bytes} bytes",
        )
    if not data.strip():
        raise XmlError("xml_empty", "El archivo XML está vacío")
    # A CFDI never carries a DTD. Refusing any DOCTYPE outright defeats XXE and
    # entity-expansion ("billion laughs") attacks before libxml2 sees them.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlError("xml_forbidden_dtd", "El XML contiene una declaración DOCTYPE/ENTITY, que no se permite")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise XmlError("xml_malformed", f"XML mal formado: {exc}") from None
    except ValueError as exc:  # e.g. unicode strings with encoding declaration
        raise XmlError("xml_malformed", f"XML mal formado: {exc}") from None
    if root is None:
        raise XmlError("xml_malformed", "XML mal formado: no hay elemento raíz")
    tree = root.getroottree()
    if tree.docinfo.doctype:
        raise XmlError("xml_forbidden_dtd", "El XML contiene una declaración DOCTYPE, que no se permite")
    return root


_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?\s*(?:<\?xml[^<>]*\?>)?\s*<(?:[\w.-]+:)?")  # only the declaration before the root


def comprobante_attributes(data: bytes, *names: str) -> dict[str, str]:
    """Some attributes of a CFDI's root ``Comprobante`` without parsing the whole document (the
    stamping intake reads Fecha and LugarExpedicion of every funded invoice; about a tenth of
    the cost of parsing a 4 KB CFDI). Reads the root's start tag when it is plainly written (double quotes, one
    space before each attribute, as lxml writes it); anything else, or a value holding an entity
    reference, goes through the hardened :func:`parse_xml`, whose :class:`XmlError` it raises."""
    name_at = data.find(b"Comprobante", 0, 512)
    end = data.find(b">", name_at)
    if name_at > 0 and end > 0 and _PROLOG.fullmatch(data, 0, name_at) and data[name_at + 11:name_at + 12] in (b" ", b"\n", b"\t", b"\r", b"/", b">") \
            and data.find(b"'", name_at, end) < 0 and data.count(b'"', name_at, end) % 2 == 0:  # so that ">" ends the tag
        found: dict[str, str] = {}
        for name in names:
            key = b" " + name.encode() + b'="'
            at = data.find(key, name_at, end)
            if at < 0:
                if data.find(name.encode(), name_at, end) >= 0:  # written some other way
                    break
                continue
            if data.count(b'"', name_at, at) % 2:  # inside another attribute's value
                break
            value = data[at + len(key):data.find(b'"', at + len(key))]
            if b"&" in value:
                break
            found[name] = value.decode()
        else:
            return found
    root = parse_xml(data)
    return {name: root.get(name) for name in names if root.get(name) is not None}


def as_element(xml) -> etree._Element:
    """Accept bytes/str (parsed hardened), an element or an ElementTree."""
    if isinstance(xml, etree._ElementTree):
        return xml.getroot()
    if isinstance(xml, etree._Element):
        return xml
    return parse_xml(xml)


def ensure_cfdi40(root: etree._Element) -> etree._Element:
    """Raise a clear error unless ``root`` is a CFDI 4.0 Comprobante."""
    tag = root.tag if isinstance(root.tag, str) else ""
    if tag == TAG_COMPROBANTE:
        version = root.get("Version")
        if version != "4.0":
            raise UnsupportedVersionError(
                "unsupported_version", f"Versión de CFDI no soportada: {version!r}; sólo se admite 4.0"
            )
        return root
    if tag == "{%s}Comprobante" % NS_CFDI3:
        version = root.get("Version") or root.get("version") or "3.x"
        raise UnsupportedVersionError(
            "unsupported_version",
            f"Es un CFDI {version}; sólo se admite CFDI 4.0 (espacio de nombres {NS_CFDI4})",
        )
    raise NotCfdiError("not_cfdi", f"El XML no es un CFDI: el elemento raíz es {tag or root.tag!r}")
