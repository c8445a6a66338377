"""The per-key rate limit of the ingress: a second ingress process in front of the same services,
started with a low TIMBRA_RATE_LIMIT, answers 429 with Retry-After and the standard error body."""

import asyncio
import os
import subprocess
import sys

import httpx
import pytest
import pytest_asyncio

from timbra_shared.devstack import servers

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited_ingress(platform):  # noqa: ANN001, ANN201
    port = servers.free_port()
    env = {**os.environ, **platform.env_for("ingress"), "TIMBRA_HTTP_PORT": str(port), "TIMBRA_RATE_LIMIT": "2", "TIMBRA_RATE_BURST": "4"}
    log = open(platform.config.log_dir / "ingress-ratelimit.log", "ab")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "timbra_shared.ingress"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(300):
                try:
                    if (await http.get(url + "/healthz")).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def test_over_the_limit_answers_429_with_retry_after_per_key(client, issuer, limited_ingress) -> None:
    other = await client.onboard(rfc="RAT010101AB1", legal_name="OTRO LIMITE", tax_regime="601", zip_code="06000", credits=0)
    async with httpx.AsyncClient(base_url=limited_ingress, timeout=30) as http:
        burst = [await http.get("/v1/billing/balance", headers=issuer.headers) for _ in range(12)]
        codes = [r.status_code for r in burst]
        assert codes[:4] == [200] * 4, codes  # the burst
        assert 429 in codes, codes
        limited = next(r for r in burst if r.status_code == 429)
        body = limited.json()
        assert set(body) == {"ok", "message", "code", "errors"} and body["ok"] is False and body["code"] == "rate_limited"
        assert "Demasiadas solicitudes" in body["message"]
        retry_after = int(limited.headers["Retry-After"])
        assert retry_after >= 1

        # another key has its own bucket
        assert (await http.get("/v1/billing/balance", headers=other.headers)).status_code == 200
        # the public ingress of the platform runs with the (generous) default
        assert all(r.status_code == 200 for r in await asyncio.gather(*(client.http.get("/v1/billing/balance", headers=issuer.headers) for _ in range(12))))

        await asyncio.sleep(retry_after)
        assert (await http.get("/v1/billing/balance", headers=issuer.headers)).status_code == 200
