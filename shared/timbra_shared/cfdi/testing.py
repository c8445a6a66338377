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


# ----------------------------------------------------------------------------
# Sample documents (used by the test-suite, the benchmark and other services' tests)
# ----------------------------------------------------------------------------


def sample_invoice(**overrides):
    """A typical Ingreso: 3 concepts with IVA 16 %, one with ISR retención (unbuilt)."""
    from decimal import Decimal

    from .models import Comprobante, Concepto, Emisor, Receptor, Retencion, Traslado

    iva = lambda: [Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota=Decimal("0.160000"))]  # noqa: E731
    kw = dict(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(
            Rfc="URE180429TM6",
            Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA",
            DomicilioFiscalReceptor="86991",
            RegimenFiscalReceptor="601",
            UsoCFDI="G03",
        ),
        LugarExpedicion="42501",
        Fecha="2025-01-15T10:30:00",
        Serie="A",
        Folio="1001",
        FormaPago="03",
        MetodoPago="PUE",
        Conceptos=[
            Concepto(ClaveProdServ="84111506", Cantidad=Decimal("2"), ClaveUnidad="E48", Unidad="Servicio",
                     Descripcion="Actualización", ValorUnitario=Decimal("575.00"), Traslados=iva()),
            Concepto(ClaveProdServ="43232408", Cantidad=Decimal("1"), ClaveUnidad="H87", Unidad="Pieza",
                     Descripcion="Anualidad", ValorUnitario=Decimal("550.00"), Traslados=iva()),
            Concepto(ClaveProdServ="80101500", Cantidad=Decimal("3.5"), ClaveUnidad="E48", Unidad="Hora",
                     Descripcion="Consultoría", ValorUnitario=Decimal("1234.57"), Traslados=iva(),
                     Retenciones=[Retencion(Impuesto="001", TipoFactor="Tasa", TasaOCuota=Decimal("0.100000"))]),
        ],
    )
    kw.update(overrides)
    return Comprobante(**kw)


def sample_pago(**overrides):
    """A Pago (tipo P) with Pagos 2.0: two payments, three related documents, IVA 16 % and ISR."""
    from decimal import Decimal

    from .models import Comprobante, DoctoRelacionado, Emisor, Pago, Pagos, Receptor, RetencionDR, TrasladoDR

    kw = dict(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(
            Rfc="URE180429TM6",
            Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA",
            DomicilioFiscalReceptor="86991",
            RegimenFiscalReceptor="601",
            UsoCFDI="CP01",
        ),
        LugarExpedicion="42501",
        Fecha="2025-01-15T10:30:00",
        TipoDeComprobante="P",
        Moneda="XXX",
        Pagos=Pagos(
            Pago=[
                Pago(
                    FechaPago="2025-01-14T12:00:00",
                    FormaDePagoP="03",
                    MonedaP="MXN",
                    DoctoRelacionado=[
                        DoctoRelacionado(
                            IdDocumento="C1DF8D01-8436-4E7D-BECF-20F31624280D", MonedaDR="MXN", NumParcialidad=1,
                            ImpSaldoAnt=Decimal("1305.00"), ImpPagado=Decimal("1305.00"),
                            TrasladosDR=[TrasladoDR(BaseDR=Decimal("1125.00"), TasaOCuotaDR=Decimal("0.160000"))],
                        ),
                        DoctoRelacionado(
                            IdDocumento="CB675288-97C8-45C2-9618-27FEF433AD59", MonedaDR="MXN", NumParcialidad=2,
                            ImpSaldoAnt=Decimal("5000.00"), ImpPagado=Decimal("1050.00"),
                            TrasladosDR=[TrasladoDR(BaseDR=Decimal("1000.00"), TasaOCuotaDR=Decimal("0.160000"))],
                            RetencionesDR=[RetencionDR(BaseDR=Decimal("1000.00"), ImpuestoDR="001", TasaOCuotaDR=Decimal("0.100000"))],
                        ),
                    ],
                ),
                Pago(
                    FechaPago="2025-01-15T09:00:00",
                    FormaDePagoP="03",
                    MonedaP="USD",
                    TipoCambioP=Decimal("20.5"),
                    DoctoRelacionado=[
                        DoctoRelacionado(
                            IdDocumento="CB36554D-AF7B-4EBC-97CB-8C40FDFD9E20", MonedaDR="USD", NumParcialidad=1,
                            ImpSaldoAnt=Decimal("116.00"), ImpPagado=Decimal("116.00"),
                            TrasladosDR=[TrasladoDR(BaseDR=Decimal("100.00"), TasaOCuotaDR=Decimal("0.160000"))],
                        ),
                    ],
                ),
            ]
        ),
    )
    kw.update(overrides)
    return Comprobante(**kw)
