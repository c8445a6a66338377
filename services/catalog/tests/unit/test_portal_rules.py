"""Rules of the self-invoicing portal: matching a typed ticket, the throttle, passwords, the
captcha, receipts (services/catalog/timbra_catalog/domain/portal.py)."""

import random
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from timbra_catalog.domain import portal as rules

MX = ZoneInfo("America/Mexico_City")
NOW = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)
TICKET = {"_id": "tkt_1", "order_number": "O-77", "ticket_number": "T-1", "total": "232.00", "status": "open",
          "invoiceable_until": datetime(2026, 4, 1, tzinfo=MX), "deleted_at": None}


def check(ticket=TICKET, order="O-77", total="232.00"):  # noqa: ANN001, ANN201
    return rules.check_ticket(ticket, branch_name="Centro", order_number=order, total=rules.parse_total(total), now=NOW, zone=MX)


@pytest.mark.parametrize("text,expected", [("232", "232.00"), ("$1,160.00", "1160.00"), (" 1160.5 ", "1160.50"), ("0.01", "0.01")])
def test_totals_are_read_as_printed(text, expected):  # noqa: ANN001
    assert rules.parse_total(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["", "abc", "1.234", "-5", "1e3", "12.3.4"])
def test_what_is_not_an_amount_is_refused(text):  # noqa: ANN001
    assert rules.parse_total(text) is None


def test_the_right_ticket_passes_and_spacing_or_case_of_the_order_number_does_not_matter():
    assert check() is None
    assert check(order=" o-77 ") is None


def test_a_missing_ticket_and_a_wrong_order_number_read_the_same():
    missing, wrong_order = check(ticket=None), check(order="O-78")
    assert missing.code == wrong_order.code == "TIMBRA_TICKET_NOT_FOUND"
    assert missing.message == wrong_order.message and "Centro" in missing.message
    assert check(ticket={**TICKET, "deleted_at": NOW}).code == "TIMBRA_TICKET_NOT_FOUND"


def test_a_total_off_by_a_cent_does_not_match():
    problem = check(total="231.99")
    assert (problem.code, problem.path) == ("TIMBRA_TICKET_TOTAL_MISMATCH", "total")
    assert "El total no coincide" in problem.message


@pytest.mark.parametrize("status", ["invoiced", "pending"])
def test_invoiced_or_pending_tickets_are_already_invoiced(status):  # noqa: ANN001
    assert check(ticket={**TICKET, "status": status}).code == "TIMBRA_TICKET_ALREADY_INVOICED"


def test_the_window_closes_at_invoiceable_until_and_names_the_last_day():
    closed = {**TICKET, "invoiceable_until": datetime(2026, 3, 1, tzinfo=MX)}
    problem = check(ticket=closed)
    assert problem.code == "TIMBRA_TICKET_WINDOW_CLOSED" and "28/02/2026" in problem.message
    assert check(ticket={**TICKET, "invoiceable_until": NOW + timedelta(seconds=1)}) is None


def test_the_throttle_blocks_after_the_limit_until_the_window_ends():
    limit, window = rules.THROTTLES["ticket"]
    start = NOW - timedelta(minutes=5)
    assert rules.blocked_for(None, "ticket", NOW) == 0
    assert rules.blocked_for(rules.Attempts(limit - 1, start), "ticket", NOW) == 0
    wait = rules.blocked_for(rules.Attempts(limit, start), "ticket", NOW)
    assert 0 < wait <= (window - timedelta(minutes=5)).total_seconds() + 1
    assert rules.blocked_for(rules.Attempts(limit * 10, NOW - window), "ticket", NOW) == 0
    problem = rules.rate_limited("ticket", wait)
    assert problem.code == "TIMBRA_PORTAL_RATE_LIMITED" and "espera 10 minutos" in problem.message


def test_passwords_need_length_letters_digits_and_not_the_rfc():
    assert rules.validate_password("Segura2026x", "Segura2026x", rfc="PEGJ800101AB1") == []
    assert [p.code for p in rules.validate_password("corta1", None)] == ["TIMBRA_PASSWORD_WEAK"]
    assert [p.code for p in rules.validate_password("sololetrasaqui", None)] == ["TIMBRA_PASSWORD_WEAK"]
    assert [p.code for p in rules.validate_password("xpegj800101ab1", None, rfc="PEGJ800101AB1")] == ["TIMBRA_PASSWORD_WEAK"]
    assert [p.path for p in rules.validate_password("Segura2026x", "Otra2026xx")] == ["password_confirmation"]


def test_temporary_passwords_pass_the_rules_and_differ():
    seen = {rules.temporary_password() for _ in range(50)}
    assert len(seen) == 50
    assert all(rules.validate_password(p, None) == [] and not set(p) & set("0O1lI") for p in seen)


def test_the_captcha_draws_its_question_and_the_answer_is_its_arithmetic():
    for seed in range(30):
        captcha = rules.new_captcha(random.Random(seed))
        drawn = "".join(re.findall(r">([^<])</text>", captcha.svg))
        assert drawn == captcha.question.replace(" ", "") + "="
        a, op, b = re.fullmatch(r"(\d+) ([+-]) (\d+)", captcha.question).groups()
        assert int(captcha.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
        assert "=" + captcha.answer not in drawn  # the image asks; it never shows the result
    assert rules.captcha_hash("s", "cap_1", " 12 ") == rules.captcha_hash("s", "cap_1", "12") != rules.captcha_hash("s", "cap_2", "12")


def test_receipts_are_bound_to_issuer_and_invoice():
    receipt = rules.receipt_for("secret", "iss_1", "inv_1")
    assert rules.receipt_ok("secret", "iss_1", "inv_1", receipt)
    assert not rules.receipt_ok("secret", "iss_2", "inv_1", receipt)
    assert not rules.receipt_ok("secret", "iss_1", "inv_2", receipt)
    assert not rules.receipt_ok("other", "iss_1", "inv_1", receipt)
    assert not rules.receipt_ok("secret", "iss_1", "inv_1", None)


def test_emails_are_masked_for_the_prefill():
    assert rules.mask_email("ana.perez@example.com") == "a***z@example.com"
    assert rules.mask_email("a@example.com") == "a***@example.com"
    assert rules.mask_email(None) is None
