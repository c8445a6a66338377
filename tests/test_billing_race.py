"""1,000 invoices race for 600 credits on the real platform: exactly 600 are stamped and 400
rejected with "Sin folios disponibles"; no credit is lost or spent twice."""

import asyncio
import time

import httpx
import pytest
from pymongo import AsyncMongoClient

from timbra_shared.devstack.scenario import TimbraClient, sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(1800)]

INVOICES, CREDITS, CLIENTS = 1000, 600, 50


async def _stamps(platform) -> int:  # noqa: ANN001
    async with httpx.AsyncClient(timeout=30) as http:
        return (await http.get(platform.url("sandbox-pac") + "/healthz")).json()["stamps"]


async def _wait_final(client: TimbraClient, issuer, ids: list[str], timeout: float) -> dict[str, dict]:  # noqa: ANN001
    """``wait_final``, started again when a pooled keep-alive connection is dropped under load."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.wait_final(issuer, ids, timeout=max(1.0, deadline - time.monotonic()), interval=1.0, sample=50)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


@pytest.mark.timeout(2700)  # minutes on a quiet machine; far longer when several platforms share 2 cores
async def test_1000_invoices_race_for_600_credits(client: TimbraClient, platform) -> None:  # noqa: ANN001
    issuer = await client.onboard(rfc="RAC010101AA1", legal_name="CARRERA DE CREDITOS", tax_regime="601", zip_code="06000", credits=CREDITS)
    stamps_before = await _stamps(platform)
    tag = new_id()
    semaphore = asyncio.Semaphore(CLIENTS)

    async def post(n: int) -> str:
        # under load a keep-alive connection can be dropped (the ingress then answers 503
        # "intenta de nuevo", or our own connection to it resets); the idempotency key makes the
        # retry safe: the same invoice comes back (200), never a second one
        body = sample_invoice(email=f"{tag}-{n}@example.com", idempotency_key=f"{tag}-{n}")
        async with semaphore:
            for attempt in range(6):
                try:
                    response = await client.create_invoice(issuer, body)
                except httpx.TransportError:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                if response.status_code != 503:
                    break
                await asyncio.sleep(0.5 * (attempt + 1))
            assert response.status_code in (200, 201, 202), response.text
            return response.json()["id"]

    started = time.monotonic()
    ids = await asyncio.gather(*(post(n) for n in range(INVOICES)))
    assert len(set(ids)) == INVOICES
    states = await _wait_final(client, issuer, ids, timeout=2400)
    elapsed = time.monotonic() - started

    statuses = [s["status"] for s in states.values()]
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert counts == {"emailed": CREDITS, "rejected": INVOICES - CREDITS}, counts
    rejected = [s for s in states.values() if s["status"] == "rejected"]
    assert all(s["message"].startswith("Sin folios disponibles") and [e["code"] for e in s["errors"]] == ["TIMBRA_NO_CREDITS"] for s in rejected)
    assert len({s["uuid"] for s in states.values() if s["status"] == "emailed"}) == CREDITS
    assert await _stamps(platform) - stamps_before == CREDITS, "the PAC stamped a different number of CFDIs"

    balance = (await client.http.get("/v1/billing/balance", headers=issuer.headers)).json()
    assert {k: balance[k] for k in ("available", "reserved", "consumed", "expired", "granted")} == {"available": 0, "reserved": 0, "consumed": CREDITS, "expired": 0, "granted": CREDITS}, balance
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        ledger = await mongo["timbra_billing"]["ledger"].find({"issuer_id": issuer.id}).to_list(None)
    finally:
        await mongo.close()
    reserves = [e["invoice_id"] for e in ledger if e["entry"] == "reserve"]
    commits = [e["invoice_id"] for e in ledger if e["entry"] == "commit"]
    assert len(reserves) == len(set(reserves)) == CREDITS, "a credit was reserved twice for one invoice, or lost"
    assert len(commits) == len(set(commits)) == CREDITS and set(commits) == set(reserves)
    assert {e["entry"] for e in ledger} == {"grant", "reserve", "commit"}
    assert set(reserves) == {i for i, s in states.items() if s["status"] == "emailed"}
    books = (await client.http.get("/v1/billing/books/check", headers=client.admin)).json()
    assert books["ok"], books["mismatches"]
    print(f"\nrace: {INVOICES} invoices for {CREDITS} credits settled in {elapsed:.0f} s")
