"""Use cases of the cancellation service.

- Projections: ``invoice.requested`` (the request, for the guided substitution), ``invoice.stamped``
  (what eligibility needs: type, total, parties, Fecha, the UUIDs it relates to) and
  ``issuer.profile`` (the issuer's email for notifications).
- Requests: ``DELETE /v1/invoices/{id}`` and the ``cancellation.requested`` command run the same
  checks, then write one ``cancellations`` document that a leased scheduler drives: send the
  request to the PAC (retried while the PAC is down; SAT keys requests by UUID, so a retry never
  registers a second one), then poll SAT's status with back-off until a final state. Every change
  is one transaction with its events (outbox) and the issuer's email (``notification.requested``).
- The guided substitution (motive 01): the substitute is requested from the original with the
  corrections and a CfdiRelacionados 04; when it is stamped, the original is cancelled with it.
"""

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from bson import Binary
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError

from timbra_cancellation.adapters.repository import CancellationRepository, InvoiceProjection, IssuerDirectory
from timbra_cancellation.config import CancellationConfig
from timbra_cancellation.domain import rules
from timbra_cancellation.domain.facts import facts_of
from timbra_cancellation.domain.rules import Backoff, Invoice, Outcome, Problem, State
from timbra_shared.cfdi import cancelacion as sat
from timbra_shared.cfdi.acuse import AcuseInvalid, verify_acuse
from timbra_shared.cfdi.fecha import now_local
from timbra_shared.events import (
    CancellationAccepted,
    CancellationCompleted,
    CancellationEscalated,
    CancellationPending,
    CancellationRejected,
    CancelInvoice,
    DeadLetter,
    ErrorDetail,
    InvoiceRejected,
    InvoiceRequest,
    InvoiceRequested,
    InvoiceStamped,
    InvoiceStampFailed,
    NotificationRequested,
    SatCancellationStatus,
)
from timbra_shared.http import validation_problems
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.messaging import trace_of
from timbra_shared.mongo import Store, Transaction, Unit
from timbra_shared.pac.port import PacRejected, PacUnavailable, SatStatus
from timbra_shared.pac.registry import PacRegistry
from timbra_shared.telemetry import attached

log = get_logger(__name__)

HISTORY_KEPT = 20  # entries of earlier attempts carried into a new one


class CancellationRefused(Exception):
    """Timbra's checks refused the request: coded Spanish problems (HTTP status of the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.code}: {p.message}" for p in problems))
        self.problems = problems

    @property
    def status(self) -> int:
        return self.problems[0].status


class LeaseLost(Exception):
    """Another instance took the job (its lease expired): this one's transition is dropped."""


def acuse_url(invoice_id: str) -> str:
    return f"/v1/invoices/{invoice_id}/cancellation_receipt"


class CancellationService:
    def __init__(
        self,
        *,
        store: Store,
        invoices: InvoiceProjection,
        cancellations: CancellationRepository,
        issuers: IssuerDirectory,
        pacs: PacRegistry,
        config: CancellationConfig,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.invoices = invoices
        self.cancellations = cancellations
        self.issuers = issuers
        self.pacs = pacs
        self.config = config
        self.owner = new_id("cancel-")
        self.poll_backoff = Backoff(config.poll_base_s, config.poll_max_s)
        self.retry_backoff = Backoff(config.retry_base_s, config.retry_max_s)
        self._slots = asyncio.Semaphore(max(1, config.workers))
        self._tasks: set[asyncio.Task[None]] = set()
        registry = registry or CollectorRegistry()
        self.outcomes = Counter("timbra_cancellations_total", "Cancellation transitions", ["state"], registry=registry)
        self.pac_calls = Counter("timbra_cancellation_pac_calls_total", "Cancellation and status calls to the PAC", ["op", "result"], registry=registry)

    # ------------------------------------------------------------------ projections

    async def on_requested(self, event: InvoiceRequested) -> None:
        await self.on_requested_many([event])

    async def on_requested_many(self, events: list[InvoiceRequested]) -> None:
        await self.invoices.save_requests([(e.invoice_id, e.issuer_id, e.request.model_dump(mode="json", by_alias=True, exclude_none=True)) for e in events])

    async def on_stamped(self, event: InvoiceStamped) -> None:
        await self.on_stamped_many([event])

    async def on_stamped_many(self, events: list[InvoiceStamped]) -> None:
        """Project a consumed batch of stamps in one transaction (each keeps its dedupe), then end
        the substitutions waiting for any of them."""
        await self.store.transact_many([Unit(self._projecting(event), dedupe=f"{event.event_type}:{event.invoice_id}", trace=trace_of(event)) for event in events])
        waiting = await self.cancellations.by_substitutes([e.invoice_id for e in events])
        for event in events:
            if event.invoice_id in waiting:
                with attached(trace_of(event)):
                    await self._substitute_stamped(waiting[event.invoice_id], event)

    def _projecting(self, event: InvoiceStamped) -> Callable[[Transaction], Awaitable[None]]:
        summary = event.summary
        facts = facts_of(event.xml)
        fields = {
            "issuer_id": event.issuer_id,
            "uuid": event.uuid.upper(),
            "type": summary.type,
            "total": facts.get("total") or str(summary.total),
            "currency": summary.currency,
            "exchange": facts.get("exchange"),
            "rfc_emisor": summary.rfc_emisor,
            "rfc_receptor": summary.rfc_receptor,
            "nombre_receptor": summary.nombre_receptor,
            "serie": summary.serie,
            "folio": summary.folio,
            "fecha": facts.get("fecha") or summary.fecha,
            "lugar": facts.get("lugar") or "06000",
            "global": facts.get("global", False),
            "related": facts.get("related", []),
            "fecha_timbrado": event.fecha_timbrado,
            "pac": event.pac,
            "projected_at": utcnow(),
        }

        async def work(tx: Transaction) -> None:
            await self.invoices.save_stamped(event.invoice_id, fields, session=tx.session)

        return work

    async def on_failed(self, event: InvoiceRejected | InvoiceStampFailed) -> None:
        """A substitute that was rejected or failed to stamp ends its substitution."""
        waiting = await self.cancellations.by_substitute(event.invoice_id)
        if waiting is None:
            return
        errors = [ErrorDetail(code=e.code, message=e.message, source=e.source, path=e.path) for e in event.errors]
        await self._finish_rejected(waiting, by="timbra", message=f"La factura sustituta {event.invoice_id} no se timbró: {event.message}",
                                    errors=errors or [ErrorDetail(code="TIMBRA_CANCEL_SUBSTITUTE_FAILED", message=event.message)], owner=None)

    async def on_issuer(self, profile: dict[str, Any]) -> None:
        await self.issuers.upsert(profile)

    # ------------------------------------------------------------------ requests

    async def _invoice(self, issuer_id: str, invoice_id: str) -> tuple[dict[str, Any], Invoice]:
        doc = await self.invoices.get(invoice_id, issuer_id)
        if doc is None:
            raise CancellationRefused([Problem("TIMBRA_CANCEL_NOT_FOUND", "Factura no encontrada.", status=404)])
        return doc, Invoice.from_doc(doc)

    async def _check(self, issuer_id: str, invoice_id: str, motive: str, substitution: str | None, *, guided: bool = False,
                     ours: int | None = None) -> tuple[dict[str, Any], Invoice, Invoice | None, dict[str, Any] | None]:
        """Timbra's checks before the PAC. ``guided``: the substitute does not exist yet (only the
        original is checked); ``ours``: the attempt already holding the invoice (the guided
        substitution's own document), which does not count as "in process"."""
        doc, invoice = await self._invoice(issuer_id, invoice_id)
        current = await self.cancellations.get(invoice_id)
        state = current["state"] if current and current["attempt"] != ours else None
        problems = [] if guided else rules.check_motive(motive, substitution)
        problems += rules.check_invoice(invoice, motive, state, self._now_local(doc))
        substitute = None
        if not problems and not guided and motive == "01" and substitution:
            sub_doc = await self.invoices.find(issuer_id, substitution)
            substitute = Invoice.from_doc(sub_doc) if sub_doc else None
            sub_state = await self.cancellations.get(substitute.invoice_id) if substitute else None
            problems += rules.check_substitute(invoice, substitute, sub_state["state"] if sub_state else None)
        if not problems and invoice.uuid:
            problems += rules.related_in_force_problem(await self.invoices.related_in_force(issuer_id, invoice.uuid))
        if problems:
            raise CancellationRefused(problems)
        return doc, invoice, substitute, current

    @staticmethod
    def _now_local(doc: dict[str, Any]) -> datetime:
        return now_local(doc.get("lugar") or "06000").replace(tzinfo=None)

    def _new_doc(self, doc: dict[str, Any], invoice: Invoice, motive: str, current: dict[str, Any] | None, *, state: State,
                 substitute: Invoice | None = None, substitute_id: str | None = None, command_id: str, source: str) -> dict[str, Any]:
        now = utcnow()
        expectation = rules.expect(invoice, self._now_local(doc)) if invoice.fecha else None
        history = list((current or {}).get("history") or [])[-HISTORY_KEPT:]
        history.append({"at": now, "event": state.value, "attempt": (current or {}).get("attempt", 0) + 1, "motive": motive})
        return {
            "_id": invoice.invoice_id,
            "issuer_id": invoice.issuer_id,
            "uuid": invoice.uuid,
            "rfc_emisor": invoice.rfc_emisor,
            "rfc_receptor": invoice.rfc_receptor,
            "total": doc.get("total"),
            "serie": doc.get("serie"),
            "folio": doc.get("folio"),
            "lugar": doc.get("lugar"),
            "motive": motive,
            "substitution_uuid": substitute.uuid if substitute else None,
            "substitution_invoice_id": substitute.invoice_id if substitute else substitute_id,
            "attempt": (current or {}).get("attempt", 0) + 1,
            "state": state.value,
            "phase": "request" if state == State.REQUESTED else None,
            "next_attempt_at": now,
            "lease_owner": self.owner if state == State.REQUESTED else None,
            "lease_until": now + timedelta(seconds=self.config.effective_lease_s) if state == State.REQUESTED else None,
            "pac": self.pacs.name_for(invoice.issuer_id),
            "expected": expectation.as_dict() if expectation else None,
            "request_attempts": 0,
            "polls": 0,
            "acuse": None,
            "sat": None,
            "requested_at": None,
            "completed_at": None,
            "command_id": command_id,
            "source": source,
            "message": None,
            "errors": None,
            "history": history,
            "created_at": now,
            "updated_at": now,
        }

    async def request(self, issuer_id: str, invoice_id: str, motive: str, substitution: str | None, *, livemode: bool = False,
                      command_id: str | None = None, source: str = "http") -> dict[str, Any]:
        """Check and accept a cancellation; the scheduler sends it to the PAC. Raises :class:`CancellationRefused`."""
        motive = (motive or "").strip()
        substitution = (substitution or "").strip() or None
        doc, invoice, substitute, current = await self._check(issuer_id, invoice_id, motive, substitution)
        command_id = command_id or new_id()
        new = self._new_doc(doc, invoice, motive, current, state=State.REQUESTED, substitute=substitute, command_id=command_id, source=source)

        async def work(tx: Transaction) -> None:
            if not await self.cancellations.put(new, expected_attempt=current["attempt"] if current else None, session=tx.session):
                raise _in_process(invoice)
            if source == "http":  # the command travels like one produced straight onto Kafka (webhooks, audit)
                tx.emit(CancelInvoice(event_id=command_id, invoice_id=invoice_id, issuer_id=issuer_id, motive=motive, substitution=substitution))

        try:
            await self.store.transact(work)
        except DuplicateKeyError:
            raise _in_process(invoice) from None
        self.outcomes.labels("requested").inc()
        self._spawn(new)
        return new

    async def on_command(self, command: CancelInvoice) -> None:
        """``cancellation.requested`` from Kafka (or the echo of an HTTP request, already accepted)."""
        current = await self.cancellations.get(command.invoice_id)
        if current is not None and current.get("command_id") == command.event_id:
            return
        try:
            await self.request(command.issuer_id, command.invoice_id, command.motive, command.substitution, command_id=command.event_id, source="kafka")
        except CancellationRefused as refused:
            doc = await self.invoices.get(command.invoice_id, command.issuer_id)

            async def work(tx: Transaction) -> None:
                tx.emit(CancellationRejected(
                    invoice_id=command.invoice_id, issuer_id=command.issuer_id, uuid=(doc or {}).get("uuid") or "", motive=command.motive,
                    attempt=0, by="timbra", message=refused.problems[0].message,
                    errors=[ErrorDetail(code=p.code, message=p.message, source="timbra", path=p.path) for p in refused.problems],
                ))

            await self.store.transact(work, dedupe=f"cancellation.refused:{command.event_id}")
            log.info("cancellation.refused", invoice_id=command.invoice_id, code=refused.problems[0].code)

    async def substitute(self, issuer_id: str, invoice_id: str, changes: dict[str, Any], *, livemode: bool = False) -> dict[str, Any]:
        """The guided substitution of seed 003 in one call: request the substitute (the original's
        request with ``changes`` and CfdiRelacionados 04 → the original); once it is stamped the
        original is cancelled with motive 01 and the new UUID."""
        doc, invoice, _, current = await self._check(issuer_id, invoice_id, "01", None, guided=True)
        original = doc.get("request")
        if not original:
            raise CancellationRefused([Problem("TIMBRA_CANCEL_SUBSTITUTION_SOURCE_MISSING",
                                               "No se encontraron los datos con que se pidió la factura original; emite la sustituta con POST /v1/invoices "
                                               "(related 04) y cancela con motive=01&substitution=<id>.", status=409)])
        merged = {k: v for k, v in original.items() if k not in ("idempotency_key", "ticket_id", "ticket_ids", "related")}
        merged.update({k: v for k, v in changes.items() if k not in ("related",)})
        extra = [r for r in changes.get("related") or original.get("related") or [] if isinstance(r, dict) and r.get("relationship") != sat.SUSTITUCION]
        merged["related"] = [*extra, {"relationship": sat.SUSTITUCION, "uuids": [invoice.uuid]}]
        try:
            request = InvoiceRequest.model_validate(merged)
        except ValidationError as exc:
            problems = [Problem("TIMBRA_VALIDATION", p["message"], path=f"changes.{p['path']}" if p.get("path") else "changes") for p in validation_problems(exc.errors())]
            raise CancellationRefused(problems) from None
        substitute_id = new_id("inv_")
        command_id = new_id()
        new = self._new_doc(doc, invoice, "01", current, state=State.AWAITING_SUBSTITUTE, substitute_id=substitute_id, command_id=command_id, source="substitution")

        async def work(tx: Transaction) -> None:
            if not await self.cancellations.put(new, expected_attempt=current["attempt"] if current else None, session=tx.session):
                raise _in_process(invoice)
            tx.emit(InvoiceRequested(invoice_id=substitute_id, issuer_id=issuer_id, request=request, livemode=livemode, source="http"))

        try:
            await self.store.transact(work)
        except DuplicateKeyError:
            raise _in_process(invoice) from None
        self.outcomes.labels("awaiting_substitute").inc()
        return new

    async def _substitute_stamped(self, waiting: dict[str, Any], event: InvoiceStamped) -> None:
        """The substitute is stamped: cancel the original with motive 01 and the new UUID."""
        try:
            await self._check(waiting["issuer_id"], waiting["_id"], "01", event.invoice_id, ours=waiting["attempt"])
        except CancellationRefused as refused:
            return await self._finish_rejected(waiting, by="timbra", message=refused.problems[0].message, errors=_details(refused.problems), owner=None)
        now = utcnow()
        changes = {
            "state": State.REQUESTED.value, "phase": "request", "next_attempt_at": now, "substitution_uuid": event.uuid.upper(),
            "lease_owner": self.owner, "lease_until": now + timedelta(seconds=self.config.effective_lease_s), "updated_at": now,
        }

        async def work(tx: Transaction) -> None:
            if not await self.cancellations.update(waiting["_id"], None, waiting["attempt"], changes, release=False, session=tx.session,
                                                   history={"at": now, "event": "substitute_stamped", "uuid": event.uuid}):
                raise LeaseLost(waiting["_id"])
            tx.emit(CancelInvoice(event_id=waiting["command_id"], invoice_id=waiting["_id"], issuer_id=waiting["issuer_id"], motive="01", substitution=event.uuid))

        await self.store.transact(work, dedupe=f"cancellation.substitute_stamped:{waiting['_id']}:{waiting['attempt']}")
        fresh = await self.cancellations.get(waiting["_id"])
        if fresh is not None and fresh["state"] == State.REQUESTED and fresh.get("lease_owner") == self.owner:
            self._spawn(fresh)

    # ------------------------------------------------------------------ the scheduler

    def _spawn(self, job: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, job: dict[str, Any]) -> None:
        async with self._slots:
            try:
                await self.step(job)
            except LeaseLost:
                log.info("cancellation.lease_lost", invoice_id=job["_id"])
            except Exception as exc:
                log.exception("cancellation.step_failed", invoice_id=job["_id"], error=repr(exc))
                n = int(job.get("request_attempts") or 0) + 1
                await self.cancellations.update(job["_id"], self.owner, job["attempt"], {"next_attempt_at": utcnow() + timedelta(seconds=self.retry_backoff.delay(n)),
                                                                                         "last_error": repr(exc)[:500]})

    async def run_scheduler(self) -> None:
        """Claim due jobs under a lease (new requests of a dead instance, retries, polls)."""
        while True:
            claimed = 0
            while len(self._tasks) < self.config.workers * 2:
                job = await self.cancellations.claim_due(self.owner, utcnow(), self.config.effective_lease_s)
                if job is None:
                    break
                claimed += 1
                self._spawn(job)
            await asyncio.sleep(self.config.scheduler_poll_s)

    async def step(self, job: dict[str, Any]) -> None:
        if job.get("phase") == "request":
            job = await self._send_request(job)
            if job is None:
                return
        if job.get("phase") == "poll":
            await self._poll(job)

    def _too_old(self, job: dict[str, Any], since_field: str) -> bool:
        since = job.get(since_field) or job.get("created_at")
        return since is not None and utcnow() - since > timedelta(seconds=self.config.give_up_s)

    async def _send_request(self, job: dict[str, Any]) -> dict[str, Any] | None:
        pac = self.pacs.get(job["pac"])
        try:
            result = await pac.cancel(job["rfc_emisor"], job["uuid"], job["motive"], job.get("substitution_uuid"))
        except PacUnavailable as exc:
            self.pac_calls.labels("cancel", "unavailable").inc()
            n = int(job.get("request_attempts") or 0) + 1
            if self._too_old(job, "created_at"):
                await self._escalate(job, f"El PAC no recibió la solicitud de cancelación en {self.config.give_up_s / 3600:.0f} h: {exc}", None)
                return None
            delay = self.retry_backoff.delay(n)
            await self.cancellations.update(job["_id"], self.owner, job["attempt"], {"request_attempts": n, "next_attempt_at": utcnow() + timedelta(seconds=delay),
                                                                                     "last_error": str(exc)[:500], "updated_at": utcnow()},
                                            history={"at": utcnow(), "event": "pac_unavailable", "error": str(exc)[:200]})
            log.warning("cancellation.pac_unavailable", invoice_id=job["_id"], attempt=n, retry_in_s=round(delay, 2), error=str(exc))
            return None
        except PacRejected as exc:
            self.pac_calls.labels("cancel", "rejected").inc()
            message = exc.message + (f" {exc.detail}" if exc.detail else "")
            await self._finish_rejected(job, by="sat" if exc.source == "sat" or exc.code[:1].isdigit() or exc.code.startswith("CA") else "pac",
                                        message=f"El SAT rechazó la solicitud de cancelación: {message}",
                                        errors=[ErrorDetail(code=exc.code, message=message, source="sat")], owner=self.owner)
            return None
        self.pac_calls.labels("cancel", "ok").inc()
        try:
            acuse = verify_acuse(result.acuse)
            verified, certificate = True, acuse.no_certificado_sat
        except AcuseInvalid as exc:
            log.error("cancellation.acuse_invalid", invoice_id=job["_id"], error=exc.message)
            verified, certificate = False, None
        now = utcnow()
        changes = {"phase": "poll", "acuse": Binary(result.acuse), "acuse_code": result.code, "acuse_verified": verified, "acuse_certificate": certificate,
                   "requested_at": now, "poll_started_at": now, "polls": 0, "next_attempt_at": now, "updated_at": now,
                   "request_attempts": int(job.get("request_attempts") or 0) + 1, "last_error": None}
        if not await self.cancellations.update(job["_id"], self.owner, job["attempt"], changes, release=False,
                                               history={"at": now, "event": "sat_received", "estatus_uuid": result.code}):
            raise LeaseLost(job["_id"])
        return {**job, **changes}

    async def _poll(self, job: dict[str, Any]) -> None:
        pac = self.pacs.get(job["pac"])
        try:
            status = await pac.status(job["uuid"], job["rfc_emisor"], job["rfc_receptor"], job["total"])
        except PacUnavailable as exc:
            self.pac_calls.labels("status", "unavailable").inc()
            n = int(job.get("status_failures") or 0) + 1
            await self.cancellations.update(job["_id"], self.owner, job["attempt"], {"status_failures": n, "last_error": str(exc)[:500], "updated_at": utcnow(),
                                                                                     "next_attempt_at": utcnow() + timedelta(seconds=self.retry_backoff.delay(n))})
            return
        self.pac_calls.labels("status", "ok").inc()
        reading = rules.read_status(status.estado, status.estatus_cancelacion)
        if reading.outcome == Outcome.COMPLETED:
            return await self._complete(job, status, reading)
        if reading.outcome == Outcome.REJECTED:
            return await self._finish_rejected(job, by="receptor", message=f"El receptor {job['rfc_receptor']} rechazó la cancelación de la factura {job['uuid']}; sigue vigente.",
                                               errors=[ErrorDetail(code="TIMBRA_CANCEL_REJECTED_BY_RECEPTOR", message="Solicitud rechazada por el receptor.", source="sat")],
                                               owner=self.owner, status=status)
        if reading.outcome == Outcome.UNKNOWN:
            return await self._escalate(job, f"El SAT respondió un estado desconocido: Estado «{status.estado}», EstatusCancelacion «{status.estatus_cancelacion}».", status)
        if self._too_old(job, "poll_started_at"):
            return await self._escalate(job, f"Sin estado final del SAT tras {self.config.give_up_s / 86400:.1f} días (último: Estado «{status.estado}», "
                                             f"EstatusCancelacion «{status.estatus_cancelacion}»).", status)
        polls = int(job.get("polls") or 0) + 1
        now = utcnow()
        changes = {"polls": polls, "next_attempt_at": now + timedelta(seconds=self.poll_backoff.delay(polls)), "sat": status.as_dict(), "sat_checked_at": now,
                   "updated_at": now, "status_failures": 0}
        if reading.outcome == Outcome.PENDING and job["state"] != State.PENDING:
            changes["state"] = State.PENDING.value
            respond_by = sat.plazo_respuesta(self._now_local(job))

            async def work(tx: Transaction) -> None:
                if not await self.cancellations.update(job["_id"], self.owner, job["attempt"], {**changes, "respond_by": respond_by}, session=tx.session,
                                                       history={"at": now, "event": "pending", "estatus": status.estatus_cancelacion}):
                    raise LeaseLost(job["_id"])
                event = CancellationPending(**self._event_fields(job, status), respond_by=respond_by)
                tx.emit(event)
                await self._notify(tx, job, "cancellation.pending", "en proceso",
                                   f"El SAT recibió la solicitud de cancelación de la factura {_name(job)} (UUID {job['uuid']}) con el motivo {job['motive']} "
                                   f"({sat.MOTIVOS.get(job['motive'], '')}). El receptor {job['rfc_receptor']} tiene hasta el {respond_by.date().isoformat()} "
                                   "(3 días hábiles) para aceptarla o rechazarla; si no responde, se cancela por plazo vencido.")

            await self.store.transact(work, dedupe=f"cancellation.pending:{job['_id']}:{job['attempt']}")
            self.outcomes.labels("pending").inc()
            return
        await self.cancellations.update(job["_id"], self.owner, job["attempt"], changes)

    def _event_fields(self, job: dict[str, Any], status: SatStatus | None) -> dict[str, Any]:
        return {
            "invoice_id": job["_id"], "issuer_id": job["issuer_id"], "uuid": job["uuid"] or "", "motive": job["motive"],
            "substitution_uuid": job.get("substitution_uuid"), "substitution_invoice_id": job.get("substitution_invoice_id"), "attempt": job["attempt"],
            "sat": SatCancellationStatus(estado=status.estado, es_cancelable=status.es_cancelable, estatus_cancelacion=status.estatus_cancelacion) if status else SatCancellationStatus(),
        }

    async def _complete(self, job: dict[str, Any], status: SatStatus, reading: rules.Reading) -> None:
        now = utcnow()
        changes = {"state": State.COMPLETED.value, "phase": None, "sat": status.as_dict(), "sat_checked_at": now, "completed_at": now,
                   "acceptance": reading.acceptance, "updated_at": now}

        async def work(tx: Transaction) -> None:
            if not await self.cancellations.update(job["_id"], self.owner, job["attempt"], changes, session=tx.session,
                                                   history={"at": now, "event": "completed", "estatus": status.estatus_cancelacion}):
                raise LeaseLost(job["_id"])
            await self.invoices.set_status(job["_id"], rules.CANCELLED, session=tx.session)
            fields = self._event_fields(job, status)
            if reading.accepted_by:
                tx.emit(CancellationAccepted(**fields, by=reading.accepted_by))  # type: ignore[arg-type]
            tx.emit(CancellationCompleted(**fields, acceptance=reading.acceptance, acuse_url=acuse_url(job["_id"])))  # type: ignore[arg-type]
            how = {"sin_aceptacion": "sin necesidad de aceptación del receptor", "con_aceptacion": "con la aceptación del receptor",
                   "plazo_vencido": "por plazo vencido (el receptor no respondió en 3 días hábiles)"}[reading.acceptance or "sin_aceptacion"]
            full = await self.cancellations.get(job["_id"], session=tx.session)
            acuse = bytes((full or {}).get("acuse") or b"")
            await self._notify(tx, job, "cancellation.completed", "cancelada",
                               f"La factura {_name(job)} (UUID {job['uuid']}) quedó cancelada ante el SAT {how}, motivo {job['motive']} "
                               f"({sat.MOTIVOS.get(job['motive'], '')}). Adjuntamos el acuse de cancelación; también puedes descargarlo en {acuse_url(job['_id'])}.",
                               [{"filename": f"acuse-{job['uuid']}.xml", "content_type": "application/xml", "base64": base64.b64encode(acuse).decode()}] if acuse else [])

        await self.store.transact(work, dedupe=f"cancellation.completed:{job['_id']}:{job['attempt']}")
        self.outcomes.labels("completed").inc()
        log.info("cancellation.completed", invoice_id=job["_id"], acceptance=reading.acceptance)

    async def _finish_rejected(self, job: dict[str, Any], *, by: str, message: str, errors: list[ErrorDetail], owner: str | None, status: SatStatus | None = None) -> None:
        now = utcnow()
        changes = {"state": State.REJECTED.value, "phase": None, "message": message, "errors": [e.model_dump() for e in errors], "rejected_by": by,
                   "updated_at": now, **({"sat": status.as_dict(), "sat_checked_at": now} if status else {})}

        async def work(tx: Transaction) -> None:
            if not await self.cancellations.update(job["_id"], owner, job["attempt"], changes, session=tx.session, history={"at": now, "event": "rejected", "by": by}):
                raise LeaseLost(job["_id"])
            tx.emit(CancellationRejected(**self._event_fields(job, status), by=by, message=message, errors=errors))  # type: ignore[arg-type]
            await self._notify(tx, job, "cancellation.rejected", "no procede", f"La solicitud de cancelación de la factura {_name(job)} (UUID {job.get('uuid') or '—'}) "
                               f"no procedió: {message} La factura sigue vigente.")

        await self.store.transact(work, dedupe=f"cancellation.rejected:{job['_id']}:{job['attempt']}")
        self.outcomes.labels("rejected").inc()

    async def _escalate(self, job: dict[str, Any], reason: str, status: SatStatus | None) -> None:
        now = utcnow()
        changes = {"state": State.ESCALATED.value, "phase": None, "message": reason, "escalated_at": now, "updated_at": now,
                   **({"sat": status.as_dict(), "sat_checked_at": now} if status else {})}

        async def work(tx: Transaction) -> None:
            if not await self.cancellations.update(job["_id"], self.owner, job["attempt"], changes, session=tx.session, history={"at": now, "event": "escalated", "reason": reason}):
                raise LeaseLost(job["_id"])
            tx.emit(CancellationEscalated(**self._event_fields(job, status), reason=reason))
            tx.emit(DeadLetter(service="cancellation", original_topic=CancelInvoice.topic, key=job["_id"], reason=reason, error_type="CancellationEscalated",
                               payload=json.dumps({"invoice_id": job["_id"], "issuer_id": job["issuer_id"], "uuid": job["uuid"], "motive": job["motive"],
                                                   "attempt": job["attempt"], "sat": status.as_dict() if status else None}, ensure_ascii=False)),
                    key=job["_id"])
            await self._notify(tx, job, "cancellation.escalated", "en revisión", f"La cancelación de la factura {_name(job)} (UUID {job['uuid']}) quedó en revisión: {reason} "
                               "Nuestro equipo de operación la revisará; no hace falta que la solicites de nuevo.")

        await self.store.transact(work, dedupe=f"cancellation.escalated:{job['_id']}:{job['attempt']}:{job.get('resumes', 0)}")
        self.outcomes.labels("escalated").inc()
        log.error("cancellation.escalated", invoice_id=job["_id"], reason=reason)

    async def _notify(self, tx: Transaction, job: dict[str, Any], kind: str, what: str, body: str, attachments: list[dict[str, str]] | None = None) -> None:
        issuer = await self.issuers.get(job["issuer_id"])
        email = (issuer or {}).get("email")
        if not email:
            return
        tx.emit(NotificationRequested(issuer_id=job["issuer_id"], kind=kind, to=[email], subject=f"Cancelación de la factura {_name(job)}: {what}",
                                      body=body, attachments=attachments or []))

    # ------------------------------------------------------------------ reads

    async def acuse(self, invoice_id: str, issuer_id: str) -> bytes | None:
        doc = await self.cancellations.get(invoice_id, issuer_id)
        return bytes(doc["acuse"]) if doc and doc.get("acuse") else None


def _name(job: dict[str, Any]) -> str:
    return f"{job.get('serie') or ''}{job.get('folio') or ''}".strip() or job["_id"]


def _details(problems: list[Problem]) -> list[ErrorDetail]:
    return [ErrorDetail(code=p.code, message=p.message, source="timbra", path=p.path) for p in problems]


def _in_process(invoice: Invoice) -> CancellationRefused:
    return CancellationRefused([Problem("TIMBRA_CANCEL_IN_PROCESS", f"La factura {invoice.uuid} ya tiene una solicitud de cancelación en proceso.", status=409)])


def present(doc: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a cancellation (``GET /v1/invoices/{id}/cancellation``)."""

    def iso(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    out: dict[str, Any] = {
        "invoice_id": doc["_id"],
        "uuid": doc.get("uuid"),
        "cancellation_status": doc["state"],
        "motive": doc["motive"],
        "motive_description": sat.MOTIVOS.get(doc["motive"]),
        "substitution": {"invoice_id": doc.get("substitution_invoice_id"), "uuid": doc.get("substitution_uuid")} if doc.get("substitution_invoice_id") else None,
        "attempt": doc["attempt"],
        "expected": doc.get("expected"),
        "sat": doc.get("sat"),
        "acceptance": doc.get("acceptance"),
        "requested_at": iso(doc.get("requested_at")),
        "respond_by": iso(doc.get("respond_by")),
        "completed_at": iso(doc.get("completed_at")),
        "acuse_url": acuse_url(doc["_id"]) if doc.get("acuse") else None,
        "created_at": iso(doc.get("created_at")),
        "updated_at": iso(doc.get("updated_at")),
        "history": [{k: iso(v) for k, v in h.items()} for h in doc.get("history") or []],
    }
    if doc.get("message"):
        out["message"] = doc["message"]
    if doc.get("errors"):
        out["errors"] = doc["errors"]
    return out
