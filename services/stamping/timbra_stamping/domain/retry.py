"""Pure rules of the retry machinery: back-off with jitter, the 72-hour deadline, and a
circuit breaker per PAC. No I/O; the clock and the random source are injectable."""

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from timbra_shared.cfdi.fecha import zona_horaria

WINDOW = timedelta(hours=72)  # SAT: a CFDI must be certified within 72 hours of its Fecha


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with "equal jitter": half the delay is fixed, half is random, so
    retries of invoices that failed together spread out instead of arriving together."""

    base_s: float = 1.0
    max_s: float = 300.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based)."""
        ceiling = min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))
        return ceiling / 2 + rand() * ceiling / 2


def deadline(fecha: str, lugar_expedicion: str) -> datetime:
    """The UTC instant after which SAT rejects the CFDI (CFDI40101): Fecha, read in the time
    zone of LugarExpedicion, plus 72 hours."""
    local = datetime.fromisoformat(fecha)
    if local.tzinfo is None:
        local = local.replace(tzinfo=zona_horaria(lugar_expedicion or "06000"))
    return (local + WINDOW).astimezone(UTC)


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive transient failures; after ``open_s`` it lets one
    probe through (half-open): success closes it, failure opens it again for twice as long
    (up to ``max_open_s``)."""

    threshold: int = 5
    open_s: float = 10.0
    max_open_s: float = 120.0
    clock: Callable[[], float] = field(default=lambda: __import__("time").monotonic)
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_until: float = 0.0
    _current_open_s: float = 0.0
    _probe_in_flight: bool = False
    on_change: Callable[[BreakerState], None] | None = None

    def allow(self) -> bool:
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self.clock() >= self.opened_until:
            self._set(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until the breaker lets a call through again (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.5, self.opened_until - self.clock())

    def success(self) -> None:
        self.failures = 0
        self._probe_in_flight = False
        self._current_open_s = 0.0
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self.failures += 1
        probing = self.state is BreakerState.HALF_OPEN
        self._probe_in_flight = False
        if probing or (self.state is BreakerState.CLOSED and self.failures >= self.threshold):
            self._current_open_s = min(self.max_open_s, self._current_open_s * 2 if probing and self._current_open_s else self.open_s)
            self.opened_until = self.clock() + self._current_open_s
            self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
