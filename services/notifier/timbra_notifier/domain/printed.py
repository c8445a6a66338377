"""The printed representation of a CFDI: what the PDF shows, read from the (stamped or draft) XML.

Pure: the XML in, a template context out. The seals and the TFD cadena original are split here
into fixed-width lines, so the layout engine never has to find break points in long base64 runs.
"""

import base64
import io
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import qrcode
import qrcode.constants
from PIL import Image

from timbra_notifier.domain.words import amount_in_words
from timbra_shared.cfdi import cadena_original, parse_xml

CFDI = "{http://www.sat.gob.mx/cfd/4}"
TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}"
PAGO20 = "{http://www.sat.gob.mx/Pagos20}"
TIPOS = {"I": "Factura", "E": "Nota de crédito", "T": "Traslado", "P": "Recibo de pago", "N": "Nómina"}
IMPUESTOS = {"001": "ISR", "002": "IVA", "003": "IEPS"}
VERIFY_URL = "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"
SEAL_LINE = 120  # characters per printed line of a seal (monospace, 6 pt, fits beside the QR)

CANCELADO = "CANCELADO"
SIN_VALIDEZ = "SIN VALIDEZ FISCAL"


def verification_url(uuid: str, rfc_emisor: str, rfc_receptor: str, total: str, sello: str) -> str:
    total_fmt = f"{Decimal(total):025.6f}"
    return f"{VERIFY_URL}?id={uuid}&re={quote(rfc_emisor)}&rr={quote(rfc_receptor)}&tt={total_fmt}&fe={sello[-8:]}"


def qr_png(text: str) -> bytes:
    """The QR as a 1-bit PNG, one pixel per module (the PDF scales it without interpolation).

    The mask pattern is fixed: any of the eight masks gives a valid code, and scoring all eight
    (qrcode's default) triples the cost of the QR."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2, mask_pattern=2)
    qr.add_data(text)
    qr.make(fit=True)
    matrix = qr.get_matrix()
    size = len(matrix)
    image = Image.frombytes("L", (size, size), bytes(0 if dark else 255 for row in matrix for dark in row)).convert("1")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def seal_lines(text: str, width: int = SEAL_LINE) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)]


def _describe(catalog: str, code: str | None) -> str:
    if not code:
        return ""
    try:
        from timbra_shared.cfdi import catalogs

        name = catalogs.describe(catalog, code)
    except Exception:  # the catalog database is optional for printing
        name = None
    return f"{code} - {name}" if name else code


def _tax(node: Any, suffix: str = "") -> dict[str, str]:
    """One Traslado/Retencion node, concept-level (suffix "") or payment-level ("DR"/"P")."""
    factor = node.get(f"TipoFactor{suffix}", "")
    return {
        "tipo": "Traslado" if "Traslado" in node.tag else "Retención",
        "impuesto": IMPUESTOS.get(node.get(f"Impuesto{suffix}", ""), node.get(f"Impuesto{suffix}", "")),
        "factor": factor,
        "tasa": node.get(f"TasaOCuota{suffix}", ""),
        "base": node.get(f"Base{suffix}", ""),
        "importe": node.get(f"Importe{suffix}", "Exento" if factor == "Exento" else ""),
    }


def _pagos(root: Any) -> dict[str, Any] | None:
    pagos = root.find(f"{CFDI}Complemento/{PAGO20}Pagos")
    if pagos is None:
        return None
    totales = pagos.find(f"{PAGO20}Totales")
    items = []
    for pago in pagos.iterfind(f"{PAGO20}Pago"):
        item: dict[str, Any] = dict(pago.attrib)
        item["forma"] = _describe("c_FormaPago", pago.get("FormaDePagoP"))
        item["doctos"] = []
        for docto in pago.iterfind(f"{PAGO20}DoctoRelacionado"):
            d: dict[str, Any] = dict(docto.attrib)
            d["impuestos"] = [_tax(t, "DR") for t in docto.iter(f"{PAGO20}TrasladoDR", f"{PAGO20}RetencionDR")]
            item["doctos"].append(d)
        item["impuestos"] = [_tax(t, "P") for t in pago.iter(f"{PAGO20}TrasladoP", f"{PAGO20}RetencionP")]
        items.append(item)
    return {"totales": dict(totales.attrib) if totales is not None else {}, "pagos": items}


def partidas_table(conceptos: list[dict[str, Any]], partidas: list[dict[str, str]]) -> str:
    """The tax breakdown per concept line (seed 000, step 14) as fixed-width text: one line per tax,
    referenced by the concept's consecutive number; a concept without taxes says why."""
    header = f"{'Partida':>7}  {'Tipo':<9} {'Impuesto':<8} {'Factor':<6} {'Tasa o cuota':>12} {'Base':>18} {'Importe':>18}"
    lines = [header]
    by_line: dict[int, list[dict[str, str]]] = {}
    for t in partidas:
        by_line.setdefault(t["n"], []).append(t)  # type: ignore[arg-type]
    for k in conceptos:
        taxes = by_line.get(k["n"], [])
        if not taxes:
            lines.append(f"{k['n']:>7}  {_describe('c_ObjetoImp', k.get('ObjetoImp', '01'))}")
        for t in taxes:
            lines.append(f"{k['n']:>7}  {t['tipo']:<9} {t['impuesto']:<8} {t['factor']:<6} {t['tasa']:>12} {t['base']:>18} {t['importe']:>18}")
    return "\n".join(lines) if partidas or conceptos else ""


def printed_context(
    xml: bytes,
    *,
    watermark: str | None = None,
    notes: str | None = None,
    logo: str | None = None,
    logo_placement: str | None = None,
    issuer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The template context of one CFDI. ``watermark``: CANCELADO or SIN VALIDEZ FISCAL;
    ``logo``: a data URI; ``issuer``: the projected profile (addresses, phone, email)."""
    root = parse_xml(xml)
    c = dict(root.attrib)
    emisor = dict(root.find(f"{CFDI}Emisor").attrib)
    receptor = dict(root.find(f"{CFDI}Receptor").attrib)
    conceptos = []
    partidas = []
    for n, node in enumerate(root.iterfind(f"{CFDI}Conceptos/{CFDI}Concepto"), start=1):
        item: dict[str, Any] = dict(node.attrib)
        item["n"] = n
        taxes = [_tax(t) for t in node.iter(f"{CFDI}Traslado", f"{CFDI}Retencion")]
        item["impuestos"] = [
            f"{t['tipo']} {t['impuesto']} {t['factor']} {t['tasa']} base {t['base']} importe {t['importe'] or 'exento'}".replace("  ", " ")
            for t in taxes
        ]
        partidas.extend({"n": n, **t} for t in taxes)
        conceptos.append(item)
    impuestos_node = root.find(f"{CFDI}Impuestos")
    impuestos: dict[str, Any] = dict(impuestos_node.attrib) if impuestos_node is not None else {}
    resumen = []
    if impuestos_node is not None:
        for t in impuestos_node.iterfind(f"{CFDI}Traslados/{CFDI}Traslado"):
            resumen.append(_tax(t))
        for t in impuestos_node.iterfind(f"{CFDI}Retenciones/{CFDI}Retencion"):
            resumen.append(_tax(t))
    relacionados = [
        {"tipo": _describe("c_TipoRelacion", node.get("TipoRelacion")), "uuids": [u.get("UUID") for u in node.iterfind(f"{CFDI}CfdiRelacionado")]}
        for node in root.iterfind(f"{CFDI}CfdiRelacionados")
    ]
    global_node = root.find(f"{CFDI}InformacionGlobal")
    tfd_node = root.find(f"{CFDI}Complemento/{TFD}TimbreFiscalDigital")
    tfd = dict(tfd_node.attrib) if tfd_node is not None else {}
    qr = url = None
    if tfd.get("UUID"):
        url = verification_url(tfd["UUID"], emisor["Rfc"], receptor["Rfc"], c["Total"], c.get("Sello", ""))
        qr = data_uri(qr_png(url), "image/png")
    cadena_tfd = cadena_original(tfd_node) if tfd_node is not None else ""
    pagos = _pagos(root)
    moneda = c.get("Moneda", "MXN")
    words_amount = Decimal(c["Total"])
    if pagos and pagos["totales"].get("MontoTotalPagos"):
        words_amount = Decimal(pagos["totales"]["MontoTotalPagos"])
        moneda = "MXN"
    return {
        "c": c,
        "emisor": emisor,
        "receptor": receptor,
        "conceptos": conceptos,
        "partidas": partidas,
        "partidas_text": partidas_table(conceptos, partidas) if conceptos else "",
        "impuestos": impuestos,
        "impuestos_resumen": resumen,
        "relacionados": relacionados,
        "informacion_global": dict(global_node.attrib) if global_node is not None else None,
        "pagos": pagos,
        "tfd": tfd,
        "cadena_tfd": cadena_tfd,
        "seal_block": [
            "Sello digital del CFDI:", *seal_lines(c.get("Sello", "")),
            "Sello digital del SAT:", *seal_lines(tfd.get("SelloSAT", "")),
            "Cadena original del complemento de certificación digital del SAT:", *seal_lines(cadena_tfd),
        ],
        "qr": qr,
        "verification_url": url,
        "tipo_nombre": TIPOS.get(c.get("TipoDeComprobante", ""), "CFDI"),
        "total_letra": amount_in_words(words_amount, moneda),
        "labels": {
            "regimen_emisor": _describe("c_RegimenFiscal", emisor.get("RegimenFiscal")),
            "regimen_receptor": _describe("c_RegimenFiscal", receptor.get("RegimenFiscalReceptor")),
            "uso": _describe("c_UsoCFDI", receptor.get("UsoCFDI")),
            "forma_pago": _describe("c_FormaPago", c.get("FormaPago")),
            "metodo_pago": _describe("c_MetodoPago", c.get("MetodoPago")),
            "exportacion": _describe("c_Exportacion", c.get("Exportacion")),
        },
        "watermark": watermark,
        "notes": notes,
        "logo": logo,
        "logo_placement": logo_placement or "left",
        "issuer": issuer or {},
    }
