"""Fixtures for the integration and end-to-end tiers: a real platform (embedded mongod, the
tansu broker, every service, the sandbox PAC and the SMTP sink) started by the test run itself."""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.scenario import Issuer, TimbraClient

# The sweeper re-drives quickly in tests so that broker-loss scenarios finish in seconds.
FAST_SWEEP = {"TIMBRA_STUCK_AFTER": "6", "TIMBRA_SWEEP_INTERVAL": "1", "TIMBRA_OUTBOX_POLL": "0.5"}
# Cancellation: SAT status polls and PAC retries every second at most, and a lease that a killed
# instance gives up within seconds (the sandbox PAC compresses SAT's clocks per test).
FAST_CANCELLATION = {
    "TIMBRA_CANCEL_POLL_BASE": "0.3", "TIMBRA_CANCEL_POLL_MAX": "1", "TIMBRA_CANCEL_RETRY_BASE": "0.3", "TIMBRA_CANCEL_RETRY_MAX": "1",
    "TIMBRA_CANCEL_PAC_TIMEOUT": "3", "TIMBRA_CANCEL_LEASE": "2",
}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    config = PlatformConfig.for_tests(tmp_path_factory.mktemp("platform"), extra_env={**FAST_SWEEP, **FAST_CANCELLATION})
    async with Platform(config) as running:
        yield running


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(platform: Platform) -> AsyncIterator[TimbraClient]:
    async with TimbraClient(platform.url("ingress"), platform.admin_key) as api:
        yield api


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def issuer(client: TimbraClient) -> Issuer:
    return await client.onboard(credits=5000)


def read_jsonl(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


@pytest.fixture
def spans(platform: Platform):  # noqa: ANN201
    return lambda: read_jsonl(platform.config.trace_dir)
