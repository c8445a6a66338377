"""load_csd: every CsdError path with real bad input; SAT-shaped generated certificates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_der_private_key

from timbra_shared.cfdi import CsdError, load_csd
from timbra_shared.cfdi.testing import make_csd, sat_serial

PWD = "12345678a"


def _code(fn) -> str:
    with pytest.raises(CsdError) as e:
        fn()
    assert e.value.message and e.value.message != e.value.code  # Spanish, human message
    return e.value.code


def test_generated_csd_loads_and_is_sat_shaped():
    cer, key = make_csd()
    csd = load_csd(cer, key, PWD, rfc="EKU9003173C9")
    assert csd.rfc == "EKU9003173C9"
    assert csd.legal_name == "ESCUELA KEMPER URGATE"
    assert len(csd.serial) == 20 and csd.serial.isdigit() and csd.serial.startswith("30001000000")
    assert csd.valid_from < datetime.now(timezone.utc) < csd.valid_to
    cert = x509.load_der_x509_certificate(cer)
    assert cert.public_key().key_size == 2048
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.data_encipherment and not ku.key_agreement
    # NoCertificado derives from the serial exactly as for SAT's certificates
    assert cert.serial_number.to_bytes(20, "big").decode() == csd.serial
    sig = csd.sign(b"hola")
    assert csd.verify(b"hola", sig) and not csd.verify(b"hola!", sig)


def test_an_embedded_certificate_is_read_once_and_says_what_validation_asks():
    import base64

    from timbra_shared.cfdi.csd import embedded_certificate

    cer, key = make_csd()
    csd = load_csd(cer, key, PWD)
    embedded = embedded_certificate(csd.certificate_b64)
    assert embedded is embedded_certificate(csd.certificate_b64)
    assert (embedded.no_certificado, embedded.rfc, embedded.is_fiel) == (csd.serial, "EKU9003173C9", False)
    assert embedded_certificate(base64.b64encode(make_csd(fiel=True)[0]).decode()).is_fiel
    cached = embedded_certificate.cache_info().currsize
    for bad in ("no es base64!", base64.b64encode(b"no es un certificado").decode()):
        with pytest.raises(Exception):
            embedded_certificate(bad)
    assert embedded_certificate.cache_info().currsize == cached  # a bad one is read again next time, never remembered


def test_make_csd_is_cached():
    assert make_csd() is make_csd()


def test_sat_serial_shape():
    n, digits = sat_serial("x")
    assert len(digits) == 20 and n.to_bytes(20, "big").decode() == digits


def test_wrong_password():
    cer, key = make_csd()
    assert _code(lambda: load_csd(cer, key, "incorrecta")) == CsdError.WRONG_PASSWORD


def test_a_wrong_password_that_decrypts_to_garbage_is_still_the_password():
    cer, key = make_csd()
    garbled = None
    for i in range(20_000):
        try:
            load_der_private_key(key, f"mala{i}".encode())
        except ValueError as exc:
            if "password" not in str(exc).lower():
                garbled = f"mala{i}"
                break
    assert garbled, "no wrong password found that passes the padding check"
    assert _code(lambda: load_csd(cer, key, garbled)) == CsdError.WRONG_PASSWORD


def test_swapped_key_does_not_match_certificate():
    cer, _ = make_csd()
    _, other_key = make_csd("CACX7605101P8", "XOCHILT CASAS CHAVEZ")
    assert _code(lambda: load_csd(cer, other_key, PWD)) == CsdError.KEY_MISMATCH


def test_fiel_instead_of_csd():
    cer, key = make_csd(fiel=True)
    ku = x509.load_der_x509_certificate(cer).extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.data_encipherment and ku.key_agreement
    assert _code(lambda: load_csd(cer, key, PWD)) == CsdError.FIEL_NOT_CSD


def test_other_rfc():
    cer, key = make_csd()
    assert _code(lambda: load_csd(cer, key, PWD, rfc="URE180429TM6")) == CsdError.RFC_MISMATCH


def test_expired_and_not_yet_valid():
    cer, key = make_csd(expired=True)
    assert _code(lambda: load_csd(cer, key, PWD)) == CsdError.EXPIRED
    # the same certificate is fine at an instant inside its validity
    at = x509.load_der_x509_certificate(cer).not_valid_before_utc + timedelta(days=10)
    assert load_csd(cer, key, PWD, at=at).rfc == "EKU9003173C9"
    cer, key = make_csd(not_yet_valid=True)
    assert _code(lambda: load_csd(cer, key, PWD)) == CsdError.NOT_YET_VALID


def test_garbage_inputs():
    cer, key = make_csd()
    assert _code(lambda: load_csd(b"not a certificate", key, PWD)) == CsdError.INVALID_CERTIFICATE
    assert _code(lambda: load_csd(cer, b"not a key", PWD)) == CsdError.INVALID_KEY


def test_password_as_bytes():
    cer, key = make_csd()
    assert load_csd(cer, key, PWD.encode()).rfc == "EKU9003173C9"


# --- SAT's real test CSDs (../shared/fixtures/csd) ---------------------------------


def test_sat_csd_loads(sat_csd_files, sat_at):
    cer, key = sat_csd_files("EKU9003173C9")
    csd = load_csd(cer, key, PWD, rfc="EKU9003173C9", at=sat_at)
    assert csd.serial == "30001000000500003416"
    assert csd.rfc == "EKU9003173C9"
    assert csd.legal_name == "ESCUELA KEMPER URGATE SA DE CV"
    assert csd.valid_to.year == 2027


def test_sat_csd_error_paths(sat_csd_files, sat_at):
    cer, key = sat_csd_files("EKU9003173C9")
    assert _code(lambda: load_csd(cer, key, "wrong", at=sat_at)) == CsdError.WRONG_PASSWORD
    assert _code(lambda: load_csd(cer, key, PWD, rfc="CACX7605101P8", at=sat_at)) == CsdError.RFC_MISMATCH
    _, gen_key = make_csd()
    assert _code(lambda: load_csd(cer, gen_key, PWD, at=sat_at)) == CsdError.KEY_MISMATCH
    assert _code(lambda: load_csd(cer, key, PWD, at=datetime(2028, 1, 1, tzinfo=timezone.utc))) == CsdError.EXPIRED
    assert _code(lambda: load_csd(cer, key, PWD, at=datetime(2020, 1, 1, tzinfo=timezone.utc))) == CsdError.NOT_YET_VALID


def test_sat_expired_csd(sat_csd_files):
    cer, key = sat_csd_files("CACX7605101P8-expired")
    assert _code(lambda: load_csd(cer, key, PWD)) == CsdError.EXPIRED
    csd = load_csd(cer, key, PWD, at=datetime(2022, 6, 1, tzinfo=timezone.utc))
    assert csd.rfc == "CACX7605101P8" and csd.serial == "30001000000400002451"
