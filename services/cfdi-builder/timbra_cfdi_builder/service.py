"""Use cases of the cfdi-builder: accept a request, build the CFDI, track every step, re-drive
invoices that got stuck."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from pymongo.errors import DuplicateKeyError

from timbra_cfdi_builder.adapters.repository import FolioCounter, InvoiceRepository, IssuerDirectory
from timbra_cfdi_builder.domain.invoice import SERVICE_OF_STATUS, STATUS_OF_TOPIC, InvoiceStatus
from timbra_shared.auth import Principal
from timbra_shared.errors import Problem, RetryLater
from timbra_shared.events import (
    Envelope,
    ErrorDetail,
    InvoiceBuilt,
    InvoiceRejected,
    InvoiceRequest,
    InvoiceRequested,
    InvoiceSummary,
    IssuerProfileChanged,
    RedriveInvoice,
)
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.mongo import Store, Transaction
from timbra_shared.telemetry import attached, carrier_from_current, current_trace_id

log = get_logger(__name__)

ISSUER_WAIT = timedelta(seconds=60)


@dataclass
class BuiltCfdi:
    xml: bytes
    summary: InvoiceSummary


class InvoiceInvalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.code}: {p.message}" for p in problems))
        self.problems = problems


class BuildCfdi(Protocol):
    def __call__(self, request: InvoiceRequest, issuer: dict[str, Any], *, serie: str | None, folio: int | None, now: datetime) -> BuiltCfdi: ...


class InvoiceService:
    def __init__(
        self,
        *,
        store: Store,
        invoices: InvoiceRepository,
        issuers: IssuerDirectory,
        folios: FolioCounter,
        build_cfdi: BuildCfdi,
        publish_redrive: Callable[[RedriveInvoice], Awaitable[None]],
        stuck_after: float,
        sweep_interval: float,
    ) -> None:
        self.store = store
        self.invoices = invoices
        self.issuers = issuers
        self.folios = folios
        self.build_cfdi = build_cfdi
        self.publish_redrive = publish_redrive
        self.stuck_after = timedelta(seconds=stuck_after)
        self.sweep_interval = sweep_interval

    # ------------------------------------------------------------------ requests

    async def request(self, principal: Principal, request: InvoiceRequest) -> tuple[dict[str, Any], bool]:
        """Accept an invoice request (HTTP). Returns the invoice and whether it is new."""
        assert principal.issuer_id
        if request.idempotency_key:
            existing = await self.invoices.by_idempotency_key(principal.issuer_id, request.idempotency_key)
            if existing:
                return existing, False
        invoice_id = new_id("inv_")
        event = InvoiceRequested(invoice_id=invoice_id, issuer_id=principal.issuer_id, request=request, livemode=principal.livemode, source="http")
        doc = self._new_invoice(event)

        async def work(tx: Transaction) -> None:
            await self.invoices.insert(doc, session=tx.session)
            tx.emit(event)

        try:
            await self.store.transact(work)
        except DuplicateKeyError:
            existing = await self.invoices.by_idempotency_key(principal.issuer_id, request.idempotency_key or "")
            if existing:
                return existing, False
            raise
        return doc, True

    def _new_invoice(self, event: InvoiceRequested) -> dict[str, Any]:
        now = utcnow()
        return {
            "_id": event.invoice_id,
            "issuer_id": event.issuer_id,
            "livemode": event.livemode,
            "source": event.source,
            "idempotency_key": event.request.idempotency_key,
            "request": event.request.model_dump(mode="json", by_alias=True),
            "status": InvoiceStatus.REQUESTED.value,
            "status_rank": 0,
            "timeline": [{"status": "requested", "at": event.occurred_at, "service": "cfdi-builder"}],
            "trace_id": current_trace_id(),
            "trace": carrier_from_current(),
            "created_at": now,
            "updated_at": now,
            "redrives": 0,
            "redrive_at": None,
        }

    async def on_requested(self, event: InvoiceRequested) -> None:
        existing = await self.invoices.get(event.invoice_id)
        if existing is None and event.request.idempotency_key:
            twin = await self.invoices.by_idempotency_key(event.issuer_id, event.request.idempotency_key)
            if twin is not None:
                log.info("invoice.duplicate_request", invoice_id=event.invoice_id, original=twin["_id"])
                return
        if existing is not None and existing["issuer_id"] != event.issuer_id:
            log.error("invoice.issuer_mismatch", invoice_id=event.invoice_id)
            return
        issuer = await self.issuers.get(event.issuer_id)
        if issuer is None and utcnow() - event.occurred_at < ISSUER_WAIT:
            raise RetryLater(f"issuer {event.issuer_id} not yet projected")

        async def work(tx: Transaction) -> None:
            if existing is None:
                await self.invoices.insert(self._new_invoice(event), session=tx.session)
            if issuer is None:
                self._reject(tx, event, [Problem("TIMBRA_ISSUER_UNKNOWN", "El emisor no existe o no ha terminado su configuración.")])
                return
            if event.request.type not in issuer.get("enabled_types", ["I", "E", "T", "P"]):
                self._reject(tx, event, [Problem("TIMBRA_TYPE_DISABLED", f"El tipo de comprobante {event.request.type} no está habilitado para este emisor.", path="type")])
                return
            serie = event.request.series or issuer.get("series", {}).get(event.request.type)
            folio = await self.folios.next(event.issuer_id, serie or "", session=tx.session)
            try:
                built = self.build_cfdi(event.request, issuer, serie=serie, folio=folio, now=utcnow())
            except InvoiceInvalid as invalid:
                self._reject(tx, event, invalid.problems)
                return
            await self.invoices.apply_status(
                event.invoice_id, InvoiceStatus.BUILT, at=utcnow(), service="cfdi-builder",
                fields={"serie": built.summary.serie, "folio": built.summary.folio, "total": str(built.summary.total), "summary": built.summary.model_dump(mode="json")},
                session=tx.session,
            )
            tx.emit(InvoiceBuilt(invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=built.summary, xml=built.xml.decode()))

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")

    def _reject(self, tx: Transaction, event: InvoiceRequested, problems: list[Problem]) -> None:
        message = problems[0].message if len(problems) == 1 else f"La factura tiene {len(problems)} errores."
        tx.emit(InvoiceRejected(
            invoice_id=event.invoice_id,
            issuer_id=event.issuer_id,
            stage="requested",
            service="cfdi-builder",
            message=message,
            errors=[ErrorDetail(code=p.code, message=p.message, source=p.source, path=p.path) for p in problems],
        ))

    # ------------------------------------------------------------------ read model

    async def on_status(self, event: Envelope) -> None:
        """Every pipeline event lands on the invoice's timeline, once."""
        status = STATUS_OF_TOPIC[event.event_type]
        fields: dict[str, Any] = {}
        uuid = getattr(event, "uuid", None)
        if uuid:
            fields["uuid"] = uuid
        errors = getattr(event, "errors", None)
        if status in (InvoiceStatus.REJECTED, InvoiceStatus.STAMP_FAILED):
            fields["errors"] = [e.model_dump() for e in errors or []]
            fields["message"] = getattr(event, "message", None)
        service = getattr(event, "service", None) or SERVICE_OF_STATUS.get(status, "")
        changed = await self.invoices.apply_status(event.invoice_id, status, at=event.occurred_at, service=service, fields=fields)
        if changed:
            structlog.contextvars.bind_contextvars(invoice_id=event.invoice_id)
            log.info("invoice.status", status=status.value)

    async def on_issuer(self, profile: IssuerProfileChanged) -> None:
        await self.issuers.upsert(profile.model_dump(mode="json"))

    # ------------------------------------------------------------------ sweeper

    async def sweep_once(self) -> int:
        stuck = await self.invoices.stuck(older_than=self.stuck_after)
        for doc in stuck:
            attempt = int(doc.get("redrives") or 0) + 1
            with attached(doc.get("trace")):  # the retry shows up in the invoice's own trace
                await self.publish_redrive(RedriveInvoice(invoice_id=doc["_id"], issuer_id=doc["issuer_id"], stuck_status=doc["status"], attempt=attempt))
            backoff = self.stuck_after * min(2 ** (attempt - 1), 32)
            await self.invoices.mark_redriven(doc["_id"], attempt, utcnow() + backoff)
        if stuck:
            log.warning("sweeper.redriven", invoices=len(stuck))
        return len(stuck)

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep_once()
            except Exception as exc:
                log.warning("sweeper.failed", error=repr(exc))

