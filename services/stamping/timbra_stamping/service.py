"""Use cases of the stamping service: stamp a funded invoice exactly once, through PAC outages.

Flow (docs/stamping.md):
1. ``accept`` (the ``invoice.funded`` handler) records a job in ``stamp_jobs`` and acks. It never
   calls the PAC, so a slow or failing PAC never blocks a Kafka partition.
2. Workers take jobs from a local queue (fast path) or from the scheduler, which claims due jobs
   in MongoDB under a lease (retries, and jobs orphaned by a crashed instance).
3. ``process`` makes one attempt: deadline check, circuit breaker, look up an earlier stamp if
   the last attempt may have stamped, stamp, then record the outcome in one transaction with
   its event (stamped, stamp_failed, or a dead letter once the retries are exhausted).
"""

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from timbra_shared import topics
from timbra_shared.cfdi.xmlparse import comprobante_attributes
from timbra_shared.events import DeadLetter, ErrorDetail, InvoiceFunded, InvoiceStamped, InvoiceStampFailed
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.messaging import replay_of, trace_of
from timbra_shared.mongo import DUPLICATE, Store, Transaction
from timbra_shared.telemetry import attached, carrier_from_current, tracer
from timbra_stamping.adapters.repository import DEAD, FAILED, PENDING, STAMPED
from timbra_stamping.config import StampingConfig
from timbra_stamping.domain.pac import PacRejected, PacUnavailable, StampResult
from timbra_stamping.domain.retry import WINDOW, Backoff, BreakerState, CircuitBreaker, deadline

log = get_logger(__name__)

DEADLINE_CODE = "TIMBRA_STAMP_DEADLINE"
HOUSEKEEPING_S = 5.0


def deadline_message(fecha: str | None) -> str:
    return (
        f"No fue posible timbrar el comprobante antes de que su Fecha ({fecha or 'desconocida'}) excediera las 72 horas "
        "previas a la certificación (el SAT lo rechazaría con CFDI40101). El crédito reservado se liberó; emita la factura de nuevo."
    )


class StampingService:
    def __init__(
        self,
        *,
        store: Store,
        repo: Any,
        jobs: Any,
        pacs: Any,
        registry: CollectorRegistry,
        config: StampingConfig | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.repo = repo
        self.jobs = jobs
        self.pacs = pacs
        self.config = config or StampingConfig()
        self.owner = owner or new_id("stamper-")
        self.clock = clock
        self.rand = rand
        self.backoff = Backoff(self.config.backoff_base_s, self.config.backoff_max_s)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max(8, self.config.workers * 4))
        self.breakers: dict[str, CircuitBreaker] = {}
        self.tracer = tracer("timbra.stamping")
        self.outcomes = Counter("timbra_stamps_total", "Stamp outcomes", ["outcome"], registry=registry)
        self.retries = Counter("timbra_stamp_retries_total", "Stamp attempts deferred for a later retry", ["pac", "reason"], registry=registry)
        self.latency = Histogram("timbra_pac_stamp_seconds", "PAC call latency (lookup and stamp of one attempt)", ["pac", "result"], registry=registry)
        self.step = Histogram(
            "timbra_stamping_step_seconds", "invoice.funded accepted -> stamp recorded",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600), registry=registry,
        )
        self.breaker_state = Gauge("timbra_pac_breaker_state", "Circuit breaker per PAC: 0 closed, 1 half-open, 2 open", ["pac"], registry=registry)
        self.breaker_transitions = Counter("timbra_pac_breaker_transitions_total", "Circuit breaker state changes", ["pac", "state"], registry=registry)
        self.jobs_gauge = Gauge("timbra_stamp_jobs", "Stamp jobs waiting (pending) or dead-lettered", ["state"], registry=registry)

    # ------------------------------------------------------------------ intake (Kafka handler)
    async def accept(self, event: InvoiceFunded) -> None:
        """Record the invoice's stamp job and hand it to a worker; a redelivery is a no-op."""
        await self.accept_many([event])

    async def accept_many(self, events: list[InvoiceFunded]) -> None:
        """Record the stamp jobs of a consumed batch with one write, and hand the new ones to the
        workers while the local queue has room (the scheduler takes the rest)."""
        now = self.clock()
        room = self.queue.maxsize - self.queue.qsize()
        docs: list[dict[str, Any]] = []
        seen: set[str] = set()
        for event in events:
            if event.invoice_id in seen:  # repeated within the batch: the first one counts
                continue
            seen.add(event.invoice_id)
            due = deadline_of(event.xml, now)
            fast = len(docs) < room
            docs.append({
                "_id": event.invoice_id,
                "issuer_id": event.issuer_id,
                "pac": self.pacs.name_for(event.issuer_id),
                "state": PENDING,
                "attempts": 0,
                "maybe_stamped": False,
                "next_attempt_at": now,
                "deadline": due,
                "fail_at": due - timedelta(seconds=self.config.deadline_margin_s),
                "lease_owner": self.owner if fast else None,
                "lease_until": now + timedelta(seconds=self.config.effective_lease_s) if fast else None,
                "event": event.model_dump(mode="json"),
                "trace": trace_of(event) or carrier_from_current(),
                "created_at": now,
                "updated_at": now,
                "history": [],
            })
        created = await self.jobs.create_many(docs)
        asked_again = [event.invoice_id for event in events if event.invoice_id not in created and replay_of(event)]
        if asked_again:  # an operator replayed the dead letter of a job that exhausted its retries: as `dlq replay` does
            replayed = await self.jobs.replay(asked_again, now)
            log.info("stamp.replayed", requested=len(asked_again), replayed=replayed, source="dead_letter")
        unqueued: list[str] = []
        for doc in docs:
            if doc["_id"] in created and doc["lease_owner"] is not None:
                if self.queue.full():
                    unqueued.append(doc["_id"])
                else:
                    self.queue.put_nowait(doc)
        if unqueued:  # the scheduler filled the queue during the insert: any instance may claim them now, not when the lease ends
            await self.jobs.release(unqueued, self.owner)

    # ------------------------------------------------------------------ one attempt
    def breaker(self, pac: str) -> CircuitBreaker:
        breaker = self.breakers.get(pac)
        if breaker is None:
            c = self.config

            def changed(state: BreakerState, pac: str = pac) -> None:
                self.breaker_state.labels(pac).set(int(state))
                self.breaker_transitions.labels(pac, state.name.lower()).inc()
                log.warning("pac.breaker", pac=pac, state=state.name.lower())
                if state is BreakerState.CLOSED:
                    asyncio.get_running_loop().create_task(self._wake(pac))

            breaker = self.breakers[pac] = CircuitBreaker(
                threshold=c.breaker_threshold, open_s=c.breaker_open_s, max_open_s=c.breaker_max_open_s,
                clock=lambda: self.clock().timestamp(), on_change=changed,
            )
            self.breaker_state.labels(pac).set(0)
        return breaker

    async def _wake(self, pac: str) -> None:
        try:
            woken = await self.jobs.wake(pac, self.clock())
            if woken:
                log.info("pac.recovered", pac=pac, jobs_due_now=woken)
        except Exception as exc:  # the scheduler still finds them at their own time
            log.warning("pac.wake_failed", pac=pac, error=repr(exc))

    async def process(self, job: dict[str, Any]) -> None:
        event = InvoiceFunded.model_validate(job["event"])
        attempt = job.get("attempts", 0) + 1
        with attached(job.get("trace")), self.tracer.start_as_current_span(
            "stamping.attempt", attributes={"invoice_id": event.invoice_id, "pac": job["pac"], "attempt": attempt, "maybe_stamped": bool(job.get("maybe_stamped"))},
        ) as span:
            now = self.clock()
            if now >= _aware(job["fail_at"]):
                span.add_event("deadline")
                await self._fail(job, event, ErrorDetail(code=DEADLINE_CODE, message=deadline_message(event.summary.fecha or _fecha(event.xml)), source="timbra"), outcome="deadline")
                return
            breaker = self.breaker(job["pac"])
            if not breaker.allow():
                wait = breaker.retry_in() + self.rand()
                span.add_event("deferred", {"reason": "breaker_open", "wait_s": wait})
                self.retries.labels(job["pac"], "breaker_open").inc()
                await self.jobs.reschedule(event.invoice_id, self.owner, {"next_attempt_at": min(now + timedelta(seconds=wait), _aware(job["fail_at"])), "updated_at": now})
                return
            pac = self.pacs.get(job["pac"])
            started = time.perf_counter()
            try:
                result: StampResult | None = None
                if job.get("maybe_stamped"):
                    result = await pac.lookup(event.invoice_id)
                    span.add_event("lookup", {"found": result is not None})
                if result is None:
                    result = await pac.stamp(event.xml.encode(), idempotency_id=event.invoice_id)
            except PacUnavailable as exc:
                self.latency.labels(job["pac"], "unavailable").observe(time.perf_counter() - started)
                breaker.failure()
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                await self._retry(job, event, exc, now, attempt)
                return
            except PacRejected as exc:
                self.latency.labels(job["pac"], "rejected").observe(time.perf_counter() - started)
                breaker.success()
                span.add_event("rejected", {"code": exc.code})
                await self._fail(job, event, ErrorDetail(code=exc.code, message=exc.message, source=exc.source), outcome="rejected")
                return
            self.latency.labels(job["pac"], "stamped").observe(time.perf_counter() - started)
            breaker.success()
            span.set_attribute("uuid", result.uuid)
            await self._record(job, event, result)

    async def _record(self, job: dict[str, Any], event: InvoiceFunded, result: StampResult) -> None:
        now = self.clock()
        outcome = "recovered" if result.previous else "stamped"

        async def work(tx: Transaction) -> None:
            self.repo.add({
                "_id": event.invoice_id,
                "issuer_id": event.issuer_id,
                "uuid": result.uuid,
                "xml": result.xml,
                "fecha_timbrado": result.fecha_timbrado,
                "pac": job["pac"],
                "recovered_previous": result.previous,
                "stamped_at": now,
            }, tx)
            self.jobs.finish(event.invoice_id, STAMPED, {"uuid": result.uuid, "updated_at": now, "finished_at": now, "attempts": job.get("attempts", 0) + 1},
                             {"at": now, "outcome": outcome}, tx)
            tx.emit(InvoiceStamped(
                invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=event.summary,
                uuid=result.uuid, fecha_timbrado=result.fecha_timbrado, xml=result.xml.decode(), pac=job["pac"],
            ))

        if await self.store.transact_grouped(work, dedupe=f"{event.event_type}:{event.invoice_id}") is not DUPLICATE:
            self.outcomes.labels(outcome).inc()
            self.step.observe((now - _aware(job["created_at"])).total_seconds())

    async def _fail(self, job: dict[str, Any], event: InvoiceFunded, error: ErrorDetail, *, outcome: str) -> None:
        now = self.clock()

        async def work(tx: Transaction) -> None:
            self.jobs.finish(event.invoice_id, FAILED, {"failure": error.model_dump(), "updated_at": now, "finished_at": now},
                             {"at": now, "outcome": outcome, "error": f"{error.code}: {error.message}"[:300]}, tx)
            tx.emit(InvoiceStampFailed(invoice_id=event.invoice_id, issuer_id=event.issuer_id, message=error.message, errors=[error]))

        if await self.store.transact_grouped(work, dedupe=f"{event.event_type}:{event.invoice_id}") is not DUPLICATE:
            self.outcomes.labels(outcome).inc()
            log.warning("stamp.failed", invoice_id=event.invoice_id, code=error.code, outcome=outcome)

    async def _retry(self, job: dict[str, Any], event: InvoiceFunded, exc: PacUnavailable, now: datetime, attempt: int) -> None:
        maybe = bool(job.get("maybe_stamped")) or exc.maybe_stamped
        reason = "maybe_stamped" if exc.maybe_stamped else "unavailable"
        error = str(exc)[:300]
        history = {"at": now, "outcome": reason, "error": error, "attempt": attempt}
        if attempt >= self.config.max_attempts:
            await self._dead_letter(job, event, error, attempt, maybe, history)
            return
        delay = self.backoff.delay(attempt, self.rand)
        next_at = min(now + timedelta(seconds=delay), _aware(job["fail_at"]))
        self.retries.labels(job["pac"], reason).inc()
        trace.get_current_span().add_event("retry_scheduled", {"attempt": attempt, "delay_s": delay, "reason": reason})
        await self.jobs.reschedule(event.invoice_id, self.owner, {
            "attempts": attempt, "maybe_stamped": maybe, "next_attempt_at": next_at, "last_error": error, "updated_at": now,
        }, history)

    async def _dead_letter(self, job: dict[str, Any], event: InvoiceFunded, error: str, attempt: int, maybe: bool, history: dict[str, Any]) -> None:
        now = self.clock()

        async def work(tx: Transaction) -> None:
            self.jobs.finish(event.invoice_id, DEAD, {"attempts": attempt, "maybe_stamped": maybe, "last_error": error, "updated_at": now, "dead_at": now},
                             history, tx)
            tx.emit(DeadLetter(
                service="stamping", original_topic=topics.INVOICE_FUNDED, key=event.invoice_id,
                reason=f"{attempt} intentos de timbrado agotados; último error: {error}", error_type="StampRetriesExhausted",
                payload=event.model_dump_json(), headers={"pac": job["pac"]},
            ), key=event.invoice_id)

        await self.store.transact(work)
        self.outcomes.labels("dead_letter").inc()
        log.error("stamp.dead_letter", invoice_id=event.invoice_id, attempts=attempt, error=error)

    # ------------------------------------------------------------------ background tasks
    async def run_workers(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.config.workers)))

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.process(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # MongoDB hiccup: the lease expires and the scheduler takes the job again
                log.exception("stamp.attempt_crashed", invoice_id=job.get("_id"), error=repr(exc))
            finally:
                self.queue.task_done()

    async def drain(self) -> None:
        """Process everything queued, in this task (tests)."""
        while not self.queue.empty():
            job = self.queue.get_nowait()
            await self.process(job)
            self.queue.task_done()

    async def schedule_due(self) -> int:
        """Claim due jobs (under a lease) while the local queue has room; returns how many."""
        claimed = 0
        while not self.queue.full():
            now = self.clock()
            jobs = await self.jobs.claim_due_many(self.owner, now, self.config.effective_lease_s, self.queue.maxsize - self.queue.qsize())
            for job in jobs:
                if self.queue.full():  # the intake filled it while we claimed: give the lease back
                    await self.jobs.reschedule(job["_id"], self.owner, {"updated_at": now})
                    continue
                self.queue.put_nowait(job)
                claimed += 1
            if not jobs or self.queue.full():
                break
        return claimed

    async def housekeeping(self) -> None:
        """Dead letters whose deadline came are failed (the credit is released); refresh gauges."""
        now = self.clock()
        for job in await self.jobs.expired_dead(now):
            event = InvoiceFunded.model_validate(job["event"])
            await self._fail(job, event, ErrorDetail(code=DEADLINE_CODE, message=deadline_message(event.summary.fecha or _fecha(event.xml)), source="timbra"), outcome="deadline")
        counts = await self.jobs.count_by_state()
        for state in (PENDING, DEAD):
            self.jobs_gauge.labels(state).set(counts.get(state, 0))

    async def run_scheduler(self) -> None:
        last_housekeeping = 0.0
        while True:
            try:
                await self.schedule_due()
                if time.monotonic() - last_housekeeping >= HOUSEKEEPING_S:
                    last_housekeeping = time.monotonic()
                    await self.housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stamp.scheduler_error", error=repr(exc))
            await asyncio.sleep(self.config.poll_s)

    # ------------------------------------------------------------------ queries
    async def status(self, invoice_id: str, issuer_id: str) -> dict[str, Any] | None:
        job = await self.jobs.get(invoice_id, issuer_id)
        if job is None:
            return None
        now = self.clock()
        open_ = job["state"] in (PENDING, DEAD)
        stamp_by = _aware(job["fail_at"])
        return {
            "invoice_id": invoice_id,
            "state": job["state"],
            "in_flight": bool(job.get("lease_until") and _aware(job["lease_until"]) > now and job["state"] == PENDING),
            "pac": job["pac"],
            "attempts": job.get("attempts", 0),
            "max_attempts": self.config.max_attempts,
            "next_attempt_at": _iso(job.get("next_attempt_at")) if job["state"] == PENDING else None,
            "last_error": job.get("last_error"),
            "deadline": _iso(job["deadline"]),
            "stamp_by": _iso(stamp_by),
            "seconds_left": max(0, int((stamp_by - now).total_seconds())) if open_ else None,
            "uuid": job.get("uuid"),
            "failure": job.get("failure"),
            "replays": job.get("replays", 0),
            "history": [{**h, "at": _iso(h.get("at"))} for h in job.get("history", [])],
        }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value else None


def _fecha(xml: str) -> str | None:
    try:
        return comprobante_attributes(xml.encode(), "Fecha").get("Fecha")
    except Exception:
        return None


def deadline_of(xml: str, now: datetime) -> datetime:
    """The 72-hour deadline of a sealed CFDI (if unreadable, 72 h from now: the PAC will judge it)."""
    try:
        attributes = comprobante_attributes(xml.encode(), "Fecha", "LugarExpedicion")
        return deadline(attributes.get("Fecha", ""), attributes.get("LugarExpedicion", "06000"))
    except Exception:
        return now + WINDOW
