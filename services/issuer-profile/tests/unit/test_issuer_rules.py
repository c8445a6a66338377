"""Issuer rules that need no I/O: RFC shape, fiscal data, CSD expiry warnings, acceptances."""

from datetime import UTC, datetime, timedelta

import pytest

from timbra_issuer_profile.domain.issuer import CsdStatus, missing_acceptances, normalize_rfc, persona_of, slugify, validate_fiscal_data

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [("EKU9003173C9", "EKU9003173C9"), ("eku9003173c9", "EKU9003173C9"), (" eku-900317-3c9 ", "EKU9003173C9"), ("CACX 760510 1P8", "CACX7605101P8"), ("ñeñ-850101-ab1", "ÑEÑ850101AB1")],
)
def test_normalize_rfc(raw, normalized):
    assert normalize_rfc(raw) == normalized


@pytest.mark.parametrize(
    ("rfc", "persona"),
    [
        ("EKU9003173C9", "moral"),
        ("URE180429TM6", "moral"),
        ("A&C010101AB1", "moral"),
        ("CACX7605101P8", "fisica"),
        ("XAXX010101000", "fisica"),
        ("EKU9003173C", None),
        ("EKU9003173C99", None),
        ("E1U9003173C9", None),
        ("eku9003173c9", None),
        ("", None),
    ],
)
def test_persona_of(rfc, persona):
    assert persona_of(rfc) == persona


def _codes(problems):
    return [(p.code, p.path) for p in problems]


def test_valid_fiscal_data_has_no_problems():
    assert validate_fiscal_data("EKU9003173C9", "601", "42501") == []
    assert validate_fiscal_data("CACX7605101P8", "612", "06000") == []
    assert validate_fiscal_data("CACX7605101P8", "626", "06000") == []  # RESICO applies to both
    assert validate_fiscal_data("EKU9003173C9", "626", "06000") == []


@pytest.mark.parametrize("rfc", ["EKU9003173", "NOT-AN-RFC!", "XAXX010101000", "XEXX010101000"])
def test_bad_or_generic_rfc(rfc):
    problems = validate_fiscal_data(rfc, "601" if len(rfc) != 13 else "612", "42501")
    assert ("TIMBRA_RFC_INVALID", "rfc") in _codes(problems)
    (problem,) = [p for p in problems if p.code == "TIMBRA_RFC_INVALID"]
    assert problem.source == "timbra"


def test_regime_of_a_persona_fisica_for_a_persona_moral():
    problems = validate_fiscal_data("EKU9003173C9", "612", "42501")
    assert _codes(problems) == [("CFDI40141", "tax_regime")]
    assert problems[0].source == "sat"
    assert "612" in problems[0].message and "persona moral" in problems[0].message


def test_regime_of_a_persona_moral_for_a_persona_fisica():
    problems = validate_fiscal_data("CACX7605101P8", "601", "42501")
    assert _codes(problems) == [("CFDI40141", "tax_regime")]
    assert "persona física" in problems[0].message


def test_unknown_regime():
    problems = validate_fiscal_data("EKU9003173C9", "999", "42501")
    assert _codes(problems) == [("CFDI40141", "tax_regime")]
    assert "no existe" in problems[0].message


@pytest.mark.parametrize("zip_code", ["00001", "1", "ABCDE", "425010", ""])
def test_unknown_zip(zip_code):
    problems = validate_fiscal_data("EKU9003173C9", "601", zip_code)
    assert _codes(problems) == [("CFDI40126", "zip")]
    assert problems[0].source == "sat"


def test_all_problems_are_reported_at_once():
    problems = validate_fiscal_data("BAD", "999", "00001")
    assert [c for c, _ in _codes(problems)] == ["TIMBRA_RFC_INVALID", "CFDI40141", "CFDI40126"]


@pytest.mark.parametrize(
    ("text", "slug"),
    [("ESCUELA KEMPER URGATE", "escuela-kemper-urgate"), ("Niño & Compañía, S.A. de C.V.", "nino-compania-s-a-de-c-v"), ("!!!", "emisor"), ("a" * 60, "a" * 40)],
)
def test_slugify(text, slug):
    assert slugify(text) == slug


# --------------------------------------------------------------------------- CSD expiry


def _csd(days: float) -> CsdStatus:
    return CsdStatus(serial="30001000000500003416", valid_from=NOW - timedelta(days=365), valid_to=NOW + timedelta(days=days))


def test_no_warning_with_plenty_of_time():
    assert _csd(40).warning(NOW) is None
    assert _csd(31).warning(NOW) is None


@pytest.mark.parametrize("days", [30, 20, 5, 1])
def test_warning_before_expiry_says_how_many_days(days):
    warning = _csd(days).warning(NOW)
    assert warning is not None
    assert f"vence en {days} días" in warning
    assert "CSD" in warning


def test_expired_csd_warning():
    warning = _csd(-1).warning(NOW)
    assert warning is not None and warning.startswith("Aviso de sellos vencidos")
    assert _csd(-1 / 24).warning(NOW) == warning  # an hour past expiry is already expired


def test_days_left():
    assert _csd(20).days_left(NOW) == 20
    assert _csd(-1).days_left(NOW) == -1


# --------------------------------------------------------------------------- acceptances


def test_missing_acceptances():
    problems = missing_acceptances({})
    assert [p.code for p in problems] == ["TIMBRA_PRIVACY_NOTICE_PENDING", "TIMBRA_CARTA_MANIFIESTO_PENDING"]
    assert problems[0].message == "Falta aceptar el aviso de privacidad antes de timbrar."
    assert problems[1].message == "Falta aceptar la carta manifiesto con el PAC antes de timbrar."


def test_partial_and_complete_acceptances():
    assert [p.code for p in missing_acceptances({"privacy_notice": NOW})] == ["TIMBRA_CARTA_MANIFIESTO_PENDING"]
    assert [p.code for p in missing_acceptances({"carta_manifiesto": True, "privacy_notice": None})] == ["TIMBRA_PRIVACY_NOTICE_PENDING"]
    assert missing_acceptances({"privacy_notice": NOW, "carta_manifiesto": NOW}) == []
