"""SAT's acuse de cancelación: the receipt SAT returns for a cancellation request, signed with an
enveloped XML signature (``Signature Id="SelloSAT"``) like SAT's own acuses.

The sandbox PAC builds and signs them; the cancellation service parses and verifies them before
storing them. Parsing goes through the hardened parser of the CFDI core.
"""

import base64
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from .csd import Csd, load_certificate, no_certificado
from .errors import CfdiError
from .xmlparse import parse_xml

NS_CANCELA = "http://cancelacfd.sat.gob.mx"
NS_DSIG = "http://www.w3.org/2000/09/xmldsig#"
NS_XSD = "http://www.w3.org/2001/XMLSchema"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


@dataclass(frozen=True)
class Acuse:
    fecha: str
    rfc_emisor: str
    folios: dict[str, str]  # UUID -> EstatusUUID
    no_certificado_sat: str | None
    xml: bytes


def _c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=False, with_comments=False)


def _dsig(tag: str) -> str:
    return f"{{{NS_DSIG}}}{tag}"


def build_acuse(rfc_emisor: str, folios: dict[str, str], fecha: str, signer: Csd) -> bytes:
    """An acuse for ``folios`` (UUID → EstatusUUID, e.g. ``201`` solicitud recibida, ``202``
    previamente cancelado), signed by ``signer`` (the sandbox's SAT certificate)."""
    root = etree.Element(f"{{{NS_CANCELA}}}Acuse", nsmap={None: NS_CANCELA, "xsd": NS_XSD, "xsi": NS_XSI})
    root.set("Fecha", fecha)
    root.set("RfcEmisor", rfc_emisor)
    for uuid, estatus in folios.items():
        node = etree.SubElement(root, f"{{{NS_CANCELA}}}Folios")
        etree.SubElement(node, f"{{{NS_CANCELA}}}UUID").text = uuid.upper()
        etree.SubElement(node, f"{{{NS_CANCELA}}}EstatusUUID").text = estatus
    digest = base64.b64encode(hashlib.sha256(_c14n(root)).digest()).decode()

    signature = etree.SubElement(root, _dsig("Signature"), nsmap={None: NS_DSIG})
    signature.set("Id", "SelloSAT")
    signed_info = etree.SubElement(signature, _dsig("SignedInfo"))
    etree.SubElement(signed_info, _dsig("CanonicalizationMethod")).set("Algorithm", C14N)
    etree.SubElement(signed_info, _dsig("SignatureMethod")).set("Algorithm", RSA_SHA256)
    reference = etree.SubElement(signed_info, _dsig("Reference"))
    reference.set("URI", "")
    transforms = etree.SubElement(reference, _dsig("Transforms"))
    etree.SubElement(transforms, _dsig("Transform")).set("Algorithm", ENVELOPED)
    etree.SubElement(reference, _dsig("DigestMethod")).set("Algorithm", SHA256)
    etree.SubElement(reference, _dsig("DigestValue")).text = digest
    etree.SubElement(signature, _dsig("SignatureValue")).text = signer.sign(_c14n(signed_info))
    key_info = etree.SubElement(signature, _dsig("KeyInfo"))
    x509_data = etree.SubElement(key_info, _dsig("X509Data"))
    etree.SubElement(x509_data, _dsig("X509Certificate")).text = signer.certificate_b64
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


class AcuseInvalid(CfdiError):
    def __init__(self, message: str) -> None:
        super().__init__("acuse_invalid", message)


def verify_acuse(xml: bytes, *, trusted: x509.Certificate | None = None) -> Acuse:
    """Parse an acuse and check its enveloped signature (and, with ``trusted``, that SAT's
    certificate signed it). Raises :class:`AcuseInvalid`."""
    try:
        root = parse_xml(xml)
    except CfdiError as exc:
        raise AcuseInvalid(f"El acuse no es XML válido: {exc.message}") from None
    if etree.QName(root).localname != "Acuse":
        raise AcuseInvalid("El documento no es un acuse de cancelación.")
    signature = root.find(_dsig("Signature"))
    if signature is None:
        raise AcuseInvalid("El acuse no está firmado.")
    try:
        signed_info = signature.find(_dsig("SignedInfo"))
        digest_value = signed_info.findtext(f"{_dsig('Reference')}/{_dsig('DigestValue')}")
        signature_value = base64.b64decode(signature.findtext(_dsig("SignatureValue")) or "")
        cert_b64 = signature.findtext(f"{_dsig('KeyInfo')}/{_dsig('X509Data')}/{_dsig('X509Certificate')}") or ""
        certificate = load_certificate(base64.b64decode(cert_b64))
    except Exception:
        raise AcuseInvalid("La firma del acuse está incompleta.") from None
    signed_info_c14n = _c14n(signed_info)
    parent = signature.getparent()
    index = parent.index(signature)
    parent.remove(signature)
    try:
        actual = base64.b64encode(hashlib.sha256(_c14n(root)).digest()).decode()
    finally:
        parent.insert(index, signature)
    if actual != digest_value:
        raise AcuseInvalid("El contenido del acuse fue alterado (el digest no coincide).")
    try:
        certificate.public_key().verify(signature_value, signed_info_c14n, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        raise AcuseInvalid("La firma del acuse no es válida.") from None
    if trusted is not None and certificate.public_bytes(Encoding.DER) != trusted.public_bytes(Encoding.DER):
        raise AcuseInvalid("El acuse no está firmado con el certificado del SAT.")
    folios = {}
    for node in root.iter(f"{{{NS_CANCELA}}}Folios"):
        folios[(node.findtext(f"{{{NS_CANCELA}}}UUID") or "").upper()] = node.findtext(f"{{{NS_CANCELA}}}EstatusUUID") or ""
    return Acuse(fecha=root.get("Fecha", ""), rfc_emisor=root.get("RfcEmisor", ""), folios=folios, no_certificado_sat=no_certificado(certificate), xml=xml)
