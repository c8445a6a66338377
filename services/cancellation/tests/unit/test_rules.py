"""The cancellation rules: SAT's calendar and acceptance exceptions (timbra_shared.cfdi.cancelacion)
and Timbra's checks, prediction and reading of SAT's answers (timbra_cancellation.domain.rules)."""

from datetime import date, datetime
from decimal import Decimal

import pytest

from timbra_cancellation.domain.rules import CANCELLED, Backoff, Invoice, Outcome, State, check_invoice, check_motive, check_substitute, expect, read_status, related_in_force_problem
from timbra_shared.cfdi import cancelacion as sat

UUID = "11111111-2222-4333-8444-555555555555"
NEW = "AAAAAAAA-2222-4333-8444-555555555555"


def invoice(**overrides) -> Invoice:
    values = dict(invoice_id="inv_1", issuer_id="iss_1", uuid=UUID, type="I", total=Decimal("5800.00"), currency="MXN", rfc_emisor="EKU9003173C9",
                  rfc_receptor="URE180429TM6", fecha=datetime(2026, 3, 10, 10, 0))  # a Tuesday
    values.update(overrides)
    return Invoice(**values)


# --------------------------------------------------------------------------- SAT's calendar


def test_business_days_skip_weekends_and_the_lft_rest_days() -> None:
    assert sat.es_dia_habil(date(2026, 3, 10))
    assert not sat.es_dia_habil(date(2026, 3, 14)) and not sat.es_dia_habil(date(2026, 3, 15))  # Saturday, Sunday
    assert not sat.es_dia_habil(date(2026, 3, 16))  # third Monday of March (21 de marzo)
    assert not sat.es_dia_habil(date(2026, 2, 2))  # first Monday of February
    assert not sat.es_dia_habil(date(2026, 11, 16))  # third Monday of November
    assert not sat.es_dia_habil(date(2026, 9, 16)) and not sat.es_dia_habil(date(2026, 12, 25)) and not sat.es_dia_habil(date(2026, 5, 1))
    assert not sat.es_dia_habil(date(2030, 10, 1)) and sat.es_dia_habil(date(2026, 10, 1))  # the presidential transmission, every six years
    assert sat.sumar_dias_habiles(date(2026, 3, 13), 1) == date(2026, 3, 17)  # Friday + 1 → Tuesday (Monday is a rest day)
    assert sat.sumar_dias_habiles(date(2026, 3, 11), 3) == date(2026, 3, 17)


def test_the_receptor_has_three_business_days_and_the_direct_window_ends_the_next_business_day() -> None:
    assert sat.plazo_respuesta(datetime(2026, 3, 11, 9, 0)) == datetime(2026, 3, 17, 23, 59, 59)
    assert sat.fin_dia_habil_siguiente(datetime(2026, 3, 13, 18, 0)) == datetime(2026, 3, 17, 23, 59, 59)
    assert sat.fin_dia_habil_siguiente(datetime(2026, 3, 10, 10, 0)) == datetime(2026, 3, 11, 23, 59, 59)


@pytest.mark.parametrize(("rfc", "fecha", "limit"), [
    ("EKU9003173C9", datetime(2026, 1, 5), datetime(2027, 3, 31, 23, 59, 59)),  # persona moral: March of the next year
    ("CACX7605101P8", datetime(2026, 12, 31), datetime(2027, 4, 30, 23, 59, 59)),  # persona física: April
])
def test_the_cancellation_deadline_is_the_month_of_the_annual_return(rfc: str, fecha: datetime, limit: datetime) -> None:
    assert sat.fecha_limite_cancelacion(fecha, rfc) == limit


# --------------------------------------------------------------------------- acceptance matrix

LATE = datetime(2026, 3, 20, 12, 0)  # well after the next business day


@pytest.mark.parametrize(("overrides", "now", "reason"), [
    ({}, LATE, None),  # ingreso over $1,000 to a company, after the window: the receptor decides
    ({"total": Decimal("1000.00")}, LATE, sat.POR_MONTO),
    ({"total": Decimal("1000.01")}, LATE, None),
    ({"total": Decimal("60.00"), "currency": "USD", "exchange": Decimal("17.50")}, LATE, None),  # $1,050 MXN
    ({"total": Decimal("50.00"), "currency": "USD", "exchange": Decimal("17.50")}, LATE, sat.POR_MONTO),
    ({"type": "E"}, LATE, sat.POR_TIPO),
    ({"type": "T"}, LATE, sat.POR_TIPO),
    ({"type": "N"}, LATE, sat.POR_TIPO),
    ({"type": "P"}, LATE, None),
    ({"rfc_receptor": "XAXX010101000"}, LATE, sat.POR_PUBLICO_EN_GENERAL),
    ({"rfc_receptor": "XEXX010101000"}, LATE, sat.POR_EXTRANJERO),
    ({}, datetime(2026, 3, 11, 23, 0), sat.POR_PLAZO),  # by the end of the next business day
    ({}, datetime(2026, 3, 12, 0, 0, 1), None),
])
def test_when_sat_cancels_without_acceptance(overrides: dict, now: datetime, reason: str | None) -> None:
    prediction = expect(invoice(**overrides), now)
    assert prediction.reason == reason
    assert prediction.acceptance_required is (reason is None)
    assert (prediction.respond_by is not None) is (reason is None)


# --------------------------------------------------------------------------- checks before the PAC


@pytest.mark.parametrize(("motive", "substitution", "code"), [
    ("05", None, "TIMBRA_CANCEL_MOTIVE_INVALID"),
    ("", None, "TIMBRA_CANCEL_MOTIVE_INVALID"),
    ("01", None, "TIMBRA_CANCEL_SUBSTITUTION_REQUIRED"),
    ("02", NEW, "TIMBRA_CANCEL_SUBSTITUTION_NOT_ALLOWED"),
    ("03", NEW, "TIMBRA_CANCEL_SUBSTITUTION_NOT_ALLOWED"),
    ("04", NEW, "TIMBRA_CANCEL_SUBSTITUTION_NOT_ALLOWED"),
    ("01", NEW, None),
    ("02", None, None),
    ("03", None, None),
    ("04", None, None),
])
def test_motive_and_substitution(motive: str, substitution: str | None, code: str | None) -> None:
    problems = check_motive(motive, substitution)
    assert [p.code for p in problems] == ([code] if code else [])
    assert all(p.status == 422 and p.message for p in problems)


NOW = datetime(2026, 3, 20, 12, 0)


@pytest.mark.parametrize(("overrides", "state", "motive", "code", "status"), [
    ({"uuid": None}, None, "02", "TIMBRA_CANCEL_NOT_STAMPED", 409),
    ({"status": CANCELLED}, None, "02", "TIMBRA_CANCEL_ALREADY_CANCELLED", 409),
    ({}, State.COMPLETED, "02", "TIMBRA_CANCEL_ALREADY_CANCELLED", 409),
    ({}, State.PENDING, "02", "TIMBRA_CANCEL_IN_PROCESS", 409),
    ({}, State.REQUESTED, "02", "TIMBRA_CANCEL_IN_PROCESS", 409),
    ({}, State.AWAITING_SUBSTITUTE, "02", "TIMBRA_CANCEL_IN_PROCESS", 409),
    ({}, State.ESCALATED, "02", "TIMBRA_CANCEL_IN_PROCESS", 409),
    ({}, State.REJECTED, "02", None, None),  # a rejected request may be made again
    ({"fecha": datetime(2024, 12, 1)}, None, "02", "TIMBRA_CANCEL_DEADLINE_PASSED", 422),
    ({"fecha": datetime(2025, 12, 1)}, None, "02", None, None),  # until March 2026… and today is 2026-03-20
    ({}, None, "04", "TIMBRA_CANCEL_MOTIVE_04_NOT_GLOBAL", 422),
    ({"global_invoice": True, "rfc_receptor": "XAXX010101000"}, None, "04", None, None),
])
def test_the_invoice_checks(overrides: dict, state: State | None, motive: str, code: str | None, status: int | None) -> None:
    problems = check_invoice(invoice(**overrides), motive, state, NOW)
    assert [(p.code, p.status) for p in problems] == ([(code, status)] if code else [])


def test_the_substitute_checks() -> None:
    original = invoice()
    good = invoice(invoice_id="inv_2", uuid=NEW, related=(("04", UUID),))
    assert check_substitute(original, good, None) == []
    assert check_substitute(original, None, None)[0].code == "TIMBRA_CANCEL_SUBSTITUTE_NOT_FOUND"
    assert check_substitute(original, original, None)[0].code == "TIMBRA_CANCEL_SUBSTITUTE_IS_ORIGINAL"
    assert check_substitute(original, invoice(invoice_id="inv_2", uuid=None), None)[0].code == "TIMBRA_CANCEL_SUBSTITUTE_NOT_STAMPED"
    assert check_substitute(original, good, State.PENDING)[0].code == "TIMBRA_CANCEL_SUBSTITUTE_CANCELLED"
    assert check_substitute(original, invoice(invoice_id="inv_2", uuid=NEW, status=CANCELLED, related=(("04", UUID),)), None)[0].code == "TIMBRA_CANCEL_SUBSTITUTE_CANCELLED"
    assert check_substitute(original, invoice(invoice_id="inv_2", uuid=NEW, related=(("07", UUID),)), None)[0].code == "TIMBRA_CANCEL_SUBSTITUTE_NOT_RELATED"
    assert check_substitute(original, invoice(invoice_id="inv_2", uuid=NEW, related=(("04", NEW),)), None)[0].code == "TIMBRA_CANCEL_SUBSTITUTE_NOT_RELATED"


def test_related_documents_in_force_are_listed() -> None:
    assert related_in_force_problem([]) == []
    [problem] = related_in_force_problem([{"uuid": NEW, "tipo": "01", "serie": "NC", "folio": "7"}, {"uuid": UUID, "tipo": "pago"}])
    assert problem.code == "TIMBRA_CANCEL_RELATED_IN_FORCE" and problem.status == 409
    assert "NC7" in problem.message and NEW in problem.message and "TipoRelacion 01" in problem.message and "complemento de pago" in problem.message


# --------------------------------------------------------------------------- SAT's answers


@pytest.mark.parametrize(("estado", "estatus", "outcome", "acceptance", "by"), [
    ("Cancelado", "Cancelado sin aceptación", Outcome.COMPLETED, "sin_aceptacion", None),
    ("Cancelado", "", Outcome.COMPLETED, "sin_aceptacion", None),
    ("Cancelado", "Cancelado con aceptación", Outcome.COMPLETED, "con_aceptacion", "receptor"),
    ("Cancelado", "Plazo vencido", Outcome.COMPLETED, "plazo_vencido", "plazo_vencido"),
    ("Vigente", "En proceso", Outcome.PENDING, None, None),
    ("Vigente", "Solicitud rechazada", Outcome.REJECTED, None, None),
    ("Vigente", "", Outcome.WAIT, None, None),
    ("No Encontrado", "", Outcome.WAIT, None, None),
    ("Cancelado", "Cancelación en revisión", Outcome.UNKNOWN, None, None),
    ("Vigente", "Otro", Outcome.UNKNOWN, None, None),
    ("Suspendido", "", Outcome.UNKNOWN, None, None),
])
def test_reading_sats_status(estado: str, estatus: str, outcome: Outcome, acceptance: str | None, by: str | None) -> None:
    reading = read_status(estado, estatus)
    assert (reading.outcome, reading.acceptance, reading.accepted_by) == (outcome, acceptance, by)


def test_polls_back_off_with_jitter_up_to_the_maximum() -> None:
    low, high = Backoff(5, 1800, rand=lambda: 0.0), Backoff(5, 1800, rand=lambda: 1.0)
    assert [low.delay(n) for n in (1, 2, 3)] == [2.5, 5.0, 10.0]
    assert [high.delay(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert high.delay(30) == 1800 and low.delay(30) == 900
