"""CSD (Certificado de Sello Digital) loading and signing."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_private_key, load_pem_private_key
from cryptography.x509.oid import NameOID

from .errors import CsdError

__all__ = ["Csd", "EmbeddedCertificate", "embedded_certificate", "load_csd", "load_certificate", "no_certificado", "rfc_from_certificate", "is_fiel"]

_OID_UNIQUE_ID = x509.ObjectIdentifier("2.5.4.45")  # x500UniqueIdentifier
_PADDING = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def no_certificado(cert: x509.Certificate) -> str:
    """NoCertificado: SAT serials are the ASCII codes of the 20 digits."""
    serial = cert.serial_number
    raw = serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if text.isdigit():
        return text
    return format(serial, "x")  # not SAT-shaped; validation will flag it


def rfc_from_certificate(cert: x509.Certificate) -> str | None:
    """RFC from x500UniqueIdentifier ("RFC" or "RFC / RFC-representante")."""
    attrs = cert.subject.get_attributes_for_oid(_OID_UNIQUE_ID)
    if not attrs:
        return None
    value = attrs[0].value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.split("/")[0].strip().upper() or None


def _legal_name(cert: x509.Certificate) -> str:
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        attrs = cert.subject.get_attributes_for_oid(oid)
        if attrs:
            v = attrs[0].value
            return v.decode() if isinstance(v, bytes) else v
    return ""


def is_fiel(cert: x509.Certificate) -> bool:
    """A FIEL (e.firma) adds dataEncipherment and keyAgreement to keyUsage."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(ku.data_encipherment or ku.key_agreement)


def load_certificate(cer: bytes) -> x509.Certificate:
    """Load a DER (or PEM / bare base64) certificate; raises CsdError(invalid_certificate)."""
    if isinstance(cer, str):
        cer = cer.encode("ascii", "ignore")
    try:
        return x509.load_der_x509_certificate(cer)
    except (ValueError, TypeError):
        pass
    try:
        if b"-----BEGIN" in cer:
            return x509.load_pem_x509_certificate(cer)
        return x509.load_der_x509_certificate(base64.b64decode(cer, validate=False))
    except Exception:
        raise CsdError(CsdError.INVALID_CERTIFICATE, "El archivo .cer no es un certificado X.509 válido") from None


@dataclass(frozen=True, slots=True)
class EmbeddedCertificate:
    """What a CFDI's ``Certificado`` attribute says, read once per distinct certificate."""

    certificate: x509.Certificate
    no_certificado: str
    rfc: str | None
    is_fiel: bool
    public_key: object


@functools.lru_cache(maxsize=1024)
def embedded_certificate(cert_b64: str) -> EmbeddedCertificate:
    """The certificate of a ``Certificado`` attribute (strict base64 of the DER). An issuer seals
    every CFDI with the same one, so checking a CFDI no longer parses it again. Raises on bad
    base64 or DER (nothing is cached then)."""
    cert = load_certificate(base64.b64decode(cert_b64, validate=True))
    return EmbeddedCertificate(cert, no_certificado(cert), rfc_from_certificate(cert), is_fiel(cert), cert.public_key())


@dataclass(eq=False)
class Csd:
    """A loaded CSD. Everything the hot path needs is precomputed once."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey = field(repr=False)
    serial: str  # NoCertificado (20 digits)
    rfc: str | None
    legal_name: str
    valid_from: datetime
    valid_to: datetime
    certificate_b64: str = field(repr=False)

    def sign(self, data: bytes) -> str:
        """SHA256withRSA (PKCS#1 v1.5) signature, base64."""
        return base64.b64encode(self.private_key.sign(data, _PADDING, _SHA256)).decode("ascii")

    def verify(self, data: bytes, signature_b64: str) -> bool:
        try:
            self.certificate.public_key().verify(base64.b64decode(signature_b64), data, _PADDING, _SHA256)
            return True
        except (InvalidSignature, ValueError):
            return False

    @property
    def is_fiel(self) -> bool:
        return is_fiel(self.certificate)


def _is_encrypted_pkcs8(key: bytes) -> bool:
    try:
        load_der_private_key(key, None)
    except TypeError:
        return True
    except Exception:
        return False
    return False


def _load_key(key: bytes, password: bytes):
    try:
        return load_der_private_key(key, password)
    except ValueError as exc:
        msg = str(exc).lower()
        # A wrong password now and then decrypts to valid padding (about 1 in 200) and
        # then fails as ASN.1: an encrypted key that does not open is still the password.
        if "password" in msg or "decrypt" in msg or _is_encrypted_pkcs8(key):
            raise CsdError(CsdError.WRONG_PASSWORD, "La contraseña de la llave privada (.key) es incorrecta") from None
        der_error = exc
    except TypeError:
        # Key not encrypted although a password was given: accept it as-is.
        try:
            return load_der_private_key(key, None)
        except Exception:
            raise CsdError(CsdError.INVALID_KEY, "El archivo .key no es una llave privada válida") from None
    except UnsupportedAlgorithm:
        raise CsdError(CsdError.INVALID_KEY, "La llave privada usa un algoritmo no soportado") from None
    if b"-----BEGIN" in key:
        try:
            return load_pem_private_key(key, password)
        except ValueError as exc:
            if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
                raise CsdError(CsdError.WRONG_PASSWORD, "La contraseña de la llave privada (.key) es incorrecta") from None
        except Exception:
            pass
    raise CsdError(CsdError.INVALID_KEY, f"El archivo .key no es una llave privada PKCS#8 válida ({der_error})")


def load_csd(
    cer: bytes,
    key: bytes,
    password: str | bytes,
    *,
    rfc: str | None = None,
    at: datetime | None = None,
) -> Csd:
    """Load and check a CSD (.cer DER + .key PKCS#8 DER encrypted).

    Raises :class:`CsdError` with one of the codes ``invalid_certificate``,
    ``invalid_key``, ``wrong_password``, ``key_mismatch``, ``fiel_not_csd``,
    ``rfc_mismatch``, ``not_yet_valid``, ``expired``.
    """
    cert = load_certificate(cer)
    if isinstance(password, str):
        password = password.encode("utf-8")
    pk = _load_key(bytes(key), password)
    if not isinstance(pk, rsa.RSAPrivateKey):
        raise CsdError(CsdError.INVALID_KEY, "La llave privada no es RSA")
    pub = cert.public_key()
    if not isinstance(pub, rsa.RSAPublicKey) or pub.public_numbers() != pk.public_key().public_numbers():
        raise CsdError(CsdError.KEY_MISMATCH, "La llave privada (.key) no corresponde al certificado (.cer)")
    if is_fiel(cert):
        raise CsdError(
            CsdError.FIEL_NOT_CSD,
            "El certificado es una e.firma (FIEL), no un Certificado de Sello Digital (CSD); "
            "para facturar se requiere el CSD",
        )
    cert_rfc = rfc_from_certificate(cert)
    if rfc is not None and (cert_rfc or "") != rfc.strip().upper():
        raise CsdError(
            CsdError.RFC_MISMATCH,
            f"El certificado pertenece al RFC {cert_rfc}, no al RFC del emisor {rfc.strip().upper()}",
        )
    now = at or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < nb:
        raise CsdError(CsdError.NOT_YET_VALID, f"El certificado aún no es válido: su vigencia inicia el {nb:%Y-%m-%d %H:%M} UTC")
    if now > na:
        raise CsdError(CsdError.EXPIRED, f"El certificado expiró el {na:%Y-%m-%d %H:%M} UTC")
    return Csd(
        certificate=cert,
        private_key=pk,
        serial=no_certificado(cert),
        rfc=cert_rfc,
        legal_name=_legal_name(cert),
        valid_from=nb,
        valid_to=na,
        certificate_b64=base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii"),
    )
