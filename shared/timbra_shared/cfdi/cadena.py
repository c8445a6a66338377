"""Cadena original by walking a parsed CFDI 4.0 / TFD 1.1 tree in pure Python.

It mirrors SAT's ``cadenaoriginal_4_0.xslt`` (+ ``Pagos20.xslt``) and
``cadenaoriginal_TFD_1_1.xslt`` rule by rule:

* ``Requerido``: ``|`` + normalize-space(@attr) (empty when missing);
* ``Opcional``: only when the attribute exists (even if empty);
* unknown elements reached through ``cfdi:Complemento`` /
  ``cfdi:ComplementoConcepto`` fall to XSLT's built-in template, which copies
  their descendant text nodes verbatim (nothing for empty elements such as
  the TimbreFiscalDigital);
* complements that SAT's XSLT knows but this walker does not implement
  (nómina, carta porte, comercio exterior, ...) make the whole document fall
  back to running SAT's XSLT shipped in the satcfdi wheel (slow path, exact).
"""

from __future__ import annotations

import os
import threading

from lxml import etree

from .errors import NotCfdiError
from .render import normalize_space
from .xmlparse import NS_CFDI4, NS_PAGO20, TAG_COMPROBANTE, TAG_TFD, as_element, ensure_cfdi40

__all__ = ["cadena_original", "cadena_xslt", "tfd_cadena", "xslt_path"]

C = "{%s}" % NS_CFDI4
P = "{%s}" % NS_PAGO20

# Namespaces handled by includes of cadenaoriginal_4_0.xslt (other than Pagos20).
_XSLT_COMPLEMENTS = frozenset(
    {
        "http://www.sat.gob.mx/ComercioExterior11",
        "http://www.sat.gob.mx/ComercioExterior20",
        "http://www.sat.gob.mx/donat",
        "http://www.sat.gob.mx/divisas",
        "http://www.sat.gob.mx/implocal",
        "http://www.sat.gob.mx/leyendasFiscales",
        "http://www.sat.gob.mx/pfic",
        "http://www.sat.gob.mx/TuristaPasajeroExtranjero",
        "http://www.sat.gob.mx/nomina12",
        "http://www.sat.gob.mx/registrofiscal",
        "http://www.sat.gob.mx/pagoenespecie",
        "http://www.sat.gob.mx/aerolineas",
        "http://www.sat.gob.mx/valesdedespensa",
        "http://www.sat.gob.mx/notariospublicos",
        "http://www.sat.gob.mx/vehiculousado",
        "http://www.sat.gob.mx/servicioparcialconstruccion",
        "http://www.sat.gob.mx/renovacionysustitucionvehiculos",
        "http://www.sat.gob.mx/certificadodestruccion",
        "http://www.sat.gob.mx/arteantiguedades",
        "http://www.sat.gob.mx/ine",
        "http://www.sat.gob.mx/iedu",
        "http://www.sat.gob.mx/ventavehiculos",
        "http://www.sat.gob.mx/detallista",
        "http://www.sat.gob.mx/EstadoDeCuentaCombustible12",
        "http://www.sat.gob.mx/ConsumoDeCombustibles11",
        "http://www.sat.gob.mx/GastosHidrocarburos10",
        "http://www.sat.gob.mx/IngresosHidrocarburos10",
        "http://www.sat.gob.mx/CartaPorte20",
        "http://www.sat.gob.mx/CartaPorte30",
        "http://www.sat.gob.mx/CartaPorte31",
        "http://www.sat.gob.mx/hidrocarburospetroliferos",
    }
)


class _NeedXslt(Exception):
    pass


# (attribute, required)
_COMPROBANTE = (
    ("Version", 1), ("Serie", 0), ("Folio", 0), ("Fecha", 1), ("FormaPago", 0), ("NoCertificado", 1),
    ("CondicionesDePago", 0), ("SubTotal", 1), ("Descuento", 0), ("Moneda", 1), ("TipoCambio", 0),
    ("Total", 1), ("TipoDeComprobante", 1), ("Exportacion", 1), ("MetodoPago", 0), ("LugarExpedicion", 1),
    ("Confirmacion", 0),
)
_INFO_GLOBAL = (("Periodicidad", 1), ("Meses", 1), ("Año", 1))
_EMISOR = (("Rfc", 1), ("Nombre", 1), ("RegimenFiscal", 1), ("FacAtrAdquirente", 0))
_RECEPTOR = (
    ("Rfc", 1), ("Nombre", 1), ("DomicilioFiscalReceptor", 1), ("ResidenciaFiscal", 0), ("NumRegIdTrib", 0),
    ("RegimenFiscalReceptor", 1), ("UsoCFDI", 1),
)
_CONCEPTO = (
    ("ClaveProdServ", 1), ("NoIdentificacion", 0), ("Cantidad", 1), ("ClaveUnidad", 1), ("Unidad", 0),
    ("Descripcion", 1), ("ValorUnitario", 1), ("Importe", 1), ("Descuento", 0), ("ObjetoImp", 1),
)
_TRASLADO_C = (("Base", 1), ("Impuesto", 1), ("TipoFactor", 1), ("TasaOCuota", 0), ("Importe", 0))
_RETENCION_C = (("Base", 1), ("Impuesto", 1), ("TipoFactor", 1), ("TasaOCuota", 1), ("Importe", 1))
_TERCEROS = (
    ("RfcACuentaTerceros", 1), ("NombreACuentaTerceros", 1), ("RegimenFiscalACuentaTerceros", 1),
    ("DomicilioFiscalACuentaTerceros", 1),
)
_PARTE = (
    ("ClaveProdServ", 1), ("NoIdentificacion", 0), ("Cantidad", 1), ("Unidad", 0), ("Descripcion", 1),
    ("ValorUnitario", 0), ("Importe", 0),
)
_RETENCION_G = (("Impuesto", 1), ("Importe", 1))
_TRASLADO_G = _TRASLADO_C

_P_TOTALES = (
    ("TotalRetencionesIVA", 0), ("TotalRetencionesISR", 0), ("TotalRetencionesIEPS", 0),
    ("TotalTrasladosBaseIVA16", 0), ("TotalTrasladosImpuestoIVA16", 0), ("TotalTrasladosBaseIVA8", 0),
    ("TotalTrasladosImpuestoIVA8", 0), ("TotalTrasladosBaseIVA0", 0), ("TotalTrasladosImpuestoIVA0", 0),
    ("TotalTrasladosBaseIVAExento", 0), ("MontoTotalPagos", 1),
)
_P_PAGO = (
    ("FechaPago", 1), ("FormaDePagoP", 1), ("MonedaP", 1), ("TipoCambioP", 0), ("Monto", 1), ("NumOperacion", 0),
    ("RfcEmisorCtaOrd", 0), ("NomBancoOrdExt", 0), ("CtaOrdenante", 0), ("RfcEmisorCtaBen", 0),
    ("CtaBeneficiario", 0), ("TipoCadPago", 0), ("CertPago", 0), ("CadPago", 0), ("SelloPago", 0),
)
_P_DOCTO = (
    ("IdDocumento", 1), ("Serie", 0), ("Folio", 0), ("MonedaDR", 1), ("EquivalenciaDR", 0), ("NumParcialidad", 1),
    ("ImpSaldoAnt", 1), ("ImpPagado", 1), ("ImpSaldoInsoluto", 1), ("ObjetoImpDR", 1),
)
_P_RET_DR = (("BaseDR", 1), ("ImpuestoDR", 1), ("TipoFactorDR", 1), ("TasaOCuotaDR", 1), ("ImporteDR", 1))
_P_TRA_DR = (("BaseDR", 1), ("ImpuestoDR", 1), ("TipoFactorDR", 1), ("TasaOCuotaDR", 0), ("ImporteDR", 0))
_P_RET_P = (("ImpuestoP", 1), ("ImporteP", 1))
_P_TRA_P = (("BaseP", 1), ("ImpuestoP", 1), ("TipoFactorP", 1), ("TasaOCuotaP", 0), ("ImporteP", 0))

_TFD = (
    ("Version", 1), ("UUID", 1), ("FechaTimbrado", 1), ("RfcProvCertif", 1), ("Leyenda", 0), ("SelloCFD", 1),
    ("NoCertificadoSAT", 1),
)


def _attrs(el, spec, out: list) -> None:
    get = el.get
    for name, req in spec:
        v = get(name)
        if v is None:
            if req:
                out.append("|")
        else:
            out.append("|" + normalize_space(v))


def _builtin_text(el, out_text: list) -> None:
    """XSLT built-in template: descendant text nodes, verbatim (no normalize)."""
    for t in el.itertext():
        out_text.append(t)


def _kids(el) -> dict:
    """Children by tag, each list in document order: one pass instead of an ``iterchildren(tag)`` per tag."""
    kids: dict = {}
    for child in el:
        kids.setdefault(child.tag, []).append(child)
    return kids


_NONE: tuple = ()


def _walk_comprobante(root) -> str:
    vals: list = []  # fields as "|" + value, and literal text (XSLT's built-in template) as it is
    _attrs(root, _COMPROBANTE, vals)
    top = _kids(root)
    for ig in top.get(C + "InformacionGlobal", _NONE):
        _attrs(ig, _INFO_GLOBAL, vals)
    for rel in top.get(C + "CfdiRelacionados", _NONE):
        _attrs(rel, (("TipoRelacion", 1),), vals)
        for r in rel.iterchildren(C + "CfdiRelacionado"):
            _attrs(r, (("UUID", 1),), vals)
    for e in top.get(C + "Emisor", _NONE):
        _attrs(e, _EMISOR, vals)
    for r in top.get(C + "Receptor", _NONE):
        _attrs(r, _RECEPTOR, vals)
    for cs in top.get(C + "Conceptos", _NONE):
        for cp in cs.iterchildren(C + "Concepto"):
            _attrs(cp, _CONCEPTO, vals)
            kids = _kids(cp)
            impuestos = [_kids(imp) for imp in kids.get(C + "Impuestos", _NONE)]
            for imp in impuestos:
                for ts in imp.get(C + "Traslados", _NONE):
                    for t in ts.iterchildren(C + "Traslado"):
                        _attrs(t, _TRASLADO_C, vals)
            for imp in impuestos:
                for rs in imp.get(C + "Retenciones", _NONE):
                    for t in rs.iterchildren(C + "Retencion"):
                        _attrs(t, _RETENCION_C, vals)
            for t in kids.get(C + "ACuentaTerceros", _NONE):
                _attrs(t, _TERCEROS, vals)
            for t in kids.get(C + "InformacionAduanera", _NONE):
                _attrs(t, (("NumeroPedimento", 1),), vals)
            for t in kids.get(C + "CuentaPredial", _NONE):
                _attrs(t, (("Numero", 1),), vals)
            for cc in kids.get(C + "ComplementoConcepto", _NONE):
                for child in cc.iterchildren(etree.Element):
                    _complement(child, vals)
            for parte in cp.iterdescendants(C + "Parte"):  # SAT's XSLT: .//cfdi:Parte
                _attrs(parte, _PARTE, vals)
                for ia in parte.iterdescendants(C + "InformacionAduanera"):
                    _attrs(ia, (("NumeroPedimento", 1),), vals)
    for imp in top.get(C + "Impuestos", _NONE):
        parts = _kids(imp)
        for rs in parts.get(C + "Retenciones", _NONE):
            for t in rs.iterchildren(C + "Retencion"):
                _attrs(t, _RETENCION_G, vals)
        v = imp.get("TotalImpuestosRetenidos")
        if v is not None:
            vals.append("|" + normalize_space(v))
        for ts in parts.get(C + "Traslados", _NONE):
            for t in ts.iterchildren(C + "Traslado"):
                _attrs(t, _TRASLADO_G, vals)
        v = imp.get("TotalImpuestosTrasladados")
        if v is not None:
            vals.append("|" + normalize_space(v))
    for comp in top.get(C + "Complemento", _NONE):
        for child in comp.iterchildren(etree.Element):
            _complement(child, vals)
    return _join(vals)


def _join(vals: list) -> str:
    return "|" + "".join(vals) + "||"


def _complement(el, vals: list) -> None:
    tag = el.tag
    if tag == P + "Pagos":
        _walk_pagos(el, vals)
        return
    ns = etree.QName(el).namespace
    if ns in _XSLT_COMPLEMENTS:
        raise _NeedXslt(ns)
    texts: list = []
    _builtin_text(el, texts)
    if texts:
        vals.append("".join(texts))


def _walk_pagos(el, vals: list) -> None:
    _attrs(el, (("Version", 1),), vals)
    for t in el.iterchildren(P + "Totales"):
        _attrs(t, _P_TOTALES, vals)
    for pago in el.iterchildren(P + "Pago"):
        _attrs(pago, _P_PAGO, vals)
        for d in pago.iterchildren(P + "DoctoRelacionado"):
            _attrs(d, _P_DOCTO, vals)
            for idr in d.iterchildren(P + "ImpuestosDR"):
                for rs in idr.iterchildren(P + "RetencionesDR"):
                    for r in rs.iterchildren(P + "RetencionDR"):
                        _attrs(r, _P_RET_DR, vals)
            for idr in d.iterchildren(P + "ImpuestosDR"):
                for ts in idr.iterchildren(P + "TrasladosDR"):
                    for t in ts.iterchildren(P + "TrasladoDR"):
                        _attrs(t, _P_TRA_DR, vals)
        for ip in pago.iterchildren(P + "ImpuestosP"):
            for rs in ip.iterchildren(P + "RetencionesP"):
                for r in rs.iterchildren(P + "RetencionP"):
                    _attrs(r, _P_RET_P, vals)
            for ts in ip.iterchildren(P + "TrasladosP"):
                for t in ts.iterchildren(P + "TrasladoP"):
                    _attrs(t, _P_TRA_P, vals)


def tfd_cadena(tfd) -> str:
    """Cadena original of a TimbreFiscalDigital 1.1 element (``||1.1|UUID|...||``)."""
    vals: list = []
    _attrs(tfd, _TFD, vals)
    return _join(vals)


def cadena_original(xml) -> str:
    """Cadena original of a CFDI 4.0 (bytes or lxml element) or of a TFD 1.1 element.

    Exactly the output of SAT's XSLT; the common shapes (CFDI 4.0 with Pagos
    2.0, TFD) are computed by a pure-Python walk.
    """
    root = as_element(xml)
    tag = root.tag
    if tag == TAG_TFD:
        return tfd_cadena(root)
    ensure_cfdi40(root)
    try:
        return _walk_comprobante(root)
    except _NeedXslt:
        return cadena_xslt(root)


# ----------------------------------------------------------------------------
# SAT's XSLT from the satcfdi wheel (oracle and slow-path fallback)
# ----------------------------------------------------------------------------

_XSLT_REL = {
    "cfdi40": ("www.sat.gob.mx", "sitio_internet", "cfd", "4", "cadenaoriginal_4_0", "cadenaoriginal_4_0.xslt"),
    "tfd11": ("www.sat.gob.mx", "sitio_internet", "cfd", "TimbreFiscalDigital", "cadenaoriginal_TFD_1_1.xslt"),
}
_xslt_cache: dict[str, etree.XSLT] = {}
_xslt_lock = threading.RLock()


def schema_root() -> str:
    import satcfdi.transform as t

    return os.path.join(os.path.dirname(t.__file__), "schemas")


def xslt_path(which: str = "cfdi40") -> str:
    return os.path.join(schema_root(), *_XSLT_REL[which])


def _xslt(which: str) -> etree.XSLT:
    x = _xslt_cache.get(which)
    if x is None:
        with _xslt_lock:
            x = _xslt_cache.get(which)
            if x is None:
                parser = etree.XMLParser(no_network=True, resolve_entities=False)
                x = etree.XSLT(etree.parse(xslt_path(which), parser), access_control=etree.XSLTAccessControl.DENY_ALL)
                _xslt_cache[which] = x
    return x


def cadena_xslt(xml) -> str:
    """Cadena computed by SAT's own XSLT (via lxml). Slow; used as oracle/fallback."""
    root = as_element(xml)
    if root.tag == TAG_TFD:
        which = "tfd11"
    elif root.tag == TAG_COMPROBANTE:
        which = "cfdi40"
    else:
        raise NotCfdiError("not_cfdi", f"No hay XSLT de cadena original para {root.tag!r}")
    # XSLT matches "/cfdi:Comprobante": run it on a document whose root is this element.
    if root.getparent() is not None:
        root = etree.fromstring(etree.tostring(root))
    with _xslt_lock:  # XSLT objects are not thread-safe
        result = _xslt(which)(root.getroottree())
    return str(result)
