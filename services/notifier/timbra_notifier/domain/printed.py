"""The printed representation of a CFDI: what the PDF shows, read from the stamped XML."""

import base64
import io
from urllib.parse import quote
from decimal import Decimal
from typing import Any

import qrcode
import qrcode.image.svg

from timbra_notifier.domain.words import amount_in_words
from timbra_shared.cfdi import cadena_original, parse_xml

CFDI = "{http://www.sat.gob.mx/cfd/4}"
TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}"
TIPOS = {"I": "Factura", "E": "Nota de crédito", "T": "Traslado", "P": "Recibo de pago", "N": "Nómina"}
VERIFY_URL = "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"


def verification_url(uuid: str, rfc_emisor: str, rfc_receptor: str, total: str, sello: str) -> str:
    total_fmt = f"{Decimal(total):025.6f}"
    return f"{VERIFY_URL}?id={uuid}&re={quote(rfc_emisor)}&rr={quote(rfc_receptor)}&tt={total_fmt}&fe={sello[-8:]}"


def qr_data_uri(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=1)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def printed_context(xml: bytes, *, watermark: str | None = None) -> dict[str, Any]:
    root = parse_xml(xml)
    c = dict(root.attrib)
    emisor = dict(root.find(f"{CFDI}Emisor").attrib)
    receptor = dict(root.find(f"{CFDI}Receptor").attrib)
    conceptos = []
    for node in root.iterfind(f"{CFDI}Conceptos/{CFDI}Concepto"):
        item: dict[str, Any] = dict(node.attrib)
        item["impuestos"] = [
            f"{'Traslado' if t.tag.endswith('Traslado') else 'Retención'} {t.get('Impuesto')} {t.get('TipoFactor')} {t.get('TasaOCuota', '')} base {t.get('Base')} importe {t.get('Importe', 'exento')}"
            for t in node.iter(f"{CFDI}Traslado", f"{CFDI}Retencion")
        ]
        conceptos.append(item)
    impuestos_node = root.find(f"{CFDI}Impuestos")
    tfd_node = root.find(f"{CFDI}Complemento/{TFD}TimbreFiscalDigital")
    tfd = dict(tfd_node.attrib) if tfd_node is not None else {}
    qr = None
    if tfd.get("UUID"):
        qr = qr_data_uri(verification_url(tfd["UUID"], emisor["Rfc"], receptor["Rfc"], c["Total"], c.get("Sello", "")))
    return {
        "c": c,
        "emisor": emisor,
        "receptor": receptor,
        "conceptos": conceptos,
        "impuestos": dict(impuestos_node.attrib) if impuestos_node is not None else {},
        "tfd": tfd,
        "cadena_tfd": cadena_original(tfd_node) if tfd_node is not None else "",
        "qr": qr,
        "tipo_nombre": TIPOS.get(c.get("TipoDeComprobante", ""), "CFDI"),
        "total_letra": amount_in_words(Decimal(c["Total"]), c.get("Moneda", "MXN")),
        "watermark": watermark,
    }
