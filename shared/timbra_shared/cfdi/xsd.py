"""XSD validation with SAT's schemas as shipped in the satcfdi wheel (off the hot path)."""

from __future__ import annotations

import os
import threading

from lxml import etree

from .cadena import schema_root

__all__ = ["xsd_errors", "schema"]

_SCHEMAS = (
    ("http://www.sat.gob.mx/cfd/4", "www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd"),
    ("http://www.sat.gob.mx/Pagos20", "www.sat.gob.mx/sitio_internet/cfd/Pagos/Pagos20.xsd"),
    (
        "http://www.sat.gob.mx/TimbreFiscalDigital",
        "www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd",
    ),
)

_lock = threading.RLock()
_schema: etree.XMLSchema | None = None


def schema() -> etree.XMLSchema:
    """Compile (once) a wrapper schema importing CFDI 4.0, Pagos 2.0 and TFD 1.1."""
    global _schema
    if _schema is None:
        with _lock:
            if _schema is None:
                root = schema_root()
                xs = "http://www.w3.org/2001/XMLSchema"
                wrapper = etree.Element("{%s}schema" % xs, nsmap={"xs": xs})
                for ns, rel in _SCHEMAS:
                    imp = etree.SubElement(wrapper, "{%s}import" % xs)
                    imp.set("namespace", ns)
                    imp.set("schemaLocation", os.path.join(root, *rel.split("/")))
                doc = etree.ElementTree(wrapper)
                parser = etree.XMLParser(no_network=True, resolve_entities=False)
                doc = etree.fromstring(etree.tostring(doc), parser=parser, base_url=os.path.join(root, "wrapper.xsd"))
                _schema = etree.XMLSchema(doc)
    return _schema


def xsd_errors(root: etree._Element) -> list[tuple[str, str]]:
    """List of (path, message) XSD errors; empty when valid."""
    s = schema()
    with _lock:  # XMLSchema objects keep an error log: not thread-safe
        ok = s.validate(root.getroottree() if root.getparent() is None else etree.ElementTree(root))
        log = list(s.error_log) if not ok else []
    out = []
    for e in log:
        out.append((e.path or f"línea {e.line}", e.message))
    return out
