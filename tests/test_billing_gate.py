"""The credit gate on the real platform: no credit means "Sin folios disponibles" and no stamp;
packages expire into the ledger; low-balance alerts are emailed once per crossing; and the books
(``available + reserved + consumed + expired = granted``, recomputed from the ledger) hold for
every account in billing's database, checked again at the very end of the test session, after
the resilience scenarios have run."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from timbra_billing.domain.ledger import BALANCE_FIELDS, balanced, from_sums
from timbra_shared.devstack.scenario import TimbraClient, sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def _stamps(platform) -> int:  # noqa: ANN001
    async with httpx.AsyncClient(timeout=30) as http:
        return (await http.get(platform.url("sandbox-pac") + "/healthz")).json()["stamps"]


async def _balance(client: TimbraClient, issuer) -> dict:  # noqa: ANN001
    return (await client.http.get("/v1/billing/balance", headers=issuer.headers)).json()


async def _invoices(client: TimbraClient, issuer, count: int) -> dict[str, dict]:  # noqa: ANN001
    ids = []
    for n in range(count):
        created = await client.create_invoice(issuer, sample_invoice(email=f"{new_id()}-{n}@example.com"))
        assert created.status_code == 202, created.text
        ids.append(created.json()["id"])
    return await client.wait_final(issuer, ids, timeout=90)


async def books_from_the_database(mongodb_url: str) -> list[dict]:
    """Recompute every account from billing's ledger, straight from MongoDB (not through the
    service), and return what disagrees with the running totals or breaks the invariant."""
    client = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        db = client["timbra_billing"]
        sums: dict[str, dict[str, int]] = {}
        async for row in await db.ledger.aggregate([{"$group": {"_id": {"i": "$issuer_id", "e": "$entry"}, "q": {"$sum": "$quantity"}}}]):
            sums.setdefault(row["_id"]["i"], {})[row["_id"]["e"]] = row["q"]
        bad = []
        accounts = await db.accounts.find({}).to_list(None)
        assert accounts, "billing has no accounts at all"
        for account in accounts:
            running = {f: int(account.get(f, 0)) for f in BALANCE_FIELDS}
            derived = from_sums(sums.pop(account["_id"], {}))
            if derived != running or not balanced(running) or min(running.values()) < 0:
                bad.append({"issuer_id": account["_id"], "ledger": derived, "account": running})
        bad.extend({"issuer_id": i, "ledger": from_sums(s), "account": None} for i, s in sums.items())
        reserved = await db.reservations.count_documents({"state": "reserved"})
        total_reserved = sum(int(a.get("reserved", 0)) for a in accounts)
        if reserved != total_reserved:
            bad.append({"reservations": reserved, "accounts_reserved": total_reserved})
        return bad
    finally:
        await client.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def books_checked_at_session_end(platform):  # noqa: ANN001, ANN201
    """Requested by the test below; its teardown runs when the session ends, i.e. after every
    other module on the shared platform, resilience scenarios included, and fails the run if the
    books do not balance then."""
    yield
    for _ in range(60):  # let in-flight work settle (the resilience tests wait for final statuses)
        bad = await books_from_the_database(platform.mongodb_url)
        if not bad:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"billing's books do not balance at the end of the session: {bad}")


async def test_without_credit_the_invoice_is_rejected_and_never_stamped(client, platform) -> None:
    issuer = await client.onboard(rfc="SFD010101AA1", legal_name="SIN FOLIOS", tax_regime="601", zip_code="06000", credits=0)
    stamps = await _stamps(platform)
    (state,) = (await _invoices(client, issuer, 1)).values()
    assert state["status"] == "rejected", state
    assert state["message"].startswith("Sin folios disponibles")
    assert [e["code"] for e in state["errors"]] == ["TIMBRA_NO_CREDITS"]
    assert [s["status"] for s in state["timeline"]][-1] == "rejected" and state["timeline"][-1]["service"] == "billing"
    assert await _stamps(platform) == stamps
    assert await _balance(client, issuer) | {"message": None} == {"issuer_id": issuer.id, "available": 0, "reserved": 0, "consumed": 0, "expired": 0, "granted": 0, "message": None, "alert_threshold": 10}


async def test_credits_are_reserved_then_committed_with_a_ledger_trail(client, platform) -> None:
    issuer = await client.onboard(rfc="DOS010101AA1", legal_name="DOS CREDITOS", tax_regime="601", zip_code="06000", credits=2)
    stamps = await _stamps(platform)
    states = await _invoices(client, issuer, 3)
    statuses = sorted(s["status"] for s in states.values())
    assert statuses == ["emailed", "emailed", "rejected"], statuses
    assert await _stamps(platform) - stamps == 2
    balance = await _balance(client, issuer)
    assert (balance["available"], balance["reserved"], balance["consumed"], balance["granted"]) == (0, 0, 2, 2)
    assert balance["message"] == "Timbres disponibles: 0"
    ledger = (await client.http.get("/v1/billing/ledger", headers=issuer.headers)).json()["data"]
    assert sorted(e["entry"] for e in ledger) == ["commit", "commit", "grant", "reserve", "reserve"]
    emailed = {i for i, s in states.items() if s["status"] == "emailed"}
    assert {e["invoice_id"] for e in ledger if e["entry"] in ("reserve", "commit")} == emailed
    assert all(e["reason"] and e["actor"] for e in ledger)
    assert {e["actor"] for e in ledger if e["entry"] != "grant"} == {"pipeline"}


async def test_a_package_expires_into_the_ledger_and_stops_funding(client, platform) -> None:
    issuer = await client.onboard(rfc="VEN010101AA1", legal_name="PAQUETE VENCIDO", tax_regime="601", zip_code="06000", credits=0)
    ends = datetime.now(UTC) + timedelta(seconds=3)
    granted = await client.http.post("/v1/billing/credits", headers=client.admin, json={"issuer_id": issuer.id, "stamps": 5, "months": 12, "expires_at": ends.isoformat(), "reason": "migración de paquete anterior"})
    assert granted.status_code == 201, granted.text
    states = await _invoices(client, issuer, 1)
    assert [s["status"] for s in states.values()] == ["emailed"]
    await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
    (state,) = (await _invoices(client, issuer, 1)).values()
    assert state["status"] == "rejected" and state["message"].startswith("Sin folios")  # expired, even before the job runs
    run = (await client.http.post("/v1/billing/expiry/run", headers=client.admin)).json()
    assert run["expired"] >= 4
    balance = await _balance(client, issuer)
    assert (balance["available"], balance["consumed"], balance["expired"], balance["granted"]) == (0, 1, 4, 5)
    ledger = (await client.http.get("/v1/billing/ledger", headers=issuer.headers)).json()["data"]
    (expiry,) = [e for e in ledger if e["entry"] == "expire"]
    assert (expiry["quantity"], expiry["actor"]) == (4, "system:expiry") and "vencimiento" in expiry["reason"]
    assert (await client.http.post("/v1/billing/expiry/run", headers=client.admin)).json()["expired"] == 0
    (package,) = (await client.http.get("/v1/billing/packages", headers=issuer.headers)).json()["data"]
    assert (package["available"], package["expired"], package["consumed"]) == (0, 4, 1) and package["expired_at"]


async def test_low_balance_and_zero_are_emailed_once_each(client, platform) -> None:
    issuer = await client.onboard(rfc="ALE010101AA1", legal_name="ALERTAS", tax_regime="601", zip_code="06000", credits=0)
    settings = await client.http.put("/v1/billing/alerts", headers=issuer.headers, json={"threshold": 2, "emails": ["cobranza@alertas.mx"]})
    assert settings.status_code == 200 and settings.json() == {"threshold": 2, "emails": ["cobranza@alertas.mx"]}
    await client.http.post("/v1/billing/credits", headers=client.admin, json={"issuer_id": issuer.id, "stamps": 3})
    states = await _invoices(client, issuer, 4)
    assert sorted(s["status"] for s in states.values()) == ["emailed", "emailed", "emailed", "rejected"]
    expected = {f"<billing-low-balance-{issuer.id}-1@timbra.local>", f"<billing-zero-balance-{issuer.id}-1@timbra.local>"}
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:
        while True:
            mails = [m for m in (await sink.get("/api/messages")).json() if "cobranza@alertas.mx" in m["to"]]
            if {m["message_id"].strip() for m in mails} >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    assert sorted(m["message_id"].strip() for m in mails) == sorted(expected)
    low = next(m for m in mails if "low" in m["message_id"])
    assert "Timbres disponibles: 1" in low["subject"]


async def test_staff_adjustments_and_the_books_check(client, platform, books_checked_at_session_end) -> None:
    issuer = await client.onboard(rfc="AJU010101AA1", legal_name="AJUSTES", tax_regime="601", zip_code="06000", credits=10)
    taken = await client.http.post("/v1/billing/adjustments", headers=client.admin, json={"issuer_id": issuer.id, "quantity": -4, "reason": "cortesía otorgada por error"})
    assert taken.status_code == 201 and (taken.json()["available"], taken.json()["granted"]) == (6, 6)
    too_much = await client.http.post("/v1/billing/adjustments", headers=client.admin, json={"issuer_id": issuer.id, "quantity": -7, "reason": "más de lo disponible"})
    assert too_much.status_code == 409
    refused = await client.http.post("/v1/billing/adjustments", headers=issuer.headers, json={"issuer_id": issuer.id, "quantity": 100, "reason": "me regalo timbres"})
    assert refused.status_code == 403
    report = (await client.http.get("/v1/billing/books/check", headers=client.admin)).json()
    assert report["ok"] and report["accounts_checked"] >= 1 and report["mismatches"] == [], report
    assert (await client.http.get("/v1/billing/books/check", headers=issuer.headers)).status_code == 403
    assert await books_from_the_database(platform.mongodb_url) == []
