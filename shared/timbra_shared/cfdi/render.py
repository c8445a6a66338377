"""Model → CFDI 4.0 XML text and cadena original, in one pass (fast path).

The XML is produced by string templating with proper escaping; the cadena is
produced from the same values in the order of SAT's cadenaoriginal_4_0.xslt
(and Pagos20.xslt), with XPath ``normalize-space`` applied to every value, so
it equals what the XSLT yields on the produced XML. Tests check that
equivalence against SAT's XSLT (run by lxml) on many shapes.
"""

from __future__ import annotations

import re
from decimal import Decimal

from .errors import BuildError
from .models import Comprobante

NS_CFDI = "http://www.sat.gob.mx/cfd/4"
NS_PAGO20 = "http://www.sat.gob.mx/Pagos20"
XSD_CFDI = "http://www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd"
XSD_PAGO20 = "http://www.sat.gob.mx/sitio_internet/cfd/Pagos/Pagos20.xsd"

_SPECIAL = re.compile(r'[&<>"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_WS_RUN = re.compile(r"[ \t\n\r]+")


def normalize_space(s: str) -> str:
    """XPath 1.0 normalize-space(): only #x20 #x9 #xD #xA count as whitespace."""
    # Substring tests, not a regular expression: this runs for every field of every cadena original.
    if not s or ("  " not in s and "\t" not in s and "\n" not in s and "\r" not in s and s[0] != " " and s[-1] != " "):
        return s
    return _WS_RUN.sub(" ", s).strip(" ")


def escape_attr(s: str) -> str:
    if _SPECIAL.search(s) is None:
        return s
    if _ILLEGAL.search(s):
        raise BuildError("invalid_character", f"El valor {s!r} contiene caracteres no permitidos en XML")
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def fmt_num(d) -> str:
    """Plain (never scientific) notation of a Decimal/int."""
    if type(d) is Decimal:
        return format(d, "f")
    return str(d)


def fmt_tasa(d: Decimal) -> str:
    return format(d, ".6f")


class _Out:
    """Accumulates XML text and cadena values side by side."""

    __slots__ = ("x", "k")

    def __init__(self):
        self.x: list[str] = []
        self.k: list[str] = []


_CLEAN_NEEDS = re.compile(r'[&<>"\t\n\r\x00-\x1f\ud800-\udfff\ufffe\uffff]|  |^ | $')
_STR_CACHE: dict[str, tuple[str, str]] = {}
_STR_CACHE_MAX = 50_000


def _prep(value: str) -> tuple[str, str]:
    """(escaped for an XML attribute, normalize-space'd for the cadena), memoised:
    names, RFCs and catalog codes repeat across invoices."""
    hit = _STR_CACHE.get(value)
    if hit is not None:
        return hit
    if _CLEAN_NEEDS.search(value) is None:
        hit = (value, value)
    else:
        hit = (escape_attr(value), normalize_space(value))
    if len(_STR_CACHE) >= _STR_CACHE_MAX:
        _STR_CACHE.clear()
    _STR_CACHE[value] = hit
    return hit


def _attrs_str(x: list, k: list, items) -> None:
    """items: iterable of (name, value, required). Strings get escaped/normalised."""
    xa = x.append
    ka = k.append
    for name, value, required in items:
        if value is None or value == "":
            if required:
                xa(f' {name}=""')
                ka("")
            continue
        if type(value) is str:
            e, n = _STR_CACHE.get(value) or _prep(value)
            xa(f' {name}="{e}"')
            ka(n)
        else:
            value = format(value, "f") if type(value) is Decimal else str(value)
            xa(f' {name}="{value}"')
            ka(value)


def _P(value) -> tuple[str, str]:
    hit = _STR_CACHE.get(value)
    if hit is None:
        hit = _prep(value) if value else ("", "")
    return hit


_TASA_FMT: dict = {}
# Emisor/Receptor fragments keyed by their attribute values (issuers repeat them).
_FRAG_CACHE: dict[tuple, tuple[str, tuple[str, ...]]] = {}


def _remember(key: tuple, xml: str, cadena: list) -> tuple[str, tuple[str, ...]]:
    if len(_FRAG_CACHE) >= 20_000:
        _FRAG_CACHE.clear()
    frag = (xml, tuple(cadena))
    _FRAG_CACHE[key] = frag
    return frag


def _tasa(d) -> str:
    s = _TASA_FMT.get(d)
    if s is None:
        s = format(d, ".6f")
        if len(_TASA_FMT) < 4096:
            _TASA_FMT[d] = s
    return s


def _num(d) -> str:
    s = str(d)
    if "E" in s:
        s = format(d, "f")
    return s


_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<cfdi:Comprobante'
    f' xmlns:cfdi="{NS_CFDI}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    f' xsi:schemaLocation="{NS_CFDI} {XSD_CFDI}" Version="4.0"'
)
_HEAD_PAGOS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<cfdi:Comprobante'
    f' xmlns:cfdi="{NS_CFDI}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    f' xmlns:pago20="{NS_PAGO20}" xsi:schemaLocation="{NS_CFDI} {XSD_CFDI} {NS_PAGO20} {XSD_PAGO20}" Version="4.0"'
)


def _tax_lines(tag: str, lines, x: list, k: list) -> None:
    _SC = _STR_CACHE.get
    xa = x.append
    for t in lines:
        ie, inn = (_SC(t.Impuesto) or _P(t.Impuesto))
        b = _num(t.Base)
        f = t.TipoFactor
        if f == "Exento" or t.Importe is None:
            xa(f'<cfdi:{tag} Base="{b}" Impuesto="{ie}" TipoFactor="{f}"/>')
            k += (b, inn, f)
        else:
            tasa, imp = _tasa(t.TasaOCuota), _num(t.Importe)
            xa(f'<cfdi:{tag} Base="{b}" Impuesto="{ie}" TipoFactor="{f}" TasaOCuota="{tasa}" Importe="{imp}"/>')
            k += (b, inn, f, tasa, imp)


def render(c: Comprobante) -> tuple[str, str, str]:
    """Return ``(xml_head, xml_tail, cadena)``; the document is ``head + Sello + tail``.

    ``c`` must have been through :func:`build` (amounts are Decimals).
    """
    if c.SubTotal is None or c.Total is None:
        raise BuildError("not_built", "El comprobante no se ha calculado: llame a build() primero")
    pagos = c.Pagos
    _SC = _STR_CACHE.get
    x: list[str] = [_HEAD_PAGOS if pagos is not None else _HEAD]
    k: list[str] = ["4.0"]
    xa = x.append
    ka = k.append

    # -- Comprobante attributes, in cadena order
    if c.Serie:
        e, n = (_SC(c.Serie) or _P(c.Serie))
        xa(f' Serie="{e}"')
        ka(n)
    if c.Folio:
        e, n = (_SC(c.Folio) or _P(c.Folio))
        xa(f' Folio="{e}"')
        ka(n)
    e, n = (_SC(c.Fecha) or _P(c.Fecha))
    xa(f' Fecha="{e}"')
    ka(n)
    if c.FormaPago:
        e, n = (_SC(c.FormaPago) or _P(c.FormaPago))
        xa(f' FormaPago="{e}"')
        ka(n)
    e, n = (_SC(c.NoCertificado) or _P(c.NoCertificado))
    xa(f' NoCertificado="{e}"')
    ka(n)
    if c.CondicionesDePago:
        e, n = (_SC(c.CondicionesDePago) or _P(c.CondicionesDePago))
        xa(f' CondicionesDePago="{e}"')
        ka(n)
    v = _num(c.SubTotal)
    xa(f' SubTotal="{v}"')
    ka(v)
    if c.Descuento is not None:
        v = _num(c.Descuento)
        xa(f' Descuento="{v}"')
        ka(v)
    e, n = (_SC(c.Moneda) or _P(c.Moneda))
    xa(f' Moneda="{e}"')
    ka(n)
    if c.TipoCambio is not None:
        v = _num(c.TipoCambio)
        xa(f' TipoCambio="{v}"')
        ka(v)
    v = _num(c.Total)
    e, n = (_SC(c.TipoDeComprobante) or _P(c.TipoDeComprobante))
    e2, n2 = (_SC(c.Exportacion) or _P(c.Exportacion))
    xa(f' Total="{v}" TipoDeComprobante="{e}" Exportacion="{e2}"')
    k += (v, n, n2)
    if c.MetodoPago:
        e, n = (_SC(c.MetodoPago) or _P(c.MetodoPago))
        xa(f' MetodoPago="{e}"')
        ka(n)
    e, n = (_SC(c.LugarExpedicion) or _P(c.LugarExpedicion))
    xa(f' LugarExpedicion="{e}"')
    ka(n)
    if c.Confirmacion:
        e, n = (_SC(c.Confirmacion) or _P(c.Confirmacion))
        xa(f' Confirmacion="{e}"')
        ka(n)
    xa(f' Certificado="{(_SC(c.Certificado) or _P(c.Certificado))[0]}" Sello="')
    head_len = len(x)
    xa('">')

    ig = c.InformacionGlobal
    if ig is not None:
        xa("<cfdi:InformacionGlobal")
        _attrs_str(x, k, (("Periodicidad", ig.Periodicidad, True), ("Meses", ig.Meses, True), ("Año", str(ig.Año), True)))
        xa("/>")
    for rel in c.CfdiRelacionados:
        xa("<cfdi:CfdiRelacionados")
        _attrs_str(x, k, (("TipoRelacion", rel.TipoRelacion, True),))
        xa(">")
        for u in rel.UUIDs:
            xa("<cfdi:CfdiRelacionado")
            _attrs_str(x, k, (("UUID", u, True),))
            xa("/>")
        xa("</cfdi:CfdiRelacionados>")

    em = c.Emisor
    key = (em.Rfc, em.Nombre, em.RegimenFiscal, em.FacAtrAdquirente)
    frag = _FRAG_CACHE.get(key)
    if frag is None:
        fx: list[str] = []
        fk: list[str] = []
        _attrs_str(fx, fk, (("Rfc", em.Rfc, True), ("Nombre", em.Nombre, True),
                            ("RegimenFiscal", em.RegimenFiscal, True), ("FacAtrAdquirente", em.FacAtrAdquirente, False)))
        frag = _remember(key, "<cfdi:Emisor" + "".join(fx) + "/>", fk)
    xa(frag[0])
    k += frag[1]

    r = c.Receptor
    key = (r.Rfc, r.Nombre, r.DomicilioFiscalReceptor, r.ResidenciaFiscal, r.NumRegIdTrib,
           r.RegimenFiscalReceptor, r.UsoCFDI, 1)
    frag = _FRAG_CACHE.get(key)
    if frag is None:
        fx = []
        fk = []
        _attrs_str(fx, fk, (
            ("Rfc", r.Rfc, True),
            ("Nombre", r.Nombre, True),
            ("DomicilioFiscalReceptor", r.DomicilioFiscalReceptor, True),
            ("ResidenciaFiscal", r.ResidenciaFiscal, False),
            ("NumRegIdTrib", r.NumRegIdTrib, False),
            ("RegimenFiscalReceptor", r.RegimenFiscalReceptor, True),
            ("UsoCFDI", r.UsoCFDI, True),
        ))
        frag = _remember(key, "<cfdi:Receptor" + "".join(fx) + "/>", fk)
    xa(frag[0])
    xa("<cfdi:Conceptos>")
    k += frag[1]

    for cp in c.Conceptos:
        a, an = (_SC(cp.ClaveProdServ) or _P(cp.ClaveProdServ))
        xa(f'<cfdi:Concepto ClaveProdServ="{a}"')
        ka(an)
        if cp.NoIdentificacion:
            e, n = (_SC(cp.NoIdentificacion) or _P(cp.NoIdentificacion))
            xa(f' NoIdentificacion="{e}"')
            ka(n)
        cant = _num(cp.Cantidad)
        a, an = (_SC(cp.ClaveUnidad) or _P(cp.ClaveUnidad))
        xa(f' Cantidad="{cant}" ClaveUnidad="{a}"')
        k += (cant, an)
        if cp.Unidad:
            e, n = (_SC(cp.Unidad) or _P(cp.Unidad))
            xa(f' Unidad="{e}"')
            ka(n)
        a, an = (_SC(cp.Descripcion) or _P(cp.Descripcion))
        vu, imp = _num(cp.ValorUnitario), _num(cp.Importe)
        xa(f' Descripcion="{a}" ValorUnitario="{vu}" Importe="{imp}"')
        k += (an, vu, imp)
        if cp.Descuento is not None:
            v = _num(cp.Descuento)
            xa(f' Descuento="{v}"')
            ka(v)
        a, an = (_SC(cp.ObjetoImp) or _P(cp.ObjetoImp))
        ka(an)
        tras = cp.Traslados
        rets = cp.Retenciones
        terceros = cp.ACuentaTerceros
        if not (tras or rets or terceros is not None or cp.InformacionAduanera or cp.CuentaPredial):
            xa(f' ObjetoImp="{a}"/>')
            continue
        xa(f' ObjetoImp="{a}">')
        if tras or rets:
            xa("<cfdi:Impuestos>")
            if tras:
                xa("<cfdi:Traslados>")
                _tax_lines("Traslado", tras, x, k)
                xa("</cfdi:Traslados>")
            if rets:
                xa("<cfdi:Retenciones>")
                _tax_lines("Retencion", rets, x, k)
                xa("</cfdi:Retenciones>")
            xa("</cfdi:Impuestos>")
        if terceros is not None:
            xa("<cfdi:ACuentaTerceros")
            _attrs_str(
                x,
                k,
                (
                    ("RfcACuentaTerceros", terceros.RfcACuentaTerceros, True),
                    ("NombreACuentaTerceros", terceros.NombreACuentaTerceros, True),
                    ("RegimenFiscalACuentaTerceros", terceros.RegimenFiscalACuentaTerceros, True),
                    ("DomicilioFiscalACuentaTerceros", terceros.DomicilioFiscalACuentaTerceros, True),
                ),
            )
            xa("/>")
        for ped in cp.InformacionAduanera:
            e, n = (_SC(ped) or _P(ped))
            xa(f'<cfdi:InformacionAduanera NumeroPedimento="{e}"/>')
            ka(n)
        for num in cp.CuentaPredial:
            e, n = (_SC(num) or _P(num))
            xa(f'<cfdi:CuentaPredial Numero="{e}"/>')
            ka(n)
        xa("</cfdi:Concepto>")
    xa("</cfdi:Conceptos>")

    imp = c.Impuestos
    if imp is not None:
        tir, tit = imp.TotalImpuestosRetenidos, imp.TotalImpuestosTrasladados
        xa("<cfdi:Impuestos")
        if tir is not None:
            tir = _num(tir)
            xa(f' TotalImpuestosRetenidos="{tir}"')
        if tit is not None:
            tit = _num(tit)
            xa(f' TotalImpuestosTrasladados="{tit}"')
        xa(">")
        if imp.Retenciones:
            xa("<cfdi:Retenciones>")
            for rt in imp.Retenciones:
                e, n = (_SC(rt.Impuesto) or _P(rt.Impuesto))
                v = _num(rt.Importe)
                xa(f'<cfdi:Retencion Impuesto="{e}" Importe="{v}"/>')
                k += (n, v)
            xa("</cfdi:Retenciones>")
        if tir is not None:
            ka(tir)
        if imp.Traslados:
            xa("<cfdi:Traslados>")
            _tax_lines("Traslado", imp.Traslados, x, k)
            xa("</cfdi:Traslados>")
        if tit is not None:
            ka(tit)
        xa("</cfdi:Impuestos>")

    if pagos is not None:
        xa("<cfdi:Complemento>")
        _render_pagos(pagos, x, k)
        xa("</cfdi:Complemento>")
    xa("</cfdi:Comprobante>")

    head = "".join(x[:head_len])
    tail = "".join(x[head_len:])
    cadena = "||" + "|".join(k) + "||"
    return head, tail, cadena


def _render_pagos(pagos, x: list, k: list) -> None:
    xa = x.append
    A = _attrs_str
    xa('<pago20:Pagos Version="2.0">')
    k.append("2.0")
    t = pagos.Totales
    xa("<pago20:Totales")
    A(
        x,
        k,
        (
            ("TotalRetencionesIVA", t.TotalRetencionesIVA, False),
            ("TotalRetencionesISR", t.TotalRetencionesISR, False),
            ("TotalRetencionesIEPS", t.TotalRetencionesIEPS, False),
            ("TotalTrasladosBaseIVA16", t.TotalTrasladosBaseIVA16, False),
            ("TotalTrasladosImpuestoIVA16", t.TotalTrasladosImpuestoIVA16, False),
            ("TotalTrasladosBaseIVA8", t.TotalTrasladosBaseIVA8, False),
            ("TotalTrasladosImpuestoIVA8", t.TotalTrasladosImpuestoIVA8, False),
            ("TotalTrasladosBaseIVA0", t.TotalTrasladosBaseIVA0, False),
            ("TotalTrasladosImpuestoIVA0", t.TotalTrasladosImpuestoIVA0, False),
            ("TotalTrasladosBaseIVAExento", t.TotalTrasladosBaseIVAExento, False),
            ("MontoTotalPagos", t.MontoTotalPagos, True),
        ),
    )
    xa("/>")
    for p in pagos.Pago:
        xa("<pago20:Pago")
        A(
            x,
            k,
            (
                ("FechaPago", p.FechaPago, True),
                ("FormaDePagoP", p.FormaDePagoP, True),
                ("MonedaP", p.MonedaP, True),
                ("TipoCambioP", p.TipoCambioP, False),
                ("Monto", p.Monto, True),
                ("NumOperacion", p.NumOperacion, False),
                ("RfcEmisorCtaOrd", p.RfcEmisorCtaOrd, False),
                ("NomBancoOrdExt", p.NomBancoOrdExt, False),
                ("CtaOrdenante", p.CtaOrdenante, False),
                ("RfcEmisorCtaBen", p.RfcEmisorCtaBen, False),
                ("CtaBeneficiario", p.CtaBeneficiario, False),
                ("TipoCadPago", p.TipoCadPago, False),
                ("CertPago", p.CertPago, False),
                ("CadPago", p.CadPago, False),
                ("SelloPago", p.SelloPago, False),
            ),
        )
        xa(">")
        for d in p.DoctoRelacionado:
            xa("<pago20:DoctoRelacionado")
            A(
                x,
                k,
                (
                    ("IdDocumento", d.IdDocumento, True),
                    ("Serie", d.Serie, False),
                    ("Folio", d.Folio, False),
                    ("MonedaDR", d.MonedaDR, True),
                    ("EquivalenciaDR", d.EquivalenciaDR, False),
                    ("NumParcialidad", str(d.NumParcialidad), True),
                    ("ImpSaldoAnt", d.ImpSaldoAnt, True),
                    ("ImpPagado", d.ImpPagado, True),
                    ("ImpSaldoInsoluto", d.ImpSaldoInsoluto, True),
                    ("ObjetoImpDR", d.ObjetoImpDR, True),
                ),
            )
            if not (d.RetencionesDR or d.TrasladosDR):
                xa("/>")
                continue
            xa("><pago20:ImpuestosDR>")
            if d.RetencionesDR:
                xa("<pago20:RetencionesDR>")
                for r in d.RetencionesDR:
                    b, tasa, v = fmt_num(r.BaseDR), fmt_tasa(r.TasaOCuotaDR), fmt_num(r.ImporteDR)
                    xa(
                        f'<pago20:RetencionDR BaseDR="{b}" ImpuestoDR="{escape_attr(r.ImpuestoDR)}"'
                        f' TipoFactorDR="{r.TipoFactorDR}" TasaOCuotaDR="{tasa}" ImporteDR="{v}"/>'
                    )
                    k.extend((b, normalize_space(r.ImpuestoDR), r.TipoFactorDR, tasa, v))
                xa("</pago20:RetencionesDR>")
            if d.TrasladosDR:
                xa("<pago20:TrasladosDR>")
                for r in d.TrasladosDR:
                    b = fmt_num(r.BaseDR)
                    if r.TipoFactorDR == "Exento":
                        xa(f'<pago20:TrasladoDR BaseDR="{b}" ImpuestoDR="{escape_attr(r.ImpuestoDR)}" TipoFactorDR="Exento"/>')
                        k.extend((b, normalize_space(r.ImpuestoDR), "Exento"))
                    else:
                        tasa, v = fmt_tasa(r.TasaOCuotaDR), fmt_num(r.ImporteDR)
                        xa(
                            f'<pago20:TrasladoDR BaseDR="{b}" ImpuestoDR="{escape_attr(r.ImpuestoDR)}"'
                            f' TipoFactorDR="{r.TipoFactorDR}" TasaOCuotaDR="{tasa}" ImporteDR="{v}"/>'
                        )
                        k.extend((b, normalize_space(r.ImpuestoDR), r.TipoFactorDR, tasa, v))
                xa("</pago20:TrasladosDR>")
            xa("</pago20:ImpuestosDR></pago20:DoctoRelacionado>")
        ip = p.ImpuestosP
        if ip is not None and (ip.RetencionesP or ip.TrasladosP):
            xa("<pago20:ImpuestosP>")
            if ip.RetencionesP:
                xa("<pago20:RetencionesP>")
                for r in ip.RetencionesP:
                    v = fmt_num(r.ImporteP)
                    xa(f'<pago20:RetencionP ImpuestoP="{escape_attr(r.ImpuestoP)}" ImporteP="{v}"/>')
                    k.extend((normalize_space(r.ImpuestoP), v))
                xa("</pago20:RetencionesP>")
            if ip.TrasladosP:
                xa("<pago20:TrasladosP>")
                for r in ip.TrasladosP:
                    b = fmt_num(r.BaseP)
                    if r.TipoFactorP == "Exento" or r.ImporteP is None:
                        xa(f'<pago20:TrasladoP BaseP="{b}" ImpuestoP="{escape_attr(r.ImpuestoP)}" TipoFactorP="{r.TipoFactorP}"/>')
                        k.extend((b, normalize_space(r.ImpuestoP), r.TipoFactorP))
                    else:
                        tasa, v = fmt_tasa(r.TasaOCuotaP), fmt_num(r.ImporteP)
                        xa(
                            f'<pago20:TrasladoP BaseP="{b}" ImpuestoP="{escape_attr(r.ImpuestoP)}"'
                            f' TipoFactorP="{r.TipoFactorP}" TasaOCuotaP="{tasa}" ImporteP="{v}"/>'
                        )
                        k.extend((b, normalize_space(r.ImpuestoP), r.TipoFactorP, tasa, v))
                xa("</pago20:TrasladosP>")
            xa("</pago20:ImpuestosP>")
        xa("</pago20:Pago>")
    xa("</pago20:Pagos>")
