"""Timbra's CFDI 4.0 core: model, totals, XML, cadena original, sello, validation.

See docs/cfdi.md for the design decisions (rounding rule, cadena approach,
validation codes, catalogs).
"""

from .build import build
from .cadena import cadena_original, cadena_xslt
from .csd import Csd, load_csd
from .errors import BuildError, CfdiError, CsdError, NotCfdiError, UnsupportedVersionError, XmlError
from .fecha import fecha_local
from .models import (
    ACuentaTerceros,
    CfdiRelacionados,
    Comprobante,
    Concepto,
    DoctoRelacionado,
    Emisor,
    Impuestos,
    ImpuestosP,
    InformacionGlobal,
    Pago,
    Pagos,
    PagosTotales,
    Receptor,
    Retencion,
    RetencionDR,
    RetencionP,
    RetencionTotal,
    Traslado,
    TrasladoDR,
    TrasladoP,
    TrasladoTotal,
)
from .seal import VerifyResult, cadena_of_model, seal, seal_xml, to_xml, verify
from .validate import Finding, validate
from .xmlparse import MAX_XML_BYTES, parse_xml

__all__ = [
    "ACuentaTerceros",
    "BuildError",
    "CfdiError",
    "CfdiRelacionados",
    "Comprobante",
    "Concepto",
    "Csd",
    "CsdError",
    "DoctoRelacionado",
    "Emisor",
    "Finding",
    "Impuestos",
    "ImpuestosP",
    "InformacionGlobal",
    "MAX_XML_BYTES",
    "NotCfdiError",
    "Pago",
    "Pagos",
    "PagosTotales",
    "Receptor",
    "Retencion",
    "RetencionDR",
    "RetencionP",
    "RetencionTotal",
    "Traslado",
    "TrasladoDR",
    "TrasladoP",
    "TrasladoTotal",
    "UnsupportedVersionError",
    "VerifyResult",
    "XmlError",
    "build",
    "cadena_of_model",
    "cadena_original",
    "cadena_xslt",
    "fecha_local",
    "load_csd",
    "parse_xml",
    "seal",
    "seal_xml",
    "to_xml",
    "validate",
    "verify",
]
