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
_WS_NEEDS = re.compile(r"[\t\n\r]|  |^ | $")
_WS_RUN = re.compile(r"[ \t\n\r]+")


def normalize_space(s: str) -> str:
    """XPath 1.0 normalize-space(): only #x20 #x9 #xD #xA count as whitespace."""
    if _WS_NEEDS.search(s) is None:
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


def _attrs_str(x: list, k: list, items) -> None:
    """items: iterable of (name, value, required). Strings get escaped/normalised."""
    for name, value, required in items:
        if value is None or value == "":
            if required:
                x.append(f' {name}=""')
                k.append("")
            continue
        if type(value) is not str:
            value = fmt_num(value)
            x.append(f' {name}="{value}"')
            k.append(value)
        else:
            x.append(f' {name}="{escape_attr(value)}"')
            k.append(normalize_space(value))


def render(c: Comprobante) -> tuple[str, str, str]:
    """Return ``(xml_head, xml_tail, cadena)``; the document is ``head + Sello + tail``.

    ``c`` must have been through :func:`build` (amounts are Decimals).
    """
    if c.SubTotal is None or c.Total is None:
        raise BuildError("not_built", "El comprobante no se ha calculado: llame a build() primero")
    x: list[str] = []
    k: list[str] = []
    xa = x.append
    A = _attrs_str
    pagos = c.Pagos
    if pagos is not None:
        xa(
            '<?xml version="1.0" encoding="UTF-8"?>\n<cfdi:Comprobante'
            f' xmlns:cfdi="{NS_CFDI}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
            f' xmlns:pago20="{NS_PAGO20}" xsi:schemaLocation="{NS_CFDI} {XSD_CFDI} {NS_PAGO20} {XSD_PAGO20}"'
        )
    else:
        xa(
            '<?xml version="1.0" encoding="UTF-8"?>\n<cfdi:Comprobante'
            f' xmlns:cfdi="{NS_CFDI}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
            f' xsi:schemaLocation="{NS_CFDI} {XSD_CFDI}"'
        )
    A(
        x,
        k,
        (
            ("Version", "4.0", True),
            ("Serie", c.Serie, False),
            ("Folio", c.Folio, False),
            ("Fecha", c.Fecha, True),
            ("FormaPago", c.FormaPago, False),
            ("NoCertificado", c.NoCertificado, True),
            ("CondicionesDePago", c.CondicionesDePago, False),
            ("SubTotal", c.SubTotal, True),
            ("Descuento", c.Descuento, False),
            ("Moneda", c.Moneda, True),
            ("TipoCambio", c.TipoCambio, False),
            ("Total", c.Total, True),
            ("TipoDeComprobante", c.TipoDeComprobante, True),
            ("Exportacion", c.Exportacion, True),
            ("MetodoPago", c.MetodoPago, False),
            ("LugarExpedicion", c.LugarExpedicion, True),
            ("Confirmacion", c.Confirmacion, False),
        ),
    )
    xa(f' Certificado="{escape_attr(c.Certificado or "")}" Sello="')
    head_len = len(x)
    xa('">')

    ig = c.InformacionGlobal
    if ig is not None:
        xa("<cfdi:InformacionGlobal")
        A(x, k, (("Periodicidad", ig.Periodicidad, True), ("Meses", ig.Meses, True), ("Año", str(ig.Año), True)))
        xa("/>")
    for rel in c.CfdiRelacionados:
        xa("<cfdi:CfdiRelacionados")
        A(x, k, (("TipoRelacion", rel.TipoRelacion, True),))
        xa(">")
        for u in rel.UUIDs:
            xa("<cfdi:CfdiRelacionado")
            A(x, k, (("UUID", u, True),))
            xa("/>")
        xa("</cfdi:CfdiRelacionados>")
    e = c.Emisor
    xa("<cfdi:Emisor")
    A(x, k, (("Rfc", e.Rfc, True), ("Nombre", e.Nombre, True), ("RegimenFiscal", e.RegimenFiscal, True),
             ("FacAtrAdquirente", e.FacAtrAdquirente, False)))
    xa("/>")
    r = c.Receptor
    xa("<cfdi:Receptor")
    A(
        x,
        k,
        (
            ("Rfc", r.Rfc, True),
            ("Nombre", r.Nombre, True),
            ("DomicilioFiscalReceptor", r.DomicilioFiscalReceptor, True),
            ("ResidenciaFiscal", r.ResidenciaFiscal, False),
            ("NumRegIdTrib", r.NumRegIdTrib, False),
            ("RegimenFiscalReceptor", r.RegimenFiscalReceptor, True),
            ("UsoCFDI", r.UsoCFDI, True),
        ),
    )
    xa("/><cfdi:Conceptos>")
    for cp in c.Conceptos:
        xa("<cfdi:Concepto")
        A(
            x,
            k,
            (
                ("ClaveProdServ", cp.ClaveProdServ, True),
                ("NoIdentificacion", cp.NoIdentificacion, False),
                ("Cantidad", cp.Cantidad, True),
                ("ClaveUnidad", cp.ClaveUnidad, True),
                ("Unidad", cp.Unidad, False),
                ("Descripcion", cp.Descripcion, True),
                ("ValorUnitario", cp.ValorUnitario, True),
                ("Importe", cp.Importe, True),
                ("Descuento", cp.Descuento, False),
                ("ObjetoImp", cp.ObjetoImp, True),
            ),
        )
        tras = cp.Traslados
        rets = cp.Retenciones
        terceros = cp.ACuentaTerceros
        if not (tras or rets or terceros or cp.InformacionAduanera or cp.CuentaPredial):
            xa("/>")
            continue
        xa(">")
        if tras or rets:
            xa("<cfdi:Impuestos>")
            if tras:
                xa("<cfdi:Traslados>")
                for t in tras:
                    if t.TipoFactor == "Exento":
                        xa(f'<cfdi:Traslado Base="{t.Base}" Impuesto="{escape_attr(t.Impuesto)}" TipoFactor="Exento"/>')
                        k.extend((fmt_num(t.Base), normalize_space(t.Impuesto), "Exento"))
                    else:
                        b, tasa, imp = fmt_num(t.Base), fmt_tasa(t.TasaOCuota), fmt_num(t.Importe)
                        xa(
                            f'<cfdi:Traslado Base="{b}" Impuesto="{escape_attr(t.Impuesto)}"'
                            f' TipoFactor="{t.TipoFactor}" TasaOCuota="{tasa}" Importe="{imp}"/>'
                        )
                        k.extend((b, normalize_space(t.Impuesto), t.TipoFactor, tasa, imp))
                xa("</cfdi:Traslados>")
            if rets:
                xa("<cfdi:Retenciones>")
                for t in rets:
                    b, tasa, imp = fmt_num(t.Base), fmt_tasa(t.TasaOCuota), fmt_num(t.Importe)
                    xa(
                        f'<cfdi:Retencion Base="{b}" Impuesto="{escape_attr(t.Impuesto)}"'
                        f' TipoFactor="{t.TipoFactor}" TasaOCuota="{tasa}" Importe="{imp}"/>'
                    )
                    k.extend((b, normalize_space(t.Impuesto), t.TipoFactor, tasa, imp))
                xa("</cfdi:Retenciones>")
            xa("</cfdi:Impuestos>")
        if terceros is not None:
            xa("<cfdi:ACuentaTerceros")
            A(
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
            xa("<cfdi:InformacionAduanera")
            A(x, k, (("NumeroPedimento", ped, True),))
            xa("/>")
        for num in cp.CuentaPredial:
            xa("<cfdi:CuentaPredial")
            A(x, k, (("Numero", num, True),))
            xa("/>")
        xa("</cfdi:Concepto>")
    xa("</cfdi:Conceptos>")

    imp = c.Impuestos
    if imp is not None:
        xa("<cfdi:Impuestos")
        if imp.TotalImpuestosRetenidos is not None:
            xa(f' TotalImpuestosRetenidos="{fmt_num(imp.TotalImpuestosRetenidos)}"')
        if imp.TotalImpuestosTrasladados is not None:
            xa(f' TotalImpuestosTrasladados="{fmt_num(imp.TotalImpuestosTrasladados)}"')
        xa(">")
        if imp.Retenciones:
            xa("<cfdi:Retenciones>")
            for rt in imp.Retenciones:
                v = fmt_num(rt.Importe)
                xa(f'<cfdi:Retencion Impuesto="{escape_attr(rt.Impuesto)}" Importe="{v}"/>')
                k.extend((normalize_space(rt.Impuesto), v))
            xa("</cfdi:Retenciones>")
        if imp.TotalImpuestosRetenidos is not None:
            k.append(fmt_num(imp.TotalImpuestosRetenidos))
        if imp.Traslados:
            xa("<cfdi:Traslados>")
            for t in imp.Traslados:
                if t.TipoFactor == "Exento" or t.Importe is None:
                    b = fmt_num(t.Base)
                    xa(f'<cfdi:Traslado Base="{b}" Impuesto="{escape_attr(t.Impuesto)}" TipoFactor="{t.TipoFactor}"/>')
                    k.extend((b, normalize_space(t.Impuesto), t.TipoFactor))
                else:
                    b, tasa, v = fmt_num(t.Base), fmt_tasa(t.TasaOCuota), fmt_num(t.Importe)
                    xa(
                        f'<cfdi:Traslado Base="{b}" Impuesto="{escape_attr(t.Impuesto)}"'
                        f' TipoFactor="{t.TipoFactor}" TasaOCuota="{tasa}" Importe="{v}"/>'
                    )
                    k.extend((b, normalize_space(t.Impuesto), t.TipoFactor, tasa, v))
            xa("</cfdi:Traslados>")
        if imp.TotalImpuestosTrasladados is not None:
            k.append(fmt_num(imp.TotalImpuestosTrasladados))
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
