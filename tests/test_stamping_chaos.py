"""A PAC outage against the real platform (its own, module-scoped): 60 seconds (30 s of 503 "SAT
no disponible", then 30 s of refused connections) with invoices flowing in throughout, then
recovery. Every invoice ends stamped once, and the retries show in metrics and traces."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.scenario import Issuer, TimbraClient, sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module")]

ENV = {
    "TIMBRA_STUCK_AFTER": "6", "TIMBRA_SWEEP_INTERVAL": "1", "TIMBRA_OUTBOX_POLL": "0.5",
    "TIMBRA_PAC_TIMEOUT": "2", "TIMBRA_STAMP_WORKERS": "64", "TIMBRA_STAMP_POLL": "0.2",
    "TIMBRA_STAMP_BACKOFF_BASE": "0.5", "TIMBRA_STAMP_BACKOFF_MAX": "8",
    "TIMBRA_PAC_BREAKER_OPEN": "2", "TIMBRA_PAC_BREAKER_MAX_OPEN": "8",
}
STAMPED = frozenset({"stamped", "rendered", "emailed"})
FINAL = STAMPED | {"stamp_failed", "rejected"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    config = PlatformConfig.for_tests(tmp_path_factory.mktemp("stamping-chaos"), extra_env=ENV)
    async with Platform(config) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(platform: Platform) -> AsyncIterator[TimbraClient]:
    async with TimbraClient(platform.url("ingress"), platform.admin_key, timeout=60) as api:
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pac(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.url("sandbox-pac"), timeout=10, headers={"Authorization": "Bearer sandbox-token"}) as http:
        yield http


async def _pac_health(pac: httpx.AsyncClient) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            return (await pac.get("/healthz")).json()
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the sandbox PAC did not come back"
            await asyncio.sleep(0.5)


async def _post(client: TimbraClient, issuer: Issuer, tag: str, n: int) -> str:
    response = await client.create_invoice(issuer, sample_invoice(email=f"{tag}-{n}@example.com"))
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def _metric(platform: Platform, name: str) -> float:
    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(platform.url("stamping") + "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


async def _wait_all(client: TimbraClient, issuer: Issuer, ids: list[str], timeout: float) -> dict[str, dict]:
    states = await client.wait_final(issuer, ids, until=FINAL, timeout=timeout, interval=1.0, sample=50)
    statuses = [s["status"] for s in states.values()]
    assert all(s in STAMPED for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    return states


def _spans(platform: Platform) -> list[dict]:
    records = []
    for path in Path(platform.config.trace_dir).glob("stamping-*.jsonl"):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


async def test_a_60_second_outage_loses_nothing_and_retries_are_visible(client, platform, pac):
    issuer = await client.onboard(rfc="OUT010101AA1", legal_name="OUTAGE TEST", tax_regime="601", zip_code="06000", credits=1000)
    stamps_before = (await _pac_health(pac))["stamps"]
    retries_before = await _metric(platform, "timbra_stamp_retries_total")
    tag, ids, stop = new_id(), [], asyncio.Event()
    phase = ["before"]
    per_phase: dict[str, int] = {}

    async def flow() -> None:  # up to four invoices a second, before, during and after the outage
        n = 0
        while not stop.is_set():
            current = phase[0]
            ids.append(await _post(client, issuer, tag, n))
            per_phase[current] = per_phase.get(current, 0) + 1
            n += 1
            await asyncio.sleep(0.25)

    poster = asyncio.create_task(flow())
    await asyncio.sleep(5)
    await pac.put("/admin/faults", json={"mode": "outage"})  # 503 "SAT no disponible"
    phase[0] = "503"
    await asyncio.sleep(30)
    await pac.put("/admin/faults", json={"mode": "refuse", "refuse_for_s": 30})  # connection refused
    phase[0] = "refused"
    await asyncio.sleep(2)
    async with httpx.AsyncClient() as fresh:
        with pytest.raises(httpx.ConnectError):  # refused, not answered
            await fresh.get(platform.url("sandbox-pac") + "/healthz")
    await asyncio.sleep(28)
    health = await _pac_health(pac)  # it listens again by itself
    assert health["faults"]["mode"] == "none"
    phase[0] = "after"
    await asyncio.sleep(5)
    stop.set()
    await poster
    assert min(per_phase.get(p, 0) for p in ("before", "503", "refused", "after")) >= 3, per_phase  # requests flowed throughout

    states = await _wait_all(client, issuer, ids, timeout=120)
    uuids = {s["uuid"] for s in states.values()}
    assert len(uuids) == len(ids), "an invoice got two UUIDs or two invoices share one"
    assert (await _pac_health(pac))["stamps"] - stamps_before == len(ids)
    assert await _metric(platform, "timbra_stamp_retries_total") - retries_before > len(ids) / 4
    assert await _metric(platform, 'timbra_pac_breaker_transitions_total{pac="sandbox",state="open"}') >= 1
    assert await _metric(platform, "timbra_pac_breaker_state") == 0  # closed again
    await asyncio.sleep(1)  # span export interval
    ours = set(ids)
    failed_attempts = [s for s in _spans(platform) if s["name"] == "stamping.attempt" and s["attributes"].get("invoice_id") in ours and s["status"] == "ERROR"]
    assert failed_attempts, "retries must be visible in the traces"
    balance = (await client.http.get("/v1/billing/balance", headers=issuer.headers)).json()
    deadline = time.monotonic() + 30
    while balance["consumed"] != len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        balance = (await client.http.get("/v1/billing/balance", headers=issuer.headers)).json()
    assert balance["consumed"] == len(ids) and balance["reserved"] == 0, balance
