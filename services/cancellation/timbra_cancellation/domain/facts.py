"""What the cancellation rules need from a stamped CFDI that the pipeline's summary does not
carry: Total exactly as written (SAT's status query compares it), TipoCambio, Fecha and
LugarExpedicion, InformacionGlobal, and the UUIDs the CFDI relates to (CfdiRelacionados and the
DoctoRelacionado of a payment complement)."""

from typing import Any

from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.cfdi.xmlparse import NS_CFDI4, NS_PAGO20, parse_xml

NS = {"cfdi": NS_CFDI4, "pago20": NS_PAGO20}


def facts_of(xml: str | bytes) -> dict[str, Any]:
    try:
        root = parse_xml(xml)
    except CfdiError:
        return {}
    related = [
        {"tipo": group.get("TipoRelacion", ""), "uuid": (node.get("UUID") or "").upper()}
        for group in root.findall("cfdi:CfdiRelacionados", NS)
        for node in group.findall("cfdi:CfdiRelacionado", NS)
    ]
    related += [{"tipo": "pago", "uuid": (d.get("IdDocumento") or "").upper()} for d in root.iterfind(".//pago20:DoctoRelacionado", NS)]
    return {
        "total": root.get("Total"),
        "exchange": root.get("TipoCambio"),
        "fecha": root.get("Fecha"),
        "lugar": root.get("LugarExpedicion"),
        "global": root.find("cfdi:InformacionGlobal", NS) is not None,
        "related": related,
    }
