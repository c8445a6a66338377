"""``FetchWaitTuner`` against real tansu and a real subscriber made by ``messaging.subscriber``.

The tuner sets aiokafka's fetch wait through a private attribute of its fetcher, so this checks
the two things fakes cannot: that the wait it sets is the one the broker then holds a fetch for
(a record's hop gets slower in the busy mode), and that a real flow of records switches the mode
and its end switches it back."""

import asyncio
import statistics
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from timbra_shared import topics
from timbra_shared.devstack.servers import create_topics, free_port, start_broker
from timbra_shared.devstack.testing import until
from timbra_shared.events import InvoiceStampFailed
from timbra_shared.messaging import FETCH_WAIT_MS, FetchWaitTuner, make_broker, subscriber

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOPIC = topics.INVOICE_STAMP_FAILED
SLOW_MS = 1500


async def test_the_tuned_wait_is_the_one_the_broker_holds_and_a_flow_switches_it(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    tansu = await asyncio.to_thread(start_broker, port, log_path=tmp_path / "tansu.log")
    await create_topics(bootstrap, {TOPIC: 1})
    broker, _ = make_broker(bootstrap, service="tuner-test", tracer_provider=None, registry=CollectorRegistry())
    arrived: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    @subscriber(broker, TOPIC, group="tuner-test.group")
    async def on_failed(event: InvoiceStampFailed) -> None:
        arrived[event.invoice_id] = loop.time()

    async def hop(name: str) -> float:
        sent = loop.time()
        await broker.publish(InvoiceStampFailed(invoice_id=name, issuer_id="iss_1", message="x"), TOPIC)
        assert await until(lambda: name in arrived, 30), name
        await asyncio.sleep(0.137)  # let the next (empty) fetch start at a different phase
        return arrived[name] - sent

    try:
        await broker.start()
        await hop("warm-up")
        quiet = [await hop(f"quiet-{n}") for n in range(6)]

        slow = FetchWaitTuner(broker, busy_ms=SLOW_MS, busy_rate=0)  # busy at any rate: no flow needed to read the wait's effect
        assert slow.tune_once(loop.time())
        await asyncio.sleep(SLOW_MS / 1000)  # the fetch in flight still has the short wait
        busy = [await hop(f"busy-{n}") for n in range(6)]
        assert statistics.median(busy) > 3 * statistics.median(quiet) and statistics.median(busy) > 0.25, (quiet, busy)

        fetcher = broker.subscribers[0].consumer._fetcher
        fetcher._fetch_max_wait_ms = FETCH_WAIT_MS  # as the consumer started
        tuner = FetchWaitTuner(broker, busy_ms=200, busy_rate=20, window_s=1.0, hold_s=2.0, interval=0.1)
        task = asyncio.create_task(tuner.run_forever())
        try:
            await asyncio.sleep(0.5)
            assert not tuner.busy and fetcher._fetch_max_wait_ms == FETCH_WAIT_MS

            async def flow() -> None:
                for n in range(120):
                    await broker.publish(InvoiceStampFailed(invoice_id=f"flow-{n}", issuer_id="iss_1", message="x"), TOPIC)
                    await asyncio.sleep(1 / 60)

            flowing = asyncio.create_task(flow())
            assert await until(lambda: tuner.busy, 10), "60 records/s never made the tuner busy"
            assert fetcher._fetch_max_wait_ms == 200
            await flowing
            assert await until(lambda: len([k for k in arrived if k.startswith("flow-")]) == 120, 30)
            assert await until(lambda: not tuner.busy, 10), "the tuner stayed busy after the flow stopped"
            assert fetcher._fetch_max_wait_ms == FETCH_WAIT_MS
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await broker.stop()
        tansu.stop(5)
