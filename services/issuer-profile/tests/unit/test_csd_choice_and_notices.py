"""Which certificate seals, which one's expiry is announced, the profile's "Aviso de sellos
vencidos", coded CSD messages, addresses, document types and series."""

from datetime import UTC, datetime, timedelta

import pytest

from timbra_issuer_profile.domain.issuer import (
    CSD_MESSAGES,
    CsdStatus,
    active_certificate,
    csd_message,
    expiry_certificate,
    expiry_email,
    validate_address,
    validate_document_types,
    validate_phone,
    validate_series,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def cert(name: str, start_days: float, end_days: float, **extra) -> dict:
    return {"_id": name, "serial": name, "valid_from": NOW + timedelta(days=start_days), "valid_to": NOW + timedelta(days=end_days), "uploaded_at": NOW, **extra}


def test_the_most_recently_issued_valid_certificate_seals():
    old, renewed, future, expired = cert("old", -700, 30), cert("renewed", -1, 1400), cert("future", 3, 1500), cert("expired", -1500, -1)
    assert active_certificate([old, renewed, future, expired], NOW)["_id"] == "renewed"
    assert active_certificate([old, future, expired], NOW)["_id"] == "old"
    assert active_certificate([future, expired], NOW) is None
    assert active_certificate([], NOW) is None


def test_expiry_follows_the_longest_lasting_started_certificate():
    assert expiry_certificate([cert("old", -700, 10), cert("renewed", -1, 1400)], NOW)["_id"] == "renewed"
    assert expiry_certificate([cert("old", -700, 10), cert("future", 3, 1500)], NOW)["_id"] == "old"
    assert expiry_certificate([cert("expired", -900, -2)], NOW)["_id"] == "expired"
    assert expiry_certificate([], NOW) is None


@pytest.mark.parametrize(("days", "threshold"), [(400, None), (31, None), (30.5, 30), (8, 30), (7.5, 7), (1, 7), (0.01, 7), (-0.01, 0), (-30, 0)])
def test_thresholds(days, threshold):
    status = CsdStatus(serial="1", valid_from=NOW - timedelta(days=365), valid_to=NOW + timedelta(days=days))
    assert status.threshold(NOW) == threshold


def test_the_seed_notice_for_expiring_and_expired_seals():
    expiring = CsdStatus(serial="1", valid_from=NOW - timedelta(days=365), valid_to=NOW + timedelta(days=5, hours=2)).notice(NOW)
    assert expiring["title"] == "Aviso de sellos vencidos" and expiring["code"] == "csd_expiring"
    assert (expiring["severity"], expiring["days_left"]) == ("critical", 5)
    assert "Certificado de Sello Digital" in expiring["help"] and expiring["help_url"].startswith("https://www.sat.gob.mx/")
    assert CsdStatus(serial="1", valid_from=NOW - timedelta(days=365), valid_to=NOW + timedelta(days=25)).notice(NOW)["severity"] == "warning"
    expired = CsdStatus(serial="1", valid_from=NOW - timedelta(days=365), valid_to=NOW - timedelta(days=2)).notice(NOW)
    assert (expired["code"], expired["severity"], expired["days_left"]) == ("csd_expired", "error", 0)
    assert expired["message"].startswith("Aviso de sellos vencidos")
    assert CsdStatus(serial="1", valid_from=NOW, valid_to=NOW + timedelta(days=90)).notice(NOW) is None


def test_expiry_emails():
    subject, body = expiry_email("ESCUELA KEMPER URGATE", "EKU9003173C9", "30001000000500003416", 7, NOW + timedelta(days=6, hours=3), NOW)
    assert subject == "Tu CSD vence en 6 días (EKU9003173C9)"
    assert "30001000000500003416" in body and "07/03/2026" in body and "sat.gob.mx" in body
    subject, body = expiry_email("ESCUELA KEMPER URGATE", "EKU9003173C9", "1", 0, NOW - timedelta(days=1), NOW)
    assert subject.startswith("Aviso de sellos vencidos") and "venció el 28/02/2026" in body


def test_every_csd_error_code_has_its_own_spanish_message():
    codes = ["wrong_password", "key_mismatch", "fiel_not_csd", "rfc_mismatch", "expired", "not_yet_valid", "invalid_certificate", "invalid_key"]
    assert set(CSD_MESSAGES) == set(codes)
    messages = [csd_message(c, rfc="EKU9003173C9", cert_rfc="OTR850101AB1", date="01/01/2025") for c in codes]
    assert len(set(messages)) == len(codes)
    assert "OTR850101AB1" in messages[3] and "EKU9003173C9" in messages[3]
    assert "01/01/2025" in messages[4] and "01/01/2025" in messages[5]
    assert csd_message("unknown", fallback="x") == "x"


def test_addresses():
    good = {"street": "Juárez", "exterior": "1", "zip": "42501", "municipality": "Pachuca", "state": "HID", "country": "MEX"}
    assert validate_address(good, "fiscal") == []
    assert validate_address({**good, "country": "USA", "zip": "90210"}, "fiscal") == []  # foreign CPs are not in c_CodigoPostal
    problems = validate_address({**good, "zip": "00001", "exterior": ""}, "issuing")
    assert [(p.code, p.path) for p in problems] == [("TIMBRA_ADDRESS_INCOMPLETE", "issuing.exterior"), ("CFDI40126", "issuing.zip")]


def test_document_types_series_and_phone():
    assert validate_document_types(["I", "P"]) == []
    assert [p.code for p in validate_document_types([])] == ["TIMBRA_TYPE_REQUIRED"]
    assert [p.code for p in validate_document_types(["I", "N"])] == ["TIMBRA_TYPE_UNKNOWN"]
    assert validate_series({"I": "A", "E": "NC-2026"}) == []
    assert [p.path for p in validate_series({"I": "A B", "X": "A", "P": "x" * 26})] == ["series.I", "series.X", "series.P"]
    assert validate_phone("(771) 123-4567") == [] and validate_phone("+52 771 123 4567") == [] and validate_phone(None) == []
    assert [p.code for p in validate_phone("123")] == ["TIMBRA_PHONE_INVALID"]
