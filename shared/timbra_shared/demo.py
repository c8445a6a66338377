"""``timbra demo``: one invoice from nothing to an email, through the public API only."""

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx

from timbra_shared.devstack.scenario import TimbraClient


def _admin_key(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("TIMBRA_ADMIN_KEY"):
        return os.environ["TIMBRA_ADMIN_KEY"]
    path = Path(os.environ.get("TIMBRA_DATA_DIR", ".data")) / "admin_key"
    return path.read_text().strip()


async def run(url: str, admin_key: str) -> dict:
    async with TimbraClient(url, admin_key) as client:
        issuer = await client.onboard(credits=10)
        started = time.perf_counter()
        created = await client.create_invoice(issuer)
        created.raise_for_status()
        invoice_id = created.json()["id"]
        status = (await client.wait_final(issuer, [invoice_id], timeout=60, interval=0.05))[invoice_id]
        status["elapsed_s"] = round(time.perf_counter() - started, 3)
        status["api_key"] = issuer.api_key
        return status


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="timbra demo")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--admin-key")
    args = parser.parse_args(argv)
    try:
        status = asyncio.run(run(args.url, _admin_key(args.admin_key)))
    except (httpx.HTTPError, OSError) as exc:
        detail = getattr(getattr(exc, "response", None), "text", "")
        print(f"demo falló: {exc} {detail}", file=sys.stderr)
        return 1
    for step in status["timeline"]:
        print(f"{step['at']}  {step['status']:<12} {step['service']}")
    print(f"factura {status['id']}: {status['status']} UUID {status.get('uuid')} en {status['elapsed_s']} s")
    if status.get("errors"):
        for error in status["errors"]:
            print(f"  {error['code']}: {error['message']}")
    print(f"llave de API del emisor de prueba: {status['api_key']}")
    return 0 if status["status"] == "emailed" else 1
