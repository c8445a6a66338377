"""Resilience from day one: a service killed mid-flight, and the broker restarted empty. Every
invoice must still reach ``emailed`` exactly once: one stamp, one email, one credit."""

import asyncio
import signal
import time

import pytest

from timbra_shared.devstack.chaos import assert_exactly_once, pac_stamp_count
from timbra_shared.devstack.scenario import TimbraClient, sample_invoice
from timbra_shared.ids import new_id

# Every invoice must also be rendered and emailed; PDF rendering paces these tests on a busy
# machine (quiet: about 3 minutes for both), so they get more than the default time limit.
pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]


async def _post_many(client: TimbraClient, issuer, count: int) -> list[str]:  # noqa: ANN001
    semaphore = asyncio.Semaphore(25)
    tag = new_id()

    async def one(n: int) -> str:
        async with semaphore:
            response = await client.create_invoice(issuer, sample_invoice(email=f"{tag}-{n}@example.com"))
            assert response.status_code == 202, response.text
            return response.json()["id"]

    return await asyncio.gather(*(one(n) for n in range(count)))


async def _wait_some(client: TimbraClient, issuer, ids: list[str], status: str, at_least: int, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = await client.wait_final(issuer, ids[:: max(1, len(ids) // 40)], until=frozenset({status, "rendered", "emailed"}), timeout=0.01)
        if sum(1 for s in states.values() if s["status"] in {status, "rendered", "emailed"}) >= at_least:
            return
        await asyncio.sleep(0.2)


async def test_killing_a_service_mid_flight_loses_and_duplicates_nothing(client, platform) -> None:
    issuer = await client.onboard(rfc="KIL010101AA1", legal_name="KILL TEST", tax_regime="601", zip_code="06000", credits=300)
    stamps_before = await pac_stamp_count(platform)
    ids = await _post_many(client, issuer, 200)
    await _wait_some(client, issuer, ids, "stamped", at_least=5)
    await platform.kill_service("stamping", sig=signal.SIGKILL)
    await asyncio.sleep(2)
    await platform.restart_service("stamping")
    await assert_exactly_once(client, platform, issuer, ids, stamps_before=stamps_before, credits=300)


async def test_broker_restarted_empty_every_invoice_completes_once(client, platform) -> None:
    issuer = await client.onboard(rfc="BRK010101AA1", legal_name="BROKER TEST", tax_regime="601", zip_code="06000", credits=150)
    stamps_before = await pac_stamp_count(platform)
    ids = await _post_many(client, issuer, 100)
    await _wait_some(client, issuer, ids, "stamped", at_least=3)
    await platform.restart_broker()
    await assert_exactly_once(client, platform, issuer, ids, stamps_before=stamps_before, credits=150)
