"""Pipeline benchmark: end-to-end latency of one invoice, and of a burst, through the whole
platform (real mongod, real Kafka-protocol broker, every service, sandbox PAC, SMTP sink).

    .venv/bin/python bench/bench_pipeline.py [--burst 1000] [--singles 10]

It starts its own platform on free ports in a temporary folder, prints its figures, and ends
with ``throughput_stamped_per_s=<number>``.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime

from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.scenario import TimbraClient, sample_invoice
from timbra_shared.mongo import make_client


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _at(state: dict, status: str) -> datetime | None:
    for step in state["timeline"]:
        if step["status"] == status:
            return datetime.fromisoformat(step["at"])
    return None


def _stage_latencies(states: list[dict], start: str, end: str) -> list[float]:
    out = []
    for state in states:
        a, b = _at(state, start), _at(state, end)
        if a and b:
            out.append((b - a).total_seconds())
    return out


def _report(name: str, values: list[float]) -> None:
    if values:
        print(f"  {name:<22} p50={_pct(values, 50) * 1000:8.1f} ms  p95={_pct(values, 95) * 1000:8.1f} ms  p99={_pct(values, 99) * 1000:8.1f} ms  (n={len(values)})")


async def run(burst: int, singles: int, partitions: int) -> None:
    with tempfile.TemporaryDirectory(prefix="timbra-bench-") as folder:
        config = PlatformConfig.for_tests(folder, partitions=partitions)
        async with Platform(config) as platform, TimbraClient(platform.url("ingress"), platform.admin_key, timeout=120) as client:
            issuer = await client.onboard(credits=burst + singles + 10)
            warm = await client.create_invoice(issuer)
            await client.wait_final(issuer, [warm.json()["id"]], timeout=60)

            single_latencies = []
            for _ in range(singles):
                started = time.perf_counter()
                invoice_id = (await client.create_invoice(issuer)).json()["id"]
                state = (await client.wait_final(issuer, [invoice_id], timeout=60, interval=0.02))[invoice_id]
                assert state["status"] == "emailed", state
                single_latencies.append(time.perf_counter() - started)
            print(f"single invoice, HTTP POST -> emailed (polled every 20 ms), {singles} sequential runs:")
            print(f"  median={statistics.median(single_latencies) * 1000:.0f} ms  min={min(single_latencies) * 1000:.0f} ms  max={max(single_latencies) * 1000:.0f} ms")

            semaphore = asyncio.Semaphore(50)

            async def post() -> str:
                async with semaphore:
                    response = await client.create_invoice(issuer, sample_invoice())
                    response.raise_for_status()
                    return response.json()["id"]

            started = time.perf_counter()
            ids = await asyncio.gather(*(post() for _ in range(burst)))
            accepted_s = time.perf_counter() - started
            # Progress is read from the builder's read model directly, so measuring adds no API load.
            mongo = make_client(platform.mongodb_url)
            invoices = mongo["timbra_cfdi_builder"]["invoices"]
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline and await invoices.count_documents({"_id": {"$in": ids}, "status": {"$in": ["emailed", "rejected", "stamp_failed"]}}) < burst:
                await asyncio.sleep(1.0)
            await mongo.close()
            states = list((await client.wait_final(issuer, ids, timeout=120, sample=50)).values())
            done = sum(1 for s in states if s["status"] == "emailed")
            first = min(_at(s, "requested") for s in states)
            last_stamped = max(_at(s, "stamped") for s in states if _at(s, "stamped"))
            last_emailed = max(_at(s, "emailed") for s in states if _at(s, "emailed"))
            stamped_span = (last_stamped - first).total_seconds()
            emailed_span = (last_emailed - first).total_seconds()
            print(f"\nburst of {burst} invoices ({partitions} partitions per topic), posted with 50 concurrent clients in {accepted_s:.1f} s:")
            print(f"  emailed {done}/{burst}; all stamped after {stamped_span:.1f} s, all emailed after {emailed_span:.1f} s")
            print(f"  throughput requested->stamped {burst / stamped_span:.1f}/s, requested->emailed {burst / emailed_span:.1f}/s")
            print("  per-invoice latency during the burst:")
            _report("requested->stamped", _stage_latencies(states, "requested", "stamped"))
            _report("requested->emailed", _stage_latencies(states, "requested", "emailed"))
            for a, b in (("requested", "built"), ("built", "sealed"), ("sealed", "funded"), ("funded", "stamped"), ("stamped", "rendered"), ("rendered", "emailed")):
                _report(f"{a}->{b}", _stage_latencies(states, a, b))
            print(f"throughput_stamped_per_s={burst / stamped_span:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(run(args.burst, args.singles, args.partitions))


if __name__ == "__main__":
    main()
