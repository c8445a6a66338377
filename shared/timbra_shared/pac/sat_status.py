"""SAT's CFDI status service (``ConsultaCFDIService.svc``, SOAP 1.1, operation ``Consulta``).

Request: ``expresionImpresa`` = ``?re=<RFC emisor>&rr=<RFC receptor>&tt=<Total>&id=<UUID>``.
Answer (``ConsultaResult``): ``CodigoEstatus``, ``Estado``, ``EsCancelable``,
``EstatusCancelacion``, ``ValidacionEFOS``. SW's test environment and the sandbox PAC serve the
same contract, so one client does for all of them.
"""

from xml.sax.saxutils import escape

import httpx
from lxml import etree

from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.cfdi.xmlparse import parse_xml
from timbra_shared.pac.port import PacUnavailable, SatStatus

SAT_URL = "https://consultaqr.facturaelectronica.sat.gob.mx/ConsultaCFDIService.svc"
SOAP_ACTION = "http://tempuri.org/IConsultaCFDIService/Consulta"
NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_TEMPURI = "http://tempuri.org/"
NS_RESULT = "http://schemas.datacontract.org/2004/07/Sat.Cfdi.Negocio.ConsultaCfdi.Servicio"
FIELDS = ("CodigoEstatus", "EsCancelable", "Estado", "EstatusCancelacion", "ValidacionEFOS")


def expresion_impresa(rfc_emisor: str, rfc_receptor: str, total: str, uuid: str) -> str:
    return f"?re={rfc_emisor}&rr={rfc_receptor}&tt={total}&id={uuid}"


def request_envelope(expresion: str) -> bytes:
    return (
        f'<soapenv:Envelope xmlns:soapenv="{NS_SOAP}" xmlns:tem="{NS_TEMPURI}"><soapenv:Header/><soapenv:Body>'
        f"<tem:Consulta><tem:expresionImpresa>{escape(expresion)}</tem:expresionImpresa></tem:Consulta>"
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()


def response_envelope(values: dict[str, str]) -> bytes:
    """What the service answers (used by the sandbox PAC)."""
    inner = "".join(f"<a:{name}>{escape(values.get(name, ''))}</a:{name}>" for name in FIELDS)
    return (
        f'<s:Envelope xmlns:s="{NS_SOAP}"><s:Body><ConsultaResponse xmlns="{NS_TEMPURI}">'
        f'<ConsultaResult xmlns:a="{NS_RESULT}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{inner}</ConsultaResult>'
        "</ConsultaResponse></s:Body></s:Envelope>"
    ).encode()


def parse_request(body: bytes) -> str | None:
    """The ``expresionImpresa`` of a Consulta request, or None."""
    try:
        root = parse_xml(body)
    except CfdiError:
        return None
    for node in root.iter():
        if isinstance(node.tag, str) and etree.QName(node).localname == "expresionImpresa":
            return node.text or ""
    return None


def parse_response(body: bytes) -> SatStatus:
    try:
        root = parse_xml(body)
    except CfdiError as exc:
        raise PacUnavailable(f"respuesta inválida del servicio de consulta del SAT: {exc.message}") from None
    values: dict[str, str] = {}
    result = None
    for node in root.iter():
        if isinstance(node.tag, str) and etree.QName(node).localname == "ConsultaResult":
            result = node
            break
    if result is None:
        raise PacUnavailable("el servicio de consulta del SAT no devolvió ConsultaResult")
    for child in result:
        if isinstance(child.tag, str):
            values[etree.QName(child).localname] = (child.text or "").strip()
    return SatStatus(
        codigo_estatus=values.get("CodigoEstatus", ""),
        estado=values.get("Estado", ""),
        es_cancelable=values.get("EsCancelable", ""),
        estatus_cancelacion=values.get("EstatusCancelacion", ""),
        validacion_efos=values.get("ValidacionEFOS", ""),
    )


async def consulta(client: httpx.AsyncClient, url: str, *, rfc_emisor: str, rfc_receptor: str, total: str, uuid: str) -> SatStatus:
    try:
        response = await client.post(url, content=request_envelope(expresion_impresa(rfc_emisor, rfc_receptor, total, uuid)),
                                     headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": SOAP_ACTION})
    except httpx.HTTPError as exc:
        raise PacUnavailable(f"servicio de consulta del SAT no disponible: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise PacUnavailable(f"servicio de consulta del SAT respondió {response.status_code}")
    return parse_response(response.content)
