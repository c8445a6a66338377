"""SAT catalog search benchmark: latency of ``GET /v1/catalogs/{catalog}?q=`` through the public
API (ingress -> catalog service), idle and while the invoice pipeline is busy.

    .venv/bin/python bench/bench_catalog_search.py [--searches 700] [--concurrency 4] [--invoice-workers 4] [--compare N]

It starts its own platform (every service, mongod, the broker, sandbox PAC, SMTP sink) on free
ports in a temporary folder, then:
1. idle: fires the searches with nothing else running;
2. busy: keeps ``--invoice-workers`` clients posting invoices (each waits for the answer and
   posts the next, so the pipeline — build, seal, credit, stamp, PDF, email — stays loaded) and
   fires the same searches meanwhile. The invoice clients run in a process of their own, so the
   search timings do not include this script's own event loop being busy with the load.
The searches are what an autocomplete sends while someone types ("p", "pi", "pie", "piez",
"pieza"), across the seven catalogs, by code and by text, with and without accents; the busy
phase types other words than the idle one, so it does not just read the idle phase's cached
answers (repeats within a phase are cached, as they would be for many users typing).
It prints p50/p95/p99/max per catalog and overall for both phases, side by side, and the
invoices stamped during the busy phase. The target is p95 < 50 ms while the pipeline runs.

The platform runs its pipeline processes at a lower CPU priority than the ingress and the catalog
(``TIMBRA_BACKGROUND_NICE``, docs/devstack.md). ``--compare N`` measures N rounds of "every process
at nice 0" then "the platform's default", each on a fresh platform, and prints them side by side.
"""

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time

from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.scenario import Issuer, TimbraClient, sample_invoice

WORDS = {
    "product_keys": ["servicio", "consultoría", "camion", "computadora", "papel", "81112101", "8111", "libro", "medicamento", "gasolina"],
    "unit_keys": ["pieza", "servicio", "kilogramo", "litro", "H87", "E48", "metro", "caja"],
    "zip_codes": ["42501", "06600", "86991", "54700", "0100", "6450"],
    "tax_regimes": ["general", "sueldos", "601", "626", "simplificado", "arrendamiento"],
    "uses": ["gastos", "G03", "honorarios", "medicos", "S01", "adquisicion"],
    "payment_forms": ["efectivo", "transferencia", "03", "credito", "tarjeta", "99"],
    "currencies": ["MXN", "USD", "peso", "dolar", "euro"],
}


# Different words for the busy phase, so that its figures are not the idle phase's cached answers.
WORDS_BUSY = {
    "product_keys": ["mantenimiento", "transporte", "refacciones", "software", "43211", "alimentos", "cemento", "limpieza", "publicidad", "renta"],
    "unit_keys": ["hora", "actividad", "ACT", "KGM", "paquete", "tonelada", "unidad", "día"],
    "zip_codes": ["44100", "64000", "97000", "2200", "8000", "3100"],
    "tax_regimes": ["personas morales", "actividades", "612", "605", "dividendos", "resico"],
    "uses": ["mercancias", "I04", "equipo de computo", "colegiaturas", "D10", "sin efectos"],
    "payment_forms": ["cheque", "monedero", "04", "28", "condonacion", "por definir"],
    "currencies": ["EUR", "JPY", "yen", "libra", "franco"],
}


def queries(count: int, words_by_catalog: dict[str, list[str]] = WORDS) -> list[tuple[str, str]]:
    """Autocomplete keystrokes: every prefix of every word (from 1 character), round-robin."""
    per_catalog = [[(catalog, word[:n]) for word in words for n in range(1, len(word) + 1)] for catalog, words in words_by_catalog.items()]
    out: list[tuple[str, str]] = []
    i = 0
    while len(out) < count:
        bucket = per_catalog[i % len(per_catalog)]
        out.append(bucket[(i // len(per_catalog)) % len(bucket)])
        i += 1
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def fire(client: TimbraClient, issuer: Issuer, plan: list[tuple[str, str]], concurrency: int) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {}
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            catalog, q = queue.get_nowait()
            started = time.perf_counter()
            response = await client.http.get(f"/v1/catalogs/{catalog}", headers=issuer.headers, params={"q": q, "limit": 10})
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            latencies.setdefault(catalog, []).append(elapsed)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def invoices_forever(client: TimbraClient, issuer: Issuer, stop: asyncio.Event, posted: list[str]) -> None:
    while not stop.is_set():
        response = await client.create_invoice(issuer, sample_invoice())
        if response.status_code == 202:
            posted.append(response.json()["id"])
        await asyncio.sleep(0.05)


def post_invoices(url: str, admin_key: str, issuer: Issuer, workers: int, stop: "multiprocessing.synchronize.Event", out: "multiprocessing.Queue") -> None:
    """The busy phase's load, in its own process: ``workers`` clients posting until ``stop``."""

    async def run() -> list[str]:
        posted: list[str] = []
        done = asyncio.Event()
        async with TimbraClient(url, admin_key, timeout=120) as client:
            load = [asyncio.create_task(invoices_forever(client, issuer, done, posted)) for _ in range(workers)]
            while not stop.is_set():
                await asyncio.sleep(0.1)
            done.set()
            await asyncio.gather(*load)
        return posted

    out.put(asyncio.run(run()))


def table(idle: dict[str, list[float]], busy: dict[str, list[float]]) -> None:
    print(f"{'catalog':<15}{'n':>6} | {'idle p50':>9}{'p95':>8}{'p99':>8}{'max':>8} | {'busy p50':>9}{'p95':>8}{'p99':>8}{'max':>8}   (ms)")
    rows = [*WORDS, "ALL"]
    for catalog in rows:
        a = [v for vs in idle.values() for v in vs] if catalog == "ALL" else idle.get(catalog, [])
        b = [v for vs in busy.values() for v in vs] if catalog == "ALL" else busy.get(catalog, [])
        print(f"{catalog:<15}{len(b):>6} | {pct(a, 50):>9.1f}{pct(a, 95):>8.1f}{pct(a, 99):>8.1f}{max(a):>8.1f} | {pct(b, 50):>9.1f}{pct(b, 95):>8.1f}{pct(b, 99):>8.1f}{max(b):>8.1f}")


async def measure(searches: int, concurrency: int, invoice_workers: int, background_nice: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="timbra-bench-search-") as folder:
        config = PlatformConfig.for_tests(folder)
        if background_nice is not None:
            config.background_nice = background_nice
        async with Platform(config) as platform, TimbraClient(platform.url("ingress"), platform.admin_key, timeout=120) as client:
            issuer = await client.onboard(credits=100_000)
            plan = queries(searches)
            await fire(client, issuer, queries(70), concurrency)  # warm-up: connections, key cache, indexes
            idle = await fire(client, issuer, plan, concurrency)

            spawn = multiprocessing.get_context("spawn")
            stop, out = spawn.Event(), spawn.Queue()
            loader = spawn.Process(target=post_invoices, args=(platform.url("ingress"), platform.admin_key, issuer, invoice_workers, stop, out))
            loader.start()
            await asyncio.sleep(8)  # let the pipeline fill up
            started = time.monotonic()
            busy = await fire(client, issuer, queries(searches, WORDS_BUSY), concurrency)
            busy_s = time.monotonic() - started
            stop.set()
            posted: list[str] = await asyncio.to_thread(out.get)
            loader.join()
            states = await client.wait_final(issuer, posted, timeout=300)
            done = sum(1 for s in states.values() if s["status"] == "emailed")
        return {"nice": config.background_nice, "idle": idle, "busy": busy, "busy_s": busy_s, "posted": len(posted), "done": done}


def report(run: dict, searches: int, concurrency: int, invoice_workers: int) -> None:
    print(f"\ncatalog search through the ingress: {searches} searches per phase, {concurrency} concurrent clients, limit=10; "
          f"pipeline processes at nice {run['nice']} (TIMBRA_BACKGROUND_NICE)")
    print(f"busy phase: {run['busy_s']:.1f} s with {invoice_workers} clients posting invoices "
          f"({run['posted']} posted before the searches ended; {run['done']}/{run['posted']} reached emailed)")
    table(run["idle"], run["busy"])


async def main(searches: int, concurrency: int, invoice_workers: int, background_nice: int | None, compare: int) -> None:
    # --compare N: N rounds of (all processes at one priority, then the platform's default), one after the other
    settings = [background_nice] if not compare else [0, None] * compare
    runs = [await measure(searches, concurrency, invoice_workers, nice) for nice in settings]
    for run in runs:
        report(run, searches, concurrency, invoice_workers)
    if compare:
        print("\nside by side (busy phase, ALL):")
        for run in runs:
            xs = [v for vs in run["busy"].values() for v in vs]
            print(f"  nice {run['nice']:>2}: p50 {pct(xs, 50):6.1f}  p95 {pct(xs, 95):6.1f}  p99 {pct(xs, 99):6.1f} ms  ({run['posted']} invoices posted meanwhile)")
    all_busy = [v for vs in runs[-1]["busy"].values() for v in vs]
    print(f"search_p50_ms={pct(all_busy, 50):.1f} search_p95_ms={pct(all_busy, 95):.1f} mean_ms={statistics.fmean(all_busy):.1f} target_p95_ms=50")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--searches", type=int, default=700)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--invoice-workers", type=int, default=4)
    parser.add_argument("--background-nice", type=int, default=None, help="CPU priority of the pipeline processes (default: the platform's, TIMBRA_BACKGROUND_NICE or 10)")
    parser.add_argument("--compare", type=int, default=0, metavar="N", help="N rounds of: every process at nice 0, then the platform's default")
    args = parser.parse_args()
    asyncio.run(main(args.searches, args.concurrency, args.invoice_workers, args.background_nice, args.compare))
