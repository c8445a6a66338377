"""Sealing (SHA256withRSA over the cadena original) and verification."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from .build import build
from .cadena import cadena_original
from .csd import Csd, embedded_certificate
from .errors import CfdiError, CsdError
from .models import Comprobante
from .render import render
from .xmlparse import as_element, ensure_cfdi40

__all__ = ["seal", "seal_xml", "to_xml", "verify", "VerifyResult", "cadena_of_model"]


def to_xml(comprobante: Comprobante) -> bytes:
    """CFDI 4.0 XML (UTF-8) of a built comprobante (builds it first if needed)."""
    c = comprobante if comprobante.SubTotal is not None else build(comprobante)
    head, tail, _ = render(c)
    return (head + (c.Sello or "") + tail).encode("utf-8")


def cadena_of_model(comprobante: Comprobante) -> str:
    """Cadena original computed straight from a built model (no XML parsing)."""
    return render(comprobante)[2]


def _check_rfc(emisor_rfc: str | None, csd: Csd) -> None:
    if csd.rfc and emisor_rfc and emisor_rfc.strip().upper() != csd.rfc:
        raise CsdError(
            CsdError.RFC_MISMATCH,
            f"El CSD pertenece al RFC {csd.rfc}, pero el Emisor del comprobante es {emisor_rfc.strip()}",
        )


def seal(comprobante: Comprobante, csd: Csd, *, check_rfc: bool = True) -> bytes:
    """Fast path: seal a (built) model and return the sealed XML bytes.

    Sets ``NoCertificado``, ``Certificado`` and ``Sello`` on the model (builds it
    first when its totals are missing, in which case the built copy is sealed).
    The cadena is computed from the model itself, never by XSLT.
    """
    c = comprobante if comprobante.SubTotal is not None else build(comprobante)
    if check_rfc:
        _check_rfc(c.Emisor.Rfc, csd)
    c.NoCertificado = csd.serial
    c.Certificado = csd.certificate_b64
    head, tail, cadena = render(c)
    sello = csd.sign(cadena.encode("utf-8"))
    c.Sello = sello
    return (head + sello + tail).encode("utf-8")


def seal_xml(xml: bytes, csd: Csd, *, check_rfc: bool = True) -> bytes:
    """Seal an existing CFDI 4.0 XML: set NoCertificado and Certificado, compute
    the cadena by walking the parsed tree, sign it and set Sello."""
    root = as_element(xml)
    ensure_cfdi40(root)
    if check_rfc:
        emisor = root.find("{http://www.sat.gob.mx/cfd/4}Emisor")
        _check_rfc(emisor.get("Rfc") if emisor is not None else None, csd)
    root.set("NoCertificado", csd.serial)
    root.set("Certificado", csd.certificate_b64)
    cadena = cadena_original(root)
    root.set("Sello", csd.sign(cadena.encode("utf-8")))
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    valid: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.valid


def verify(xml: bytes) -> VerifyResult:
    """Check ``Sello`` against the cadena and the embedded ``Certificado``."""
    try:
        root = as_element(xml)
        ensure_cfdi40(root)
    except CfdiError as exc:
        return VerifyResult(False, exc.message)
    sello = (root.get("Sello") or "").strip()
    cert_b64 = (root.get("Certificado") or "").strip()
    if not sello:
        return VerifyResult(False, "el comprobante no tiene Sello")
    if not cert_b64:
        return VerifyResult(False, "el comprobante no tiene Certificado")
    try:
        embedded = embedded_certificate(cert_b64)
    except Exception:
        return VerifyResult(False, "el atributo Certificado no contiene un certificado válido (CFDI40106)")
    serial = embedded.no_certificado
    if (root.get("NoCertificado") or "") != serial:
        return VerifyResult(
            False, f"NoCertificado {root.get('NoCertificado')!r} no corresponde al certificado ({serial})"
        )
    try:
        signature = base64.b64decode(sello, validate=True)
    except Exception:
        return VerifyResult(False, "el Sello no es base64 válido (CFDI40102)")
    pub = embedded.public_key
    if not isinstance(pub, rsa.RSAPublicKey):
        return VerifyResult(False, "el certificado no tiene una llave RSA (CFDI40106)")
    try:
        cadena = cadena_original(root)
    except CfdiError as exc:
        return VerifyResult(False, exc.message)
    try:
        pub.verify(signature, cadena.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return VerifyResult(
            False, "el Sello no corresponde a la cadena original con el certificado incluido (CFDI40102)"
        )
    return VerifyResult(True, None)
