"""Stamping benchmark: throughput of funded -> stamped with the real broker, the real mongod, the
stamping service and the sandbox PAC (fast mode: no per-invoice XSD check) on loopback.

    .venv/bin/python bench/bench_stamping.py [--count 3000] [--workers 64] [--consumers 1] [--instances 1] [--no-rules] [--profile DIR [--profile-gil]]

``--instances N`` runs N stamping processes in one consumer group (partitions are the unit of
parallelism); their CPU is added up.

It starts its own platform (mongod, tansu, sandbox PAC, stamping; nothing else) on free ports in
a temporary folder, seals ``--count`` distinct CFDIs once (Folio varies; a generated CSD), publishes
an ``InvoiceFunded`` for each straight onto ``invoice.funded``, and measures from the stamping
service's own records: ``stamp_jobs.created_at`` (event accepted) and ``stamps.stamped_at``
(stamp committed with its outbox event). CPU shares come from /proc (utime+stime per process,
and the whole machine's busy time). Ends with ``throughput_stamped_per_s=<number>``.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from decimal import Decimal

import profiling
from aiokafka import AIOKafkaProducer

from timbra_shared import topics
from timbra_shared.cfdi import build, load_csd, seal
from timbra_shared.cfdi.fecha import fecha_local
from timbra_shared.cfdi.testing import make_csd, sample_invoice
from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.events import InvoiceFunded, InvoiceSummary
from timbra_shared.ids import new_id
from timbra_shared.mongo import make_client

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def machine_busy() -> tuple[float, float, float]:
    """CPU-seconds busy (this guest's own work), stolen (the hypervisor ran another guest while this one
    was runnable) and in total, all cores. /proc/stat: user nice system idle iowait irq softirq steal …"""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]
    idle, steal = values[3] + values[4], values[7]
    return (sum(values) - idle - steal) / TICKS, steal / TICKS, sum(values) / TICKS


def children_cpu(pid: int) -> float:
    """CPU of a process and its descendants (the platform starts each server under a wrapper)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(entry) == pid or int(fields[1]) == pid:
                total += cpu_seconds(int(entry))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def sealed_events(count: int, issuer_id: str) -> list[InvoiceFunded]:
    cer, key = make_csd()
    csd = load_csd(cer, key, "12345678a")
    fecha = fecha_local("42501")
    tag = new_id()[-6:]
    events = []
    for n in range(count):
        folio = f"{tag}{n}"
        xml = seal(build(sample_invoice(Fecha=fecha, Folio=folio)), csd).decode()
        summary = InvoiceSummary(type="I", serie="A", folio=folio, fecha=fecha, rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6",
                                 nombre_receptor="UNIVERSIDAD ROBOTICA ESPAÑOLA", total=Decimal("1"))
        events.append(InvoiceFunded(invoice_id=new_id("inv_"), issuer_id=issuer_id, summary=summary, xml=xml, reservation_id=new_id("res_")))
    return events


async def publish(bootstrap: str, events: list[InvoiceFunded]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topics.INVOICE_FUNDED, e.model_dump_json().encode(), key=e.invoice_id.encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_stamped(stamps, ids: list[str], timeout: float, expected_total: int) -> None:
    """Polls the collection's metadata count (no scan), so watching costs mongod next to nothing,
    then checks these very ids once."""
    deadline = time.monotonic() + timeout
    while await stamps.estimated_document_count() < expected_total:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    while (found := await stamps.count_documents({"_id": {"$in": ids}})) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {found} of {len(ids)} stamped")
        await asyncio.sleep(0.25)


async def mongod_operations(mongo) -> dict[str, int]:
    counters = (await mongo.admin.command("serverStatus"))["opcounters"]
    return {name: int(counters[name]) for name in ("insert", "query", "update", "delete", "getmore", "command")}


async def run(args: argparse.Namespace) -> None:
    print(f"sealing {args.count + args.warmup} distinct CFDIs…", flush=True)
    started = time.perf_counter()
    events = sealed_events(args.count + args.warmup, issuer_id="iss_bench")
    print(f"  done in {time.perf_counter() - started:.1f} s")
    warm, measured = events[: args.warmup], events[args.warmup:]
    env = {
        "TIMBRA_PAC_FAST": "1", "TIMBRA_PAC_RULES": "1" if args.rules else "0",
        "TIMBRA_STAMP_WORKERS": str(args.workers), "TIMBRA_STAMP_CONSUMERS": str(args.consumers),
        "TIMBRA_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryDirectory(prefix="timbra-bench-stamping-") as folder:
        config = PlatformConfig.for_tests(folder, partitions=args.partitions, processes=["sandbox-pac", "stamping"], extra_env=env,
                                          instances={"stamping": args.instances})
        async with Platform(config) as platform:
            mongo = make_client(platform.mongodb_url)
            db = mongo["timbra_stamping"]
            await publish(platform.kafka_bootstrap, warm)
            await wait_stamped(db.stamps, [e.invoice_id for e in warm], timeout=120, expected_total=len(warm))

            pids = {name: [platform.pid(n) for n in platform.instances(name)] for name in ("sandbox-pac", "stamping")}
            pids.update({name: [pid] for name in ("mongod", "tansu") if (pid := platform.pid(name))})  # absent when external
            cpu_before = {name: sum(children_cpu(pid) for pid in group) for name, group in pids.items()}
            busy_before, steal_before, total_before = machine_busy()
            load_before = os.getloadavg()[0]
            operations_before = await mongod_operations(mongo)
            t0 = time.perf_counter()
            profiled = ("stamping", "sandbox-pac")
            spies = profiling.record({name: pids[name][0] for name in profiled}, args.profile, args.profile_seconds, rate=200, gil=args.profile_gil) if args.profile else []
            await publish(platform.kafka_bootstrap, measured)
            published_s = time.perf_counter() - t0
            ids = [e.invoice_id for e in measured]
            await wait_stamped(db.stamps, ids, timeout=1800, expected_total=len(warm) + len(ids))
            wall = time.perf_counter() - t0
            operations = {name: n - operations_before[name] for name, n in (await mongod_operations(mongo)).items()}
            cpu = {name: sum(children_cpu(pid) for pid in group) - cpu_before[name] for name, group in pids.items()}
            busy_after, steal_after, total_after = machine_busy()

            jobs = {j["_id"]: j for j in await db.stamp_jobs.find({"_id": {"$in": ids}}, projection={"created_at": 1, "attempts": 1}).to_list()}
            stamps = await db.stamps.find({"_id": {"$in": ids}}, projection={"stamped_at": 1}).to_list()
            step = [(s["stamped_at"] - jobs[s["_id"]]["created_at"]).total_seconds() for s in stamps]
            first_accept = min(j["created_at"] for j in jobs.values())
            last_stamp = max(s["stamped_at"] for s in stamps)
            span = (last_stamp - first_accept).total_seconds()
            retried = sum(1 for j in jobs.values() if j.get("attempts", 1) > 1)
            await mongo.close()
            for spy in spies:
                spy.wait()

    cores = os.cpu_count() or 1
    machine = (busy_after - busy_before) / max(1e-9, total_after - total_before) * 100
    stolen = (steal_after - steal_before) / max(1e-9, total_after - total_before) * 100
    print(f"\n{args.count} invoices, funded -> stamped; sandbox PAC fast mode (XSD off, CFDI40 rules {'on' if args.rules else 'off'}), "
          f"{args.partitions} partitions, {args.instances} stamping instance(s) x {args.workers} workers, {args.consumers} consumer(s), {cores} cores")
    print(f"  published onto invoice.funded in {published_s:.1f} s; all stamped {wall:.1f} s after the first publish")
    print(f"  throughput: {args.count / span:.1f} invoices/s (first accepted -> last stamped, {span:.1f} s); {args.count / wall:.1f}/s wall clock")
    print(f"  stamping step (event accepted -> stamp committed): p50={pct(step, 50) * 1000:.0f} ms  p99={pct(step, 99) * 1000:.0f} ms  "
          f"median={statistics.median(step) * 1000:.0f} ms  (n={len(step)}, retried={retried})")
    for name, seconds in cpu.items():
        print(f"  CPU {name:<12} {seconds:6.1f} s = {seconds / wall * 100:5.1f}% of one core, {seconds / wall / cores * 100:5.1f}% of the machine, "
              f"{seconds / args.count * 1000:.2f} ms per invoice")
    total = sum(cpu.values())
    print("  mongod operations per invoice: " + ", ".join(f"{name} {n / args.count:.2f}" for name, n in operations.items())
          + " (the benchmark's own few polls included)")
    print(f"  CPU all four   {total:6.1f} s = {total / args.count * 1000:.2f} ms per invoice; two cores at that cost: {cores * args.count / total:.0f}/s")
    print(f"  machine busy during the run: {machine:.0f}% of {cores} cores (includes mongod, tansu and anything else running), "
          f"stolen by the hypervisor: {stolen:.0f}%; load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}")
    if args.profile:
        profiling.summarize(args.profile, profiled)
    print(f"throughput_stamped_per_s={args.count / span:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--workers", type=int, default=64, help="TIMBRA_STAMP_WORKERS (the service's default)")
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--instances", type=int, default=1, help="stamping processes in the consumer group")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--profile", metavar="DIR", help="py-spy the (first) stamping process and the sandbox PAC while the measured events flow")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--profile-gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)")
    parser.add_argument("--no-rules", dest="rules", action="store_false", help="sandbox skips the CFDI40 catalogue rules too")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
