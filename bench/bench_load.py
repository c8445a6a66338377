"""Load benchmark (issue 12): the whole platform under a stream of invoice requests.

    .venv/bin/python bench/bench_load.py [--invoices 1000] [--issuers 50] [--no-double]
                                         [--offered 100 --offered-seconds 10] [--via kafka|http]
                                         [--until stamped|emailed] [--compare] [--profile DIR]
                                         [--env NAME=VALUE]

`make bench` runs it (ARGS='...' passes options; the issue's full run is ``--invoices 20000``).
It starts its own platform (``make up``'s processes on free ports in a temporary folder: real
mongod, tansu, every service, the sandbox PAC and the SMTP sink), onboards ``--issuers`` issuers
(each its own CSD and credits), and then:

1. **burst** of ``--invoices`` requests with realistic variety (1–30 concepts, mixed taxes: IVA
   16 %, 0 % and exento, IEPS, ISR and IVA withholdings; personas morales and físicas; some
   egresos; some público en general with InformacionGlobal; some Pagos 2.0 receipts for 1–3
   earlier PPD invoices), offered all at once;
2. **doubling**: the same with twice as many (skip with ``--no-double``), to show how the cost
   per invoice grows with the load and with the size of the collections;
3. **offered load**: ``--offered`` requests per second for ``--offered-seconds`` (0 skips it),
   to see the latency requested -> stamped when the platform is not saturated.

``--compare`` first runs everything on a platform with batching switched off
(``TIMBRA_BATCH_CONSUME=0 TIMBRA_GROUP_COMMIT=0``: FastStream's message-at-a-time consumers and
one transaction per event, as before docs/performance.md's changes), then on the defaults, and
prints both side by side (same machine, minutes apart: compare ratios, not absolute figures).

Requests enter as ``InvoiceRequested`` events on ``invoice.requested`` (``--via kafka``, the
path Kafka producers use; the HTTP API writes the same event through its outbox) or through the
public HTTP API (``--via http``, 50 concurrent clients). Every figure comes from the builder's
read model (each step's time is the time of the event that produced it), CPU time from psutil
on each process (services, sandbox PAC, SMTP sink, mongod, tansu), counted from the first
request to the end of the phase, divided by the invoices stamped. ``--profile DIR`` records
a py-spy profile (speedscope JSON, and a summary of the functions at the top of the stack) of
the pipeline's services during the first burst. The last line is
``throughput_stamped_per_s=<number>``: the first burst's sustained requested -> stamped rate
(10 %–90 % of the stamps).
"""

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import profiling
import psutil
from aiokafka import AIOKafkaProducer

from timbra_shared import topics
from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.scenario import Issuer, TimbraClient
from timbra_shared.events import InvoiceRequest, InvoiceRequested
from timbra_shared.ids import new_id
from timbra_shared.mongo import make_client

PROCESSES = ("cfdi-builder", "issuer-profile", "billing", "stamping", "notifier", "catalog", "cancellation", "ingress", "sandbox-pac", "smtp-sink", "mongod", "tansu")
PROFILED = ("cfdi-builder", "issuer-profile", "billing", "stamping", "notifier")
FINAL = ("emailed", "rejected", "stamp_failed", "canceled")
STAGES = (("requested", "built"), ("built", "sealed"), ("sealed", "funded"), ("funded", "stamped"), ("stamped", "rendered"), ("rendered", "emailed"))

# SAT's test RFCs; each issuer gets its own CSD for one of them
ISSUER_TEMPLATES = (
    ("EKU9003173C9", "ESCUELA KEMPER URGATE", "601", "42501"),
    ("XIA190128J61", "XENON INDUSTRIAL ARTICLES", "601", "76343"),
    ("IIA040805DZ4", "INDISTRIA ILUMINADORA DE ALMACENES", "601", "62661"),
    ("CACX7605101P8", "XOCHILT CASAS CHAVEZ", "612", "36257"),
    ("FUNK671228PH6", "KARLA FUENTE NOLASCO", "612", "01160"),
)
CUSTOMERS = (
    {"rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO DE CUAUTITLAN IZCALLI", "tax_regime": "603", "zip": "54700", "use": "G03"},
    {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991", "use": "G03"},
    {"rfc": "XIA190128J61", "legal_name": "XENON INDUSTRIAL ARTICLES", "tax_regime": "601", "zip": "76343", "use": "G01"},
    {"rfc": "CACX7605101P8", "legal_name": "XOCHILT CASAS CHAVEZ", "tax_regime": "612", "zip": "36257", "use": "G03"},
    {"rfc": "FUNK671228PH6", "legal_name": "KARLA FUENTE NOLASCO", "tax_regime": "605", "zip": "01160", "use": "D10"},
)
TAXES = (
    (50, [{"type": "IVA", "rate": "0.16"}]),
    (15, [{"type": "IVA", "rate": "0.16"}, {"type": "ISR", "rate": "0.10", "withholding": True}, {"type": "IVA", "rate": "0.106667", "withholding": True}]),
    (10, [{"type": "IVA", "rate": "0.00"}]),
    (10, [{"type": "IVA", "factor": "Exento"}]),
    (10, [{"type": "IEPS", "rate": "0.08"}, {"type": "IVA", "rate": "0.16"}]),
    (5, [{"type": "IVA", "rate": "0.16"}, {"type": "ISR", "rate": "0.0125", "withholding": True}]),
)
PRODUCTS = (("81112101", "E48", "Servicio de consultoría"), ("43211503", "H87", "Computadora portátil"), ("50202306", "H87", "Refresco 600 ml"),
            ("78101802", "E48", "Flete terrestre"), ("80131502", "E48", "Arrendamiento de oficina"), ("44121618", "H87", "Tijeras"))


def _weighted(rng: random.Random, options: tuple[tuple[int, Any], ...]) -> Any:
    return rng.choices([o for _, o in options], weights=[w for w, _ in options])[0]


def _concepts(rng: random.Random) -> int:
    roll = rng.random()
    return rng.randint(1, 3) if roll < 0.6 else rng.randint(4, 10) if roll < 0.9 else rng.randint(11, 30)


def make_request(rng: random.Random, n: int) -> tuple[dict[str, Any], str]:
    """One request body and its kind: ingreso, egreso, global (público en general) or pagos."""
    roll = rng.random()
    kind = "pagos" if roll < 0.02 else "global" if roll < 0.12 else "egreso" if roll < 0.17 else "ingreso"
    items = []
    for i in range(_concepts(rng)):
        key, unit, description = PRODUCTS[rng.randrange(len(PRODUCTS))]
        taxes = _weighted(rng, TAXES) if kind != "global" else [{"type": "IVA", "rate": "0.16"}]
        if key == "50202306" and kind != "global":
            taxes = [{"type": "IEPS", "rate": "0.08"}, {"type": "IVA", "rate": "0.16"}]
        price = Decimal(rng.randint(100, 500_000)) / 100
        items.append({
            "product": {"description": f"{description} {n}-{i}", "product_key": "01010101" if kind == "global" else key, "unit_key": "ACT" if kind == "global" else unit,
                        "price": str(price), "taxes": taxes},
            "quantity": str(rng.randint(1, 12)),
        })
    if kind == "global":
        today = datetime.now(UTC)
        return {"type": "I", "global": {"periodicity": "04", "months": f"{today.month:02d}", "year": today.year}, "items": items,
                "payment_form": "01", "payment_method": "PUE", "emails": ["contabilidad@example.com"]}, kind
    customer = dict(CUSTOMERS[rng.randrange(len(CUSTOMERS))], email=f"cliente{n % 97}@example.com")
    if kind == "pagos":  # a Pagos 2.0 receipt for 1–3 earlier PPD invoices
        documents = []
        for d in range(rng.randint(1, 3)):
            balance = Decimal(rng.randint(10_000, 900_000)) / 100
            documents.append({"uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "installment": rng.randint(1, 3), "previous_balance": str(balance),
                              "amount_paid": str((balance / rng.choice([1, 2, 4])).quantize(Decimal("0.01"))), "serie": "A", "folio": str(1000 + n + d)})
        payment = {"date": datetime.now(UTC).replace(microsecond=0, tzinfo=None).isoformat(), "payment_form": "03",
                   "amount": str(sum(Decimal(doc["amount_paid"]) for doc in documents)), "related_documents": documents}
        return {"type": "P", "customer": customer, "payments": [payment]}, kind
    body: dict[str, Any] = {"type": "E" if kind == "egreso" else "I", "customer": customer, "items": items,
                            "payment_form": rng.choice(["01", "03", "04", "28"]), "payment_method": "PUE"}
    if kind == "ingreso" and rng.random() < 0.2:
        body.update(payment_method="PPD", payment_form="99")
    return body, kind


# --------------------------------------------------------------------------------------------- measuring

def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def _at(doc: dict[str, Any], status: str) -> datetime | None:
    for step in doc.get("timeline") or []:
        if step["status"] == status:
            at = step["at"]
            return at if at.tzinfo else at.replace(tzinfo=UTC)
    return None


class Processes:
    """psutil handles of every process of the platform (a service and its children)."""

    def __init__(self, platform: Platform) -> None:
        self.procs: dict[str, psutil.Process] = {}
        for name in PROCESSES:
            pid = platform.pid(name)
            if pid:
                self.procs[name] = psutil.Process(pid)
        self.max_rss: dict[str, int] = {}

    def _tree(self, name: str) -> list[psutil.Process]:
        proc = self.procs[name]
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu(self) -> dict[str, float]:
        out = {}
        for name in self.procs:
            total = 0.0
            for p in self._tree(name):
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            out[name] = total
        return out

    def sample_rss(self) -> None:
        for name in self.procs:
            rss = 0
            for p in self._tree(name):
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            self.max_rss[name] = max(self.max_rss.get(name, 0), rss)


class Bench:
    def __init__(self, platform: Platform, client: TimbraClient, issuers: list[Issuer], args: argparse.Namespace) -> None:
        self.platform = platform
        self.client = client
        self.issuers = issuers
        self.args = args
        self.rng = random.Random(args.seed)
        self.procs = Processes(platform)
        self.mongo = make_client(platform.mongodb_url)
        self.invoices = self.mongo["timbra_cfdi_builder"]["invoices"]
        self.producer: AIOKafkaProducer | None = None
        self.counter = 0

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.platform.kafka_bootstrap, linger_ms=5, enable_idempotence=False, max_batch_size=1 << 20)
        await self.producer.start()

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        await self.mongo.close()

    def requests(self, count: int) -> list[tuple[Issuer, dict[str, Any], str]]:
        out = []
        for _ in range(count):
            self.counter += 1
            body, kind = make_request(self.rng, self.counter)
            out.append((self.issuers[self.rng.randrange(len(self.issuers))], body, kind))
        return out

    async def send(self, batch: list[tuple[Issuer, dict[str, Any], str]]) -> list[str]:
        if self.args.via == "http":
            semaphore = asyncio.Semaphore(50)

            async def post(issuer: Issuer, body: dict[str, Any]) -> str:
                async with semaphore:
                    response = await self.client.create_invoice(issuer, body)
                    response.raise_for_status()
                    return response.json()["id"]

            return list(await asyncio.gather(*(post(i, b) for i, b, _ in batch)))
        assert self.producer is not None
        ids, futures = [], []
        for issuer, body, _ in batch:
            event = InvoiceRequested(invoice_id=new_id("inv_"), issuer_id=issuer.id, request=InvoiceRequest.model_validate(body), source="kafka")
            ids.append(event.invoice_id)
            futures.append(await self.producer.send(topics.INVOICE_REQUESTED, event.model_dump_json().encode(), key=event.invoice_id.encode(),
                                                    headers=[("content-type", b"application/json")]))
        await asyncio.gather(*futures)
        return ids

    async def wait(self, ids: list[str], timeout: float) -> None:
        final = list(FINAL) if self.args.until == "emailed" else ["stamped", "rendered", *FINAL]
        query = {"_id": {"$gte": min(ids), "$lte": max(ids)}, "status": {"$in": final}}
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            self.procs.sample_rss()
            done = await self.invoices.count_documents(query)
            if done >= len(ids):
                return
            if done != last:
                last = done
            await asyncio.sleep(2.0)
        print(f"  !! timed out: {last}/{len(ids)} final after {timeout:.0f} s")

    async def states(self, ids: list[str]) -> list[dict[str, Any]]:
        return await self.invoices.find({"_id": {"$gte": min(ids), "$lte": max(ids)}}, projection={"timeline": 1, "status": 1, "errors": 1}).to_list(None)

    def profile(self, seconds: int) -> list[subprocess.Popen]:
        if not self.args.profile:
            return []
        return profiling.record({name: self.procs.procs[name].pid for name in PROFILED if name in self.procs.procs}, self.args.profile, seconds)

    async def burst(self, count: int, label: str, *, profile: bool = False) -> dict[str, Any]:
        batch = self.requests(count)
        kinds: dict[str, int] = {}
        for _, _, kind in batch:
            kinds[kind] = kinds.get(kind, 0) + 1
        load0 = os.getloadavg()
        cpu0, wall0 = self.procs.cpu(), time.monotonic()
        machine0 = psutil.cpu_times()
        spies = self.profile(self.args.profile_seconds) if profile else []
        started = time.monotonic()
        ids = await self.send(batch)
        offered_s = time.monotonic() - started
        await self.wait(ids, timeout=self.args.timeout)
        for spy in spies:
            spy.wait()
        wall = time.monotonic() - wall0
        cpu1 = self.procs.cpu()
        machine1 = psutil.cpu_times()
        busy = (sum(machine1) - machine1.idle - machine1.iowait) - (sum(machine0) - machine0.idle - machine0.iowait)
        states = await self.states(ids)
        result = self.report(label, count, kinds, states, offered_s)
        result["cpu"] = {name: (cpu1[name] - cpu0.get(name, 0.0)) for name in cpu1}
        result["wall"] = wall
        result["machine_busy"] = busy
        print(f"  load average before {load0[0]:.1f}, after {os.getloadavg()[0]:.1f}; machine busy {busy:.0f} CPU-s of {wall * psutil.cpu_count():.0f} in {wall:.0f} s")
        self.print_cpu(result, count)
        return result

    def report(self, label: str, count: int, kinds: dict[str, int], states: list[dict[str, Any]], offered_s: float) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for s in states:
            by_status[s["status"]] = by_status.get(s["status"], 0) + 1
        requested = [t for s in states if (t := _at(s, "requested"))]
        first = min(requested)
        stamped = sorted(t for s in states if (t := _at(s, "stamped")))
        emailed = sorted(t for s in states if (t := _at(s, "emailed")))

        def rates(times: list[datetime]) -> tuple[float, float]:
            if len(times) < 2:
                return float("nan"), float("nan")
            overall = len(times) / max(1e-3, (times[-1] - first).total_seconds())
            lo, hi = times[len(times) // 10], times[(len(times) * 9) // 10]
            steady = (len(times) * 8 // 10) / max(1e-3, (hi - lo).total_seconds())
            return overall, steady

        stamped_rate, stamped_steady = rates(stamped)
        emailed_rate, emailed_steady = rates(emailed)
        print(f"\n{label}: {count} requests {kinds} offered in {offered_s:.1f} s via {self.args.via}")
        print(f"  final statuses {by_status}")
        rejected = {}
        for s in states:
            if s["status"] in ("rejected", "stamp_failed"):
                code = (s.get("errors") or [{}])[0].get("code", "?")
                rejected[code] = rejected.get(code, 0) + 1
        if rejected:
            print(f"  rejections by code {rejected}")
        if stamped:
            print(f"  all stamped after {(stamped[-1] - first).total_seconds():.1f} s, all emailed after {((emailed[-1] - first).total_seconds() if emailed else float('nan')):.1f} s")
        print(f"  throughput requested->stamped {stamped_rate:.1f}/s (steady 10-90 %: {stamped_steady:.1f}/s); requested->emailed {emailed_rate:.1f}/s (steady {emailed_steady:.1f}/s)")
        latencies = {}
        for a, b in (("requested", "stamped"), ("requested", "emailed"), *STAGES):
            values = [(tb - ta).total_seconds() for s in states if (ta := _at(s, a)) and (tb := _at(s, b))]
            latencies[f"{a}->{b}"] = values
            if values:
                print(f"  {a + '->' + b:<22} p50={_pct(values, 50) * 1000:9.1f} ms  p95={_pct(values, 95) * 1000:9.1f} ms  p99={_pct(values, 99) * 1000:9.1f} ms  (n={len(values)})")
        return {"stamped_rate": stamped_rate, "stamped_steady": stamped_steady, "emailed_rate": emailed_rate, "emailed_steady": emailed_steady,
                "stamped": len(stamped), "emailed": len(emailed), "latencies": latencies}

    def print_cpu(self, result: dict[str, Any], count: int) -> None:
        stamped = max(1, result["stamped"])
        parts = [f"{name} {cpu * 1000 / stamped:.1f}" for name, cpu in sorted(result["cpu"].items(), key=lambda kv: -kv[1]) if cpu > 0.05]
        total = sum(result["cpu"].values())
        print(f"  CPU ms per stamped invoice (first request to the end of the phase): total {total * 1000 / stamped:.1f}; " + ", ".join(parts))
        mem = ", ".join(f"{name} {self.procs.max_rss.get(name, 0) / 2**20:.0f} MiB" for name in ("mongod", "tansu") if name in self.procs.max_rss)
        print(f"  peak RSS: {mem}")

    async def offered(self, rate: float, seconds: float) -> dict[str, Any]:
        total = int(rate * seconds)
        batch = self.requests(total)
        cpu0 = self.procs.cpu()
        load0 = os.getloadavg()
        ids: list[str] = []
        started = time.monotonic()
        tick = 0.05
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            if due > sent:
                ids += await self.send(batch[sent:due])
                sent = due
            await asyncio.sleep(tick)
        offered_s = time.monotonic() - started
        await self.wait(ids, timeout=self.args.timeout)
        kinds: dict[str, int] = {}
        for _, _, kind in batch:
            kinds[kind] = kinds.get(kind, 0) + 1
        result = self.report(f"offered load {rate:.0f}/s for {seconds:.0f} s", total, kinds, await self.states(ids), offered_s)
        cpu1 = self.procs.cpu()
        result["cpu"] = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
        print(f"  load average before {load0[0]:.1f}, after {os.getloadavg()[0]:.1f}")
        self.print_cpu(result, total)
        return result


async def onboard_all(client: TimbraClient, count: int, credits: int) -> list[Issuer]:
    semaphore = asyncio.Semaphore(4)

    async def one(n: int) -> Issuer:
        rfc, name, regime, zip_code = ISSUER_TEMPLATES[n % len(ISSUER_TEMPLATES)]
        async with semaphore:
            return await client.onboard(rfc=rfc, legal_name=name, tax_regime=regime, zip_code=zip_code, credits=credits)

    return list(await asyncio.gather(*(one(n) for n in range(count))))


BEFORE_ENV = {"TIMBRA_BATCH_CONSUME": "0", "TIMBRA_GROUP_COMMIT": "0"}


async def measure(args: argparse.Namespace, extra_env: dict[str, str], label: str = "") -> dict[str, Any]:
    """One platform, its phases; returns the figures of the first burst (and of the others)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="timbra-bench-load-") as folder:
        config = PlatformConfig.for_tests(folder, partitions=args.partitions, extra_env=extra_env, health_timeout=600.0)
        t0 = time.monotonic()
        async with Platform(config) as platform, TimbraClient(platform.url("ingress"), platform.admin_key, timeout=120) as client:
            print(f"\n===== {label or 'platform'}: up in {time.monotonic() - t0:.0f} s ({args.partitions} partitions per topic, {psutil.cpu_count()} CPUs, "
                  f"load average {os.getloadavg()[0]:.1f})" + (f"; env {extra_env}" if extra_env else ""), flush=True)
            total = args.invoices * (3 if not args.no_double else 1) + int(args.offered * args.offered_seconds) + 100
            issuers = await onboard_all(client, args.issuers, credits=total)
            bench = Bench(platform, client, issuers, args)
            await bench.start()
            try:
                warm = await bench.send(bench.requests(20))
                await bench.wait(warm, timeout=300)
                print(f"{len(issuers)} issuers onboarded, warm-up done ({time.monotonic() - t0:.0f} s)")
                first = out["burst"] = await bench.burst(args.invoices, "burst", profile=bool(args.profile))
                if args.profile:
                    profiling.summarize(args.profile, PROFILED)
                if not args.no_double:
                    second = out["double"] = await bench.burst(args.invoices * 2, "doubling (2N)")
                    print("\ndoubling N -> 2N:")
                    print(f"  sustained requested->stamped {first['stamped_steady']:.1f}/s -> {second['stamped_steady']:.1f}/s; "
                          f"requested->emailed {first['emailed_steady']:.1f}/s -> {second['emailed_steady']:.1f}/s")
                    for name in sorted(first["cpu"], key=lambda n: -first["cpu"][n]):
                        a = first["cpu"][name] * 1000 / max(1, first["stamped"])
                        b = second["cpu"].get(name, 0.0) * 1000 / max(1, second["stamped"])
                        if a > 0.05:
                            print(f"  CPU ms/invoice {name:<15} {a:7.1f} -> {b:7.1f}  (x{b / a if a else float('nan'):.2f})")
                if args.offered > 0:
                    result = out["offered"] = await bench.offered(args.offered, args.offered_seconds)
                    p99 = _pct(result["latencies"]["requested->stamped"], 99)
                    print(f"  p99 requested->stamped at {args.offered:.0f}/s offered: {p99 * 1000:.0f} ms (target < 2000 ms)")
            finally:
                await bench.close()
    return out


def side_by_side(before: dict[str, Any], after: dict[str, Any]) -> None:
    b, a = before["burst"], after["burst"]
    print("\n===== before (TIMBRA_BATCH_CONSUME=0 TIMBRA_GROUP_COMMIT=0) vs after (defaults), first burst:")
    rows = [("requested->stamped /s (steady)", b["stamped_steady"], a["stamped_steady"]), ("requested->emailed /s (steady)", b["emailed_steady"], a["emailed_steady"])]
    for stage in ("requested->stamped", "requested->emailed", *(f"{x}->{y}" for x, y in STAGES)):
        rows.append((f"{stage} p50 ms", _pct(b["latencies"][stage], 50) * 1000, _pct(a["latencies"][stage], 50) * 1000))
    for name in sorted(b["cpu"], key=lambda n: -b["cpu"][n]):
        rows.append((f"CPU ms/invoice {name}", b["cpu"][name] * 1000 / max(1, b["stamped"]), a["cpu"].get(name, 0.0) * 1000 / max(1, a["stamped"])))
    rows.append(("CPU ms/invoice total", sum(b["cpu"].values()) * 1000 / max(1, b["stamped"]), sum(a["cpu"].values()) * 1000 / max(1, a["stamped"])))
    print(f"  {'':<36} {'before':>10} {'after':>10} {'after/before':>12}")
    for name, x, y in rows:
        print(f"  {name:<36} {x:10.1f} {y:10.1f} {y / x if x else float('nan'):12.2f}")


async def run(args: argparse.Namespace) -> None:
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    before = await measure(args, {**extra_env, **BEFORE_ENV}, "before: message at a time") if args.compare else None
    after = await measure(args, extra_env, "after: batches" if args.compare else "")
    if before is not None:
        side_by_side(before, after)
    print(f"throughput_stamped_per_s={after['burst']['stamped_steady']:.1f}")


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=1000, help="requests in the first burst (the doubling run sends twice as many); the issue's size is 20000")
    parser.add_argument("--issuers", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--no-double", action="store_true", help="skip the 2N run")
    parser.add_argument("--offered", type=float, default=100.0, help="offered-load phase: requests per second (0 skips it)")
    parser.add_argument("--offered-seconds", type=float, default=10.0)
    parser.add_argument("--via", choices=("kafka", "http"), default="kafka")
    parser.add_argument("--until", choices=("emailed", "stamped"), default="stamped",
                        help="end a phase when every invoice is final (emailed), or as soon as every one is stamped (PDF and email then trail)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up waiting for a phase after this many seconds")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the busiest services during the first burst; speedscope files and summaries go to DIR")
    parser.add_argument("--profile-seconds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--compare", action="store_true", help="run a platform with batching off (TIMBRA_BATCH_CONSUME=0 TIMBRA_GROUP_COMMIT=0) first, then the defaults, and print both side by side")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for every process (e.g. TIMBRA_CONSUMER_WORKERS=3)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
