"""Sealing throughput inside the running issuer-profile service (real mongod, real Kafka-protocol
broker): N ``InvoiceBuilt`` events are published straight onto ``invoice.built`` for an onboarded
issuer, and the service's own ``seals`` records (written in the same transaction as the
``invoice.sealed`` outbox event) give the built→sealed latency of each invoice and the rate.

    .venv/bin/python bench/bench_sealing.py [--invoices 1000] [--partitions 3]

It starts its own platform (only issuer-profile, cfdi-builder and the ingress: no billing, stamping
or notifier competing for the CPU) on free ports in a temporary folder. issuer-profile is one
Python process, so the figure is per core; its CPU use during the run is printed alongside.
For comparison it also prints the in-process cost of ``seal_xml`` alone (cadena + RSA-SHA256).
The last line is ``sealing_throughput_per_s=<number>``.
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from timbra_shared import topics
from timbra_shared.cfdi import load_csd, seal_xml
from timbra_shared.cfdi.testing import make_csd
from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.scenario import DEMO_ISSUER, TimbraClient
from timbra_shared.ids import new_id
from timbra_shared.mongo import make_client

PROCESSES = ["issuer-profile", "cfdi-builder", "ingress"]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _cpu_seconds(pid: int | None) -> float:
    if not pid:
        return float("nan")
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _built_event(bootstrap: str, invoice_id: str) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topics.INVOICE_BUILT, p) for p in consumer.partitions_for_topic(topics.INVOICE_BUILT) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = json.loads(record.value)
                    if event["invoice_id"] == invoice_id:
                        return event
        raise RuntimeError("the warm-up invoice never appeared on invoice.built")
    finally:
        await consumer.stop()


def in_process(xml: bytes, n: int) -> float:
    cer, key = make_csd(rfc=DEMO_ISSUER["rfc"], name=DEMO_ISSUER["legal_name"])
    csd = load_csd(cer, key, "12345678a")
    started = time.perf_counter()
    for _ in range(n):
        seal_xml(xml, csd)
    return n / (time.perf_counter() - started)


async def run(n: int, partitions: int) -> None:
    with tempfile.TemporaryDirectory(prefix="timbra-bench-seal-") as folder:
        config = PlatformConfig.for_tests(folder, partitions=partitions, processes=PROCESSES)
        # the ingress routes (and health-checks) only the services this benchmark runs
        config.extra_env["TIMBRA_SERVICE_URLS"] = json.dumps({name: config.url(name) for name in PROCESSES if name != "ingress"})
        async with Platform(config) as platform, TimbraClient(platform.url("ingress"), platform.admin_key, timeout=60) as client:
            issuer = await client.onboard(credits=0)
            warm = (await client.create_invoice(issuer)).json()["id"]
            state = (await client.wait_final(issuer, [warm], until=frozenset({"sealed", "rejected"}), timeout=60))[warm]
            assert state["status"] == "sealed", state
            template = await _built_event(platform.kafka_bootstrap, warm)

            producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, linger_ms=5, max_batch_size=1 << 20)
            await producer.start()
            mongo = make_client(platform.mongodb_url)
            seals = mongo["timbra_issuer_profile"].seals
            pid = platform.pid("issuer-profile")
            ids = [new_id("inv_") for _ in range(n)]
            try:
                cpu_before = _cpu_seconds(pid)
                started = datetime.now(UTC)
                t0 = time.perf_counter()
                sends = []
                for invoice_id in ids:
                    event = template | {"event_id": new_id(), "invoice_id": invoice_id, "occurred_at": datetime.now(UTC).isoformat()}
                    sends.append(await producer.send(topics.INVOICE_BUILT, json.dumps(event).encode(), key=invoice_id.encode(), headers=[("content-type", b"application/json")]))
                await asyncio.gather(*sends)
                published_s = time.perf_counter() - t0
                done = 0
                deadline = time.monotonic() + max(300, n)
                while done < n and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    done = await seals.count_documents({"_id": {"$in": ids}})
                wall_s = time.perf_counter() - t0
                cpu_s = _cpu_seconds(pid) - cpu_before
                docs = await seals.find({"_id": {"$in": ids}}).to_list(None)
            finally:
                await producer.stop()
                await mongo.close()

    rejected = [d for d in docs if d["rejected"]]
    latencies = [(d["at"] - d["built_at"]).total_seconds() for d in docs]
    ats = sorted(d["at"] for d in docs)
    span = (ats[-1] - started).total_seconds() if ats else float("nan")
    steady = (len(ats) - 1) / (ats[-1] - ats[0]).total_seconds() if len(ats) > 1 else float("nan")
    xml = template["xml"].encode()
    pure = in_process(xml, 200)

    print(f"sealing benchmark: {n} InvoiceBuilt events onto invoice.built ({partitions} partitions), one issuer-profile process")
    print(f"  machine                 {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"  published in            {published_s:8.2f} s")
    print(f"  sealed                  {len(docs)}/{n} (rejected {len(rejected)}) in {wall_s:.2f} s")
    print(f"  throughput (first publish → last seal)  {len(docs) / span:8.1f} invoices/s")
    print(f"  throughput (steady, first → last seal)  {steady:8.1f} invoices/s")
    if latencies:
        print(f"  built→sealed latency    p50={statistics.median(latencies) * 1000:8.1f} ms  p95={_pct(latencies, 95) * 1000:8.1f} ms  max={max(latencies) * 1000:8.1f} ms")
    print(f"  issuer-profile CPU      {cpu_s:8.2f} s over {wall_s:.2f} s wall ({cpu_s / wall_s * 100:.0f}% of one core); {cpu_s / max(len(docs), 1) * 1000:.2f} ms CPU per invoice")
    print(f"  in-process seal_xml     {pure:8.1f} invoices/s ({1000 / pure:.2f} ms each: cadena original + RSA-SHA256)")
    print(f"sealing_throughput_per_s={len(docs) / span:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.invoices, args.partitions))


if __name__ == "__main__":
    main()
