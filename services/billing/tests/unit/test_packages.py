"""Packages with the fake repository: FIFO consumption, expiry in the ledger, adjustments,
low-balance alerts (once per crossing, deterministic event id) and the books check."""

from datetime import UTC, datetime, timedelta

import pytest

from timbra_billing.domain.ledger import balanced, replay
from timbra_billing.service import EXPIRY_ACTOR, add_months
from timbra_shared.errors import ApiError
from timbra_shared.events import InvoiceFunded, InvoiceRejected, NotificationRequested
from timbra_shared.ids import utcnow

from .test_credit_gate import failed, sealed, stamped


def alerts(store) -> list[NotificationRequested]:
    return [e for e in store.emitted if isinstance(e, NotificationRequested)]


async def test_add_months_keeps_the_day_or_takes_the_last_one():
    assert add_months(datetime(2025, 1, 31, 10, tzinfo=UTC), 1) == datetime(2025, 2, 28, 10, tzinfo=UTC)
    assert add_months(datetime(2024, 2, 29, tzinfo=UTC), 12) == datetime(2025, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2025, 6, 15, tzinfo=UTC), 24) == datetime(2027, 6, 15, tzinfo=UTC)


async def test_grant_opens_a_package_valid_for_its_months(gate, repo):
    await gate.grant("iss_1", 50, 24, actor="admin")
    (package,) = repo.packages.values()
    assert (package["stamps"], package["available"], package["granted"]) == (50, 50, 50)
    assert timedelta(days=729) < package["expires_at"] - utcnow() <= timedelta(days=731)


async def test_reservations_consume_the_package_that_expires_first(gate, repo):
    await gate.grant("iss_1", 2, 24, actor="admin")
    await gate.grant("iss_1", 1, 12, actor="admin")
    soon = next(p for p in repo.packages.values() if p["months"] == 12)
    later = next(p for p in repo.packages.values() if p["months"] == 24)
    await gate.reserve(sealed("inv_1"))
    assert repo.reservations["inv_1"]["package_id"] == soon["_id"]
    await gate.reserve(sealed("inv_2"))
    assert repo.reservations["inv_2"]["package_id"] == later["_id"]
    await gate.commit(stamped("inv_1"))
    assert (repo.packages[soon["_id"]]["consumed"], repo.packages[later["_id"]]["reserved"]) == (1, 1)


async def test_an_expired_package_is_never_used_even_before_the_job_runs(gate, store, repo):
    await gate.grant("iss_1", 5, 12, actor="admin", expires_at=utcnow() - timedelta(seconds=1))
    await gate.reserve(sealed())
    assert [type(e) for e in store.emitted if not isinstance(e, NotificationRequested)] == [InvoiceRejected]


async def test_expiry_job_records_the_unused_credits_in_the_ledger_once(gate, repo):
    await gate.grant("iss_1", 5, 12, actor="admin", expires_at=utcnow() + timedelta(hours=1))
    await gate.grant("iss_1", 7, 24, actor="admin")
    await gate.reserve(sealed("inv_1"))
    await gate.commit(stamped("inv_1"))
    assert await gate.expire_due(utcnow()) == 0
    later = utcnow() + timedelta(hours=2)
    assert await gate.expire_due(later) == 4
    assert await gate.expire_due(later) == 0
    (entry,) = [e for e in repo.ledger if e["entry"] == "expire"]
    assert (entry["quantity"], entry["actor"]) == (4, EXPIRY_ACTOR) and "vencimiento" in entry["reason"]
    assert await repo.balance("iss_1") == {"available": 7, "reserved": 0, "consumed": 1, "expired": 4, "granted": 12}


async def test_a_credit_released_after_its_package_expired_expires_too(gate, repo):
    await gate.grant("iss_1", 2, 12, actor="admin", expires_at=utcnow() + timedelta(hours=1))
    await gate.reserve(sealed("inv_1"))
    (package,) = repo.packages.values()
    package["expires_at"] = utcnow() - timedelta(seconds=1)  # the end passes while the invoice is at the PAC
    assert await gate.expire_due() == 1
    await gate.release(failed("inv_1"))
    balance = await repo.balance("iss_1")
    assert balance == {"available": 0, "reserved": 0, "consumed": 0, "expired": 2, "granted": 2}
    assert [e["entry"] for e in repo.ledger] == ["grant", "reserve", "expire", "release", "expire"]


async def test_adjustments_add_a_package_or_take_fifo_with_reason_and_actor(gate, repo):
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.grant("iss_1", 3, 24, actor="admin")
    await gate.adjust("iss_1", -4, reason="cortesía duplicada", actor="key_staff")
    by_months = {p["months"]: p["available"] for p in repo.packages.values()}
    assert by_months == {12: 0, 24: 2}
    await gate.adjust("iss_1", 10, reason="compensación por caída", actor="key_staff")
    adjustments = [e for e in repo.ledger if e["entry"] == "adjust"]
    assert [e["quantity"] for e in adjustments] == [-3, -1, 10]
    assert all(e["actor"] == "key_staff" and "ajuste:" in e["reason"] for e in adjustments)
    assert await repo.balance("iss_1") == {"available": 12, "reserved": 0, "consumed": 0, "expired": 0, "granted": 12}
    with pytest.raises(ApiError) as excinfo:
        await gate.adjust("iss_1", -13, reason="demasiado", actor="key_staff")
    assert excinfo.value.status == 409
    assert (await repo.balance("iss_1"))["available"] == 12


async def test_low_balance_and_zero_alerts_are_sent_once_per_crossing(gate, store, repo):
    await gate.set_alerts("iss_1", 3, None)
    await gate.grant("iss_1", 4, 12, actor="admin")
    for n in range(4):
        await gate.reserve(sealed(f"inv_{n}"))
    await gate.release(failed("inv_3"))  # back to 1, then down to 0 again: no new emails
    await gate.reserve(sealed("inv_9"))
    low, zero = alerts(store)
    assert (low.kind, zero.kind) == ("billing.low_balance", "billing.zero_balance")
    assert low.to == ["emisor@example.com"] and "Timbres disponibles: 2" in low.subject
    assert low.event_id == f"billing-low-balance-iss_1-1" and zero.event_id == "billing-zero-balance-iss_1-1"
    # new credit re-arms both; the next crossings get new (deterministic) ids
    await gate.grant("iss_1", 3, 12, actor="admin")
    for n in range(10, 13):
        await gate.reserve(sealed(f"inv_{n}"))
    assert [a.event_id for a in alerts(store)][2:] == ["billing-low-balance-iss_1-2", "billing-zero-balance-iss_1-2"]


async def test_alerts_go_to_the_emails_the_issuer_set(gate, store):
    await gate.set_alerts("iss_1", 100, ["cobranza@emisor.mx"])
    await gate.grant("iss_1", 5, 12, actor="admin")
    await gate.reserve(sealed())
    (alert,) = alerts(store)
    assert alert.to == ["cobranza@emisor.mx"]


async def test_no_email_known_means_no_alert_event(make_gate):
    gate, store, repo = make_gate()
    await gate.grant("iss_x", 1, 12, actor="admin")
    await gate.reserve(sealed(issuer_id="iss_x"))
    assert alerts(store) == [] and [type(e) for e in store.emitted] == [InvoiceFunded]


async def test_books_check_agrees_with_the_ledger_and_reports_a_tampered_account(gate, repo):
    await gate.grant("iss_1", 5, 12, actor="admin")
    await gate.reserve(sealed("inv_1"))
    await gate.commit(stamped("inv_1"))
    report = await gate.check_books()
    assert report["ok"] and report["accounts_checked"] == 1 and report["mismatches"] == []
    assert replay(repo.ledger) == await repo.balance("iss_1")
    repo.accounts["iss_1"]["available"] += 1  # a write that bypassed the ledger
    report = await gate.check_books()
    (bad,) = report["mismatches"]
    assert not report["ok"] and bad["issuer_id"] == "iss_1"
    assert bad["problems"]["account"] == {"available": (4, 5)}


async def test_a_failed_unit_of_work_changes_nothing(gate, repo):
    await gate.grant("iss_1", 2, 12, actor="admin")
    before = (await repo.balance("iss_1"), len(repo.ledger))
    with pytest.raises(ApiError):
        await gate.adjust("iss_1", -3, reason="más de lo que hay", actor="admin")
    assert (await repo.balance("iss_1"), len(repo.ledger)) == before
    assert balanced(await repo.balance("iss_1"))
