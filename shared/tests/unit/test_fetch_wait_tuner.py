"""``messaging.FetchWaitTuner``: a process's short-wait consumers fetch with the busy wait once
their partitions grow by ``busy_rate`` records/s over ``window_s``, and with their own wait again
once the flow has stayed below half of that for ``hold_s``; the background consumers' longer wait is
never touched."""

from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from timbra_shared import messaging
from timbra_shared.messaging import DeadLetters, FetchWaitTuner

SHORT, BACKGROUND = messaging.FETCH_WAIT_MS, messaging.BACKGROUND_FETCH_WAIT_MS
TP = TopicPartition("invoice.requested", 0)


class Consumer:
    def __init__(self, wait_ms: int, highwater: int | None = 0) -> None:
        self._fetcher = SimpleNamespace(_fetch_max_wait_ms=wait_ms)
        self.highwaters = {TP: highwater}

    @property
    def wait_ms(self) -> int:
        return self._fetcher._fetch_max_wait_ms

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters[tp]


def tuner_over(*consumers: Any, **options: Any) -> FetchWaitTuner:
    broker: Any = SimpleNamespace(subscribers=[SimpleNamespace(consumer_subgroup=[c]) for c in consumers])
    options.setdefault("hold_s", 4.0)
    return FetchWaitTuner(broker, busy_ms=200, busy_rate=10, window_s=2.0, **options)


def flow(tuner: FetchWaitTuner, consumer: Consumer, *, per_s: float, seconds: float, start: float, step: float = 0.25) -> float:
    """Feeds ``consumer``'s partition at ``per_s`` and ticks the tuner every ``step``; returns the end time."""
    now = start
    while now < start + seconds - 1e-9:
        now += step
        consumer.highwaters[TP] = (consumer.highwaters[TP] or 0) + per_s * step
        tuner.tune_once(now)
    return now


def test_a_quiet_process_keeps_its_waits() -> None:
    short, background = Consumer(SHORT), Consumer(BACKGROUND)
    tuner = tuner_over(short, background)
    flow(tuner, short, per_s=2, seconds=5, start=0)
    assert not tuner.busy
    assert (short.wait_ms, background.wait_ms) == (SHORT, BACKGROUND)


def test_a_flow_lengthens_the_short_waits_only_and_they_come_back_when_it_stops() -> None:
    short, background = Consumer(SHORT), Consumer(BACKGROUND)
    registry = CollectorRegistry()
    dead_letters = DeadLetters("cfdi-builder", registry)
    tuner = tuner_over(short, background, dead_letters=dead_letters)
    now = flow(tuner, short, per_s=40, seconds=1, start=0)
    assert tuner.busy and short.wait_ms == 200 and background.wait_ms == BACKGROUND
    assert registry.get_sample_value("timbra_consumer_fetch_wait_ms", {"service": "cfdi-builder"}) == 200
    now = flow(tuner, short, per_s=0, seconds=4, start=now)
    assert tuner.busy, "held for hold_s after the flow fell under half the busy rate"
    flow(tuner, short, per_s=0, seconds=2, start=now)
    assert not tuner.busy and short.wait_ms == SHORT and background.wait_ms == BACKGROUND
    assert registry.get_sample_value("timbra_consumer_fetch_wait_ms", {"service": "cfdi-builder"}) == SHORT


def test_a_flow_that_comes_in_waves_keeps_the_busy_wait() -> None:
    consumer = Consumer(SHORT)
    tuner = tuner_over(consumer, hold_s=10.0)
    now, modes = 0.0, []
    for _ in range(6):  # 47/s for a second, then nothing for three: 11.75/s on average
        now = flow(tuner, consumer, per_s=47, seconds=1, start=now)
        modes.append(tuner.busy)
        now = flow(tuner, consumer, per_s=0, seconds=3, start=now)
        modes.append(tuner.busy)
    assert all(modes) and consumer.wait_ms == 200


def test_between_half_and_the_busy_rate_the_mode_holds() -> None:
    consumer = Consumer(SHORT)
    tuner = tuner_over(consumer)
    now = flow(tuner, consumer, per_s=7, seconds=4, start=0)
    assert not tuner.busy and consumer.wait_ms == SHORT
    now = flow(tuner, consumer, per_s=30, seconds=2, start=now)
    assert tuner.busy
    flow(tuner, consumer, per_s=7, seconds=4, start=now)
    assert tuner.busy and consumer.wait_ms == 200


def test_a_flow_that_starts_after_a_long_quiet_keeps_the_busy_wait_above_half_the_rate() -> None:
    consumer = Consumer(SHORT)
    tuner = tuner_over(consumer)
    now = flow(tuner, consumer, per_s=0, seconds=20, start=0)
    now = flow(tuner, consumer, per_s=12, seconds=2.5, start=now)
    assert tuner.busy
    flow(tuner, consumer, per_s=8, seconds=10, start=now)
    assert tuner.busy and consumer.wait_ms == 200


def test_highwaters_that_go_back_do_not_count_as_flow() -> None:
    consumer = Consumer(SHORT, highwater=5000)
    tuner = tuner_over(consumer)
    now = flow(tuner, consumer, per_s=0, seconds=1, start=0)
    consumer.highwaters[TP] = 0  # the broker came back empty
    now = flow(tuner, consumer, per_s=4, seconds=3, start=now)
    assert not tuner.busy
    flow(tuner, consumer, per_s=40, seconds=1, start=now)
    assert tuner.busy


def test_consumers_not_started_or_without_a_fetcher_are_skipped() -> None:
    unfetched, started = Consumer(SHORT, highwater=None), Consumer(SHORT)
    del unfetched._fetcher
    tuner = tuner_over(unfetched, started)
    flow(tuner, started, per_s=40, seconds=1, start=0)
    assert tuner.busy and started.wait_ms == 200


def test_a_busy_wait_no_longer_than_the_short_one_changes_nothing() -> None:
    consumer = Consumer(SHORT)
    broker: Any = SimpleNamespace(subscribers=[SimpleNamespace(consumer_subgroup=[consumer])])
    tuner = FetchWaitTuner(broker, busy_ms=SHORT, busy_rate=10)
    flow(tuner, consumer, per_s=40, seconds=1, start=0)
    assert consumer.wait_ms == SHORT
