"""What an idle platform costs: the CPU of every process over a window with nothing to do.

    .venv/bin/python bench/bench_idle.py [--seconds 30] [--settle 20] [--compare NAME=VALUE ...]

It starts the platform (every service, mongod, tansu, sandbox PAC, SMTP sink) on free ports in a
temporary folder, onboards one issuer and stamps a few invoices (so every consumer has joined its
group and fetched), waits ``--settle`` seconds, then reads each process's CPU time (psutil, the
process and its children) over ``--seconds``. With ``--compare`` it first does the same on a
platform started with those environment variables, and prints both side by side: percentages of
one core, per process and in total, and the ratio.

The idle cost is mostly the broker answering fetches: tansu answers a fetch only when its wait
expires, so every consumer costs a request per wait (``TIMBRA_KAFKA_FETCH_WAIT_MS``, and
``TIMBRA_KAFKA_BACKGROUND_FETCH_WAIT_MS`` for the consumers of ``topics.BACKGROUND_TOPICS``).
``--compare TIMBRA_KAFKA_BACKGROUND_FETCH_WAIT_MS=50`` shows what the longer background wait saves.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from bench_load import PROCESSES, Processes  # noqa: E402

from timbra_shared.devstack import Platform, PlatformConfig  # noqa: E402
from timbra_shared.devstack.scenario import TimbraClient, sample_invoice  # noqa: E402


async def idle_cpu(extra_env: dict[str, str], seconds: float, settle: float) -> dict[str, float]:
    """Percent of one core per process over ``seconds`` of idleness."""
    with tempfile.TemporaryDirectory(prefix="timbra-bench-idle-") as folder:
        config = PlatformConfig.for_tests(folder, extra_env=extra_env, health_timeout=600.0)
        async with Platform(config) as platform, TimbraClient(platform.url("ingress"), platform.admin_key, timeout=120) as client:
            issuer = await client.onboard(rfc="IDL010101AA1", legal_name="IDLE BENCH", tax_regime="601", zip_code="06000", credits=10)
            ids = [(await client.create_invoice(issuer, sample_invoice(email="idle@example.com"))).json()["id"] for _ in range(3)]
            states = await client.wait_final(issuer, ids, timeout=300)
            assert all(s["status"] == "emailed" for s in states.values()), states
            await asyncio.sleep(settle)
            procs = Processes(platform)
            cpu0, wall0 = procs.cpu(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, wall = procs.cpu(), time.monotonic() - wall0
            return {name: 100 * (cpu1[name] - cpu0[name]) / wall for name in cpu1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=VALUE", help="environment of the platform measured first")
    args = parser.parse_args()

    runs: dict[str, dict[str, float]] = {}
    if args.compare:
        label = " ".join(args.compare)
        runs[label] = asyncio.run(idle_cpu(dict(kv.split("=", 1) for kv in args.compare), args.seconds, args.settle))
    runs["defaults"] = asyncio.run(idle_cpu({}, args.seconds, args.settle))

    labels = list(runs)
    print(f"\nidle CPU, % of one core over {args.seconds:.0f} s (load average {os.getloadavg()[0]:.1f})")
    print(f"{'process':<15}" + "".join(f"{label[:34]:>36}" for label in labels))
    for name in PROCESSES:
        if any(name in run for run in runs.values()):
            print(f"{name:<15}" + "".join(f"{runs[label].get(name, 0.0):36.1f}" for label in labels))
    totals = {label: sum(run.values()) for label, run in runs.items()}
    print(f"{'total':<15}" + "".join(f"{totals[label]:36.1f}" for label in labels))
    if len(labels) == 2:
        print(f"ratio defaults / first: {totals['defaults'] / totals[labels[0]]:.2f}")
    print(f"idle_cpu_percent_of_one_core={totals['defaults']:.1f}")


if __name__ == "__main__":
    main()
