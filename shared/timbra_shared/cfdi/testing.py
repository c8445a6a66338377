"""Test helpers: SAT-shaped certificates generated with ``cryptography``.

Keys are generated once per (RFC, CSD/FIEL) and cached at module level, since
RSA-2048 key generation is slow.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, PrivateFormat
from cryptography.x509.oid import NameOID

__all__ = ["make_csd", "sat_serial"]

_OID_UNIQUE_ID = x509.ObjectIdentifier("2.5.4.45")
_OID_NAME = x509.ObjectIdentifier("2.5.4.41")

_lock = threading.Lock()
_keys: dict[tuple, rsa.RSAPrivateKey] = {}
_results: dict[tuple, tuple[bytes, bytes]] = {}
_t0 = datetime.now(timezone.utc).replace(microsecond=0)


def _key(slot: tuple) -> rsa.RSAPrivateKey:
    k = _keys.get(slot)
    if k is None:
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _keys[slot] = k
    return k


def sat_serial(seed: str) -> tuple[int, str]:
    """(serial_number, NoCertificado): 20 digits like SAT's '300010000005000034xx'."""
    h = hashlib.sha256(seed.encode()).digest()
    digits = "30001000000" + str(int.from_bytes(h[:8], "big") % 10**9).zfill(9)
    return int.from_bytes(digits.encode("ascii"), "big"), digits


def make_csd(
    rfc: str = "EKU9003173C9",
    name: str = "ESCUELA KEMPER URGATE",
    *,
    fiel: bool = False,
    expired: bool = False,
    not_yet_valid: bool = False,
    password: str = "12345678a",
) -> tuple[bytes, bytes]:
    """Return ``(cer_der, key_der_encrypted_pkcs8)`` shaped like SAT's certificates.

    * RSA 2048, RFC in x500UniqueIdentifier (``RFC / RFC-representante`` for a
      persona moral), name in CN/name/O;
    * CSD keyUsage = digitalSignature + nonRepudiation; FIEL adds
      dataEncipherment + keyAgreement;
    * 20-digit serial encoded the way SAT does, so NoCertificado derives from it.
    """
    args = (rfc, name, fiel, expired, not_yet_valid, password)
    with _lock:
        hit = _results.get(args)
        if hit is not None:
            return hit
        key = _key((rfc, fiel))
        ca_key = _key(("__CA__", False))
        if expired:
            nb, na = _t0 - timedelta(days=4 * 365), _t0 - timedelta(days=1)
        elif not_yet_valid:
            nb, na = _t0 + timedelta(days=2), _t0 + timedelta(days=4 * 365)
        else:
            nb, na = _t0 - timedelta(days=1), _t0 + timedelta(days=4 * 365)
        moral = len(rfc) == 12
        unique = f"{rfc} / XIQB891116QE4" if moral else rfc
        curp = " / XIQB891116MGRMZR05" if moral else "XIQB891116MGRMZR05"
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(_OID_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(_OID_UNIQUE_ID, unique),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, curp),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Sucursal 1" if not fiel else name),
            ]
        )
        issuer = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "AC UAT TIMBRA PRUEBAS"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SERVICIO DE ADMINISTRACION TRIBUTARIA"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "SAT-IES Authority"),
                x509.NameAttribute(NameOID.COUNTRY_NAME, "MX"),
            ]
        )
        serial, _digits = sat_serial("|".join(map(str, args)))
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(nb)
            .not_valid_after(na)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=False,
                    data_encipherment=fiel,
                    key_agreement=fiel,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cer_der = cert.public_bytes(Encoding.DER)
        key_der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, BestAvailableEncryption(password.encode()))
        _results[args] = (cer_der, key_der)
        return cer_der, key_der
