"""The pure retry rules: back-off with jitter, the 72-hour deadline, the circuit breaker."""

from datetime import UTC, datetime

import pytest

from timbra_stamping.domain.retry import Backoff, BreakerState, CircuitBreaker, deadline


def test_backoff_doubles_up_to_the_cap_with_half_of_it_random():
    backoff = Backoff(base_s=1, max_s=60)
    assert [backoff.delay(n, lambda: 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [backoff.delay(n, lambda: 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff.delay(30, lambda: 1.0) == 60 and backoff.delay(30, lambda: 0.0) == 30


def test_jitter_spreads_invoices_that_failed_together():
    import random

    rng = random.Random(7)
    delays = {round(Backoff(1, 300).delay(5, rng.random), 3) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 8 and max(delays) <= 16


@pytest.mark.parametrize(("fecha", "cp", "expected"), [
    ("2025-06-15T11:00:00", "06000", datetime(2025, 6, 18, 17, 0, tzinfo=UTC)),   # Mexico City, UTC-6
    ("2025-06-15T11:00:00", "22000", datetime(2025, 6, 18, 18, 0, tzinfo=UTC)),   # Tijuana, UTC-7 in summer
])
def test_deadline_is_fecha_in_the_local_time_of_lugar_expedicion_plus_72_hours(fecha, cp, expected):
    assert deadline(fecha, cp) == expected


class Time:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_consecutive_failures_then_probes_once():
    t = Time()
    changes = []
    breaker = CircuitBreaker(threshold=3, open_s=10, max_open_s=60, clock=t, on_change=changes.append)
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_in() == 10
    t.t += 10
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN  # the one probe
    assert not breaker.allow()  # nobody else while it is in flight
    breaker.failure()  # the probe failed: open again, twice as long
    assert breaker.state is BreakerState.OPEN and breaker.retry_in() == 20
    t.t += 20
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
