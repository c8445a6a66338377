"""Use cases of the cfdi-builder: accept a request, build the CFDI, track every step, re-drive
invoices that got stuck."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from pymongo.errors import DuplicateKeyError

from timbra_cfdi_builder.adapters.repository import CatalogProjection, FolioCounter, InvoiceRepository, IssuerDirectory
from timbra_cfdi_builder.domain.invoice import SERVICE_OF_STATUS, STATUS_OF_TOPIC, InvoiceStatus
from timbra_shared.auth import Principal
from timbra_shared.errors import Problem, RetryLater
from timbra_shared.events import (
    CancellationChange,
    CatalogChange,
    CustomerChanged,
    CustomerIn,
    Envelope,
    ErrorDetail,
    InvoiceBuilt,
    InvoiceRejected,
    InvoiceRequest,
    InvoiceRequested,
    InvoiceSummary,
    IssuerProfileChanged,
    ItemIn,
    ProductChanged,
    ProductIn,
    RedriveInvoice,
    TicketChanged,
)
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.messaging import trace_of
from timbra_shared.mongo import Store, Transaction, Unit
from timbra_shared.telemetry import attached, carrier_from_current, current_trace_id

log = get_logger(__name__)

ISSUER_WAIT = timedelta(seconds=60)
CATALOG_WAIT = timedelta(seconds=10)  # a customer/product/ticket created just now may not be projected yet


@dataclass
class BuiltCfdi:
    xml: bytes
    summary: InvoiceSummary


class InvoiceInvalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.code}: {p.message}" for p in problems))
        self.problems = problems


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request."""

    def __init__(self, invoice_id: str) -> None:
        super().__init__(invoice_id)
        self.invoice_id = invoice_id


IDEMPOTENCY_CONFLICT = Problem(
    "TIMBRA_IDEMPOTENCY_CONFLICT",
    "La llave de idempotencia ya se usó con otra solicitud distinta; usa una llave nueva para una factura nueva.",
    path="idempotency_key",
)


def same_request(stored: dict[str, Any] | None, request: InvoiceRequest) -> bool:
    return stored == request.model_dump(mode="json", by_alias=True)


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
        catalog: CatalogProjection | None = None,
        catalog_wait: timedelta = CATALOG_WAIT,
    ) -> None:
        self.store = store
        self.invoices = invoices
        self.issuers = issuers
        self.folios = folios
        self.build_cfdi = build_cfdi
        self.publish_redrive = publish_redrive
        self.stuck_after = timedelta(seconds=stuck_after)
        self.sweep_interval = sweep_interval
        self.catalog = catalog
        self.catalog_wait = catalog_wait

    # ------------------------------------------------------------------ requests

    async def request(self, principal: Principal, request: InvoiceRequest) -> tuple[dict[str, Any], bool]:
        """Accept an invoice request (HTTP). Returns the invoice and whether it is new; a known
        idempotency key returns the invoice it created, or raises ``IdempotencyConflict`` when the
        request differs from the one it was first used with."""
        assert principal.issuer_id
        if request.idempotency_key:
            existing = await self.invoices.by_idempotency_key(principal.issuer_id, request.idempotency_key)
            if existing:
                return self._replayed(existing, request), False
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
                return self._replayed(existing, request), False
            raise
        return doc, True

    @staticmethod
    def _replayed(existing: dict[str, Any], request: InvoiceRequest) -> dict[str, Any]:
        if not same_request(existing.get("request"), request):
            raise IdempotencyConflict(existing["_id"])
        return existing

    def _new_invoice(self, event: InvoiceRequested) -> dict[str, Any]:
        now = utcnow()
        return {
            "_id": event.invoice_id,
            "issuer_id": event.issuer_id,
            "livemode": event.livemode,
            "source": event.source,
            "idempotency_key": event.request.idempotency_key,
            "request": event.request.model_dump(mode="json", by_alias=True),
            "customer_id": event.request.customer_id,
            "customer_rfc": event.request.customer.rfc.upper() if event.request.customer else None,
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
        await self.on_requested_many([event])

    async def on_requested_many(self, events: list[InvoiceRequested]) -> None:
        """Build a consumed batch of requests and commit it in one transaction; each event keeps
        its own dedupe. The invoices are read in one query and each issuer once. A request that
        must wait (``RetryLater``) first commits the ones before it, and so does a request whose
        idempotency key an earlier one in the batch used, so that it finds its twin."""
        known = await self.invoices.get_many([e.invoice_id for e in events])
        issuers: dict[str, dict[str, Any] | None] = {}
        units: list[Unit] = []
        keys: set[tuple[str, str]] = set()

        async def commit() -> None:
            if units:
                await self.store.transact_many(units)
            units.clear()
            keys.clear()

        for event in events:
            key = (event.issuer_id, event.request.idempotency_key or "")
            if key in keys:
                await commit()
            try:
                work = await self._building(event, known.get(event.invoice_id), issuers)
            except RetryLater:
                await commit()
                raise
            if work is not None:
                units.append(Unit(work, dedupe=f"{event.event_type}:{event.invoice_id}", trace=trace_of(event)))
                if event.request.idempotency_key:
                    keys.add(key)
        await commit()

    async def _building(
        self, event: InvoiceRequested, existing: dict[str, Any] | None, issuers: dict[str, dict[str, Any] | None]
    ) -> Callable[[Transaction], Awaitable[None]] | None:
        """What ``event`` does (or None when it does nothing): the look-ups happen here, the
        writes in the returned unit of work. Raises ``RetryLater`` while its issuer or catalog
        references are not yet projected."""
        if existing is None and event.request.idempotency_key:
            twin = await self.invoices.by_idempotency_key(event.issuer_id, event.request.idempotency_key)
            if twin is not None and same_request(twin.get("request"), event.request):
                log.info("invoice.duplicate_request", invoice_id=event.invoice_id, original=twin["_id"])
                return None
            if twin is not None:  # produced straight onto Kafka: no one to answer 409, so it becomes a rejected invoice
                return self._rejecting_new(event, [IDEMPOTENCY_CONFLICT], idempotency_key=None)
        if existing is not None and existing["issuer_id"] != event.issuer_id:
            log.error("invoice.issuer_mismatch", invoice_id=event.invoice_id)
            return None
        if event.issuer_id not in issuers:
            issuers[event.issuer_id] = await self.issuers.get(event.issuer_id)
        issuer = issuers[event.issuer_id]
        if issuer is None and abs(utcnow() - event.occurred_at) < ISSUER_WAIT:  # abs: a producer's clock ahead must not block the partition
            raise RetryLater(f"issuer {event.issuer_id} not yet projected")
        request, problems, missing = await self._resolve(event, issuer)
        if any(_fresh(i, self.catalog_wait) for i in missing) and utcnow() - event.occurred_at < self.catalog_wait:
            raise RetryLater(f"catalog references not yet projected: {', '.join(missing)}")
        tickets = ([request.ticket_id] if request.ticket_id else []) + list(request.ticket_ids)

        async def work(tx: Transaction) -> None:
            if existing is None:
                await self.invoices.insert(self._new_invoice(event), session=tx.session)
            if issuer is None:
                self._reject(tx, event, [Problem("TIMBRA_ISSUER_UNKNOWN", "El emisor no existe o no ha terminado su configuración.")])
                return
            if event.request.type not in issuer.get("enabled_types", ["I", "E", "T", "P"]):
                self._reject(tx, event, [Problem("TIMBRA_TYPE_DISABLED", f"El tipo de comprobante {event.request.type} no está habilitado para este emisor.", path="type")])
                return
            if problems:
                self._reject(tx, event, problems)
                return
            if tickets and self.catalog is not None:
                taken = await self.catalog.claim_tickets(event.issuer_id, tickets, event.invoice_id, session=tx.session)
                if taken:
                    self._reject(tx, event, [Problem("TIMBRA_TICKET_ALREADY_INVOICED", f"El ticket {t} ya está en otra factura.", path="ticket_id") for t in taken])
                    return
            serie = event.request.series or issuer.get("series", {}).get(event.request.type)
            folio = await self.folios.next(event.issuer_id, serie or "", session=tx.session)
            try:
                built = self.build_cfdi(request, issuer, serie=serie, folio=folio, now=utcnow())
            except InvoiceInvalid as invalid:
                self._reject(tx, event, invalid.problems)
                return
            await self.invoices.apply_status(
                event.invoice_id, InvoiceStatus.BUILT, at=utcnow(), service="cfdi-builder",
                fields={"serie": built.summary.serie, "folio": built.summary.folio, "total": str(built.summary.total), "summary": built.summary.model_dump(mode="json"),
                        "customer_rfc": built.summary.rfc_receptor},
                session=tx.session,
            )
            tx.emit(InvoiceBuilt(invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=built.summary, xml=built.xml.decode()))

        return work

    async def on_invalid_request(self, payload: dict[str, Any], problems: list[Problem]) -> bool:
        """A message on ``invoice.requested`` whose envelope names an invoice and a known issuer but
        whose request is not valid becomes a rejected invoice with the same coded errors as a 422
        over HTTP. False when it cannot be tied to an issuer (the caller dead-letters it)."""
        invoice_id, issuer_id = payload.get("invoice_id"), payload.get("issuer_id")
        if not (isinstance(invoice_id, str) and invoice_id and isinstance(issuer_id, str) and issuer_id):
            return False
        existing = await self.invoices.get(invoice_id)
        if existing is not None:
            return existing["issuer_id"] == issuer_id  # already recorded (a redelivery), or another issuer's id
        if await self.issuers.get(issuer_id) is None:
            return False
        raw = payload.get("request") if isinstance(payload.get("request"), dict) else {}
        kind = raw.get("type") if raw.get("type") in ("I", "E", "T", "P") else "I"
        event = InvoiceRequested(invoice_id=invoice_id, issuer_id=issuer_id, request=InvoiceRequest(type=kind), livemode=payload.get("livemode") is True, source="kafka")
        await self._reject_new(event, problems, idempotency_key=None)
        return True

    async def _reject_new(self, event: InvoiceRequested, problems: list[Problem], *, idempotency_key: str | None) -> None:
        await self.store.transact(self._rejecting_new(event, problems, idempotency_key=idempotency_key), dedupe=f"{event.event_type}:{event.invoice_id}")

    def _rejecting_new(self, event: InvoiceRequested, problems: list[Problem], *, idempotency_key: str | None) -> Callable[[Transaction], Awaitable[None]]:
        async def work(tx: Transaction) -> None:
            doc = self._new_invoice(event)  # here: under the event's trace
            doc["idempotency_key"] = idempotency_key
            await self.invoices.insert(doc, session=tx.session)
            self._reject(tx, event, problems)

        return work

    async def _resolve(self, event: InvoiceRequested, issuer: dict[str, Any] | None) -> tuple[InvoiceRequest, list[Problem], list[str]]:
        """Replace ``customer_id``, ``items[].product_id`` and a ticket's lines by the values in the
        local catalog projection; the invoice keeps a copy, so later edits never change it.
        Returns the resolved request, the problems, and the ids not (yet) projected."""
        request = event.request
        problems: list[Problem] = []
        missing: list[str] = []
        if self.catalog is None or issuer is None:
            return request, problems, missing
        issuer_id = event.issuer_id
        update: dict[str, Any] = {}
        if request.customer_id:
            if request.customer is not None:
                problems.append(Problem("TIMBRA_CUSTOMER_AMBIGUOUS", "Indica el receptor con customer o con customer_id, no ambos.", path="customer_id"))
            else:
                state = await self.catalog.get("customer", issuer_id, request.customer_id)
                if state is None or state.get("deleted"):
                    if state is None:
                        missing.append(request.customer_id)
                    problems.append(Problem("TIMBRA_CUSTOMER_NOT_FOUND", f"El cliente {request.customer_id} no existe.", path="customer_id"))
                else:
                    update["customer"] = CustomerIn(
                        rfc=state["rfc"], legal_name=state["legal_name"], tax_regime=state["tax_regime"], zip=state.get("zip") or issuer["zip"],
                        use=state.get("default_use"), emails=list(state.get("emails") or [])[:10], tax_id=state.get("tax_id"), tax_residence=state.get("tax_residence"),
                    )
        items = list(request.items)
        if request.ticket_id:
            ticket = await self.catalog.get("ticket", issuer_id, request.ticket_id)
            if ticket is None:
                missing.append(request.ticket_id)
                problems.append(Problem("TIMBRA_TICKET_NOT_FOUND", f"El ticket {request.ticket_id} no existe.", path="ticket_id"))
            else:
                problems += _ticket_problems(ticket, event)
                if request.branch_id and request.branch_id != ticket["branch_id"]:
                    problems.append(Problem("TIMBRA_TICKET_BRANCH_MISMATCH", "El ticket no pertenece a esa sucursal.", path="branch_id"))
                if not items:
                    items = [ItemIn.model_validate(i) for i in ticket.get("items") or []]
                    if request.payment_form is None and ticket.get("payment_form"):
                        update["payment_form"] = ticket["payment_form"]
        for ticket_id in request.ticket_ids:
            ticket = await self.catalog.get("ticket", issuer_id, ticket_id)
            if ticket is None:
                missing.append(ticket_id)
                problems.append(Problem("TIMBRA_TICKET_NOT_FOUND", f"El ticket {ticket_id} no existe.", path="ticket_ids"))
            elif ticket.get("invoice_id") not in (None, event.invoice_id):
                problems.append(Problem("TIMBRA_TICKET_ALREADY_INVOICED", f"El ticket {ticket['ticket_number']} ya está en otra factura.", path="ticket_ids"))
        resolved_items = []
        for index, item in enumerate(items):
            if item.product_id:
                if item.product is not None:
                    problems.append(Problem("TIMBRA_PRODUCT_AMBIGUOUS", "Indica el producto con product o con product_id, no ambos.", path=f"items[{index}]"))
                    continue
                state = await self.catalog.get("product", issuer_id, item.product_id)
                if state is None or state.get("deleted"):
                    if state is None:
                        missing.append(item.product_id)
                    problems.append(Problem("TIMBRA_PRODUCT_NOT_FOUND", f"El producto {item.product_id} no existe.", path=f"items[{index}].product_id"))
                    continue
                item = item.model_copy(update={"product": ProductIn.model_validate(state["product"])})
            resolved_items.append(item)
        if items != list(request.items) or any(i.product_id for i in items):
            update["items"] = resolved_items
        return (request.model_copy(update=update) if update else request), problems, missing

    async def on_catalog(self, change: CatalogChange) -> None:
        kind = {CustomerChanged: "customer", ProductChanged: "product", TicketChanged: "ticket"}[type(change)]
        if self.catalog is not None:
            await self.catalog.upsert(kind, change.model_dump(mode="json"))

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
        invoice_id, status, at, service, fields = self._status_change(event)
        changed = await self.invoices.apply_status(invoice_id, status, at=at, service=service, fields=fields)
        if changed:
            structlog.contextvars.bind_contextvars(invoice_id=event.invoice_id)
            log.info("invoice.status", status=STATUS_OF_TOPIC[event.event_type].value)

    async def on_statuses(self, events: list[Envelope]) -> None:
        """:meth:`on_status` for a consumed batch: one bulk write."""
        await self.invoices.apply_statuses([self._status_change(e) for e in events])
        for event in events:
            with attached(trace_of(event)):
                log.info("invoice.status", status=STATUS_OF_TOPIC[event.event_type].value, invoice_id=event.invoice_id)

    def _status_change(self, event: Envelope) -> tuple[str, InvoiceStatus, datetime, str, dict[str, Any]]:
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
        return event.invoice_id, status, event.occurred_at, service, fields

    async def on_cancellation(self, event: CancellationChange) -> None:
        """Each cancellation step lands on the timeline (``cancellation_pending``, ``…_accepted``,
        ``…_rejected``, ``…_escalated``); ``cancellation.completed`` makes the invoice ``canceled``."""
        changed = await self.invoices.apply_cancellation(
            event.invoice_id,
            event.cancellation_status,
            at=event.occurred_at,
            event_id=event.event_id,
            summary=cancellation_summary(event),
            final=event.cancellation_status == "completed",
        )
        if changed:
            structlog.contextvars.bind_contextvars(invoice_id=event.invoice_id)
            log.info("invoice.cancellation", step=event.cancellation_status)

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



_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _fresh(entity_id: str, wait: timedelta) -> bool:
    """Whether ``entity_id`` (``prefix_`` + a ULID-like id from ``timbra_shared.ids.new_id``) was
    created within ``wait``, so that it may simply not be projected yet. Older ids, other
    issuers' ids and malformed ids are not worth waiting for: waiting blocks the partition."""
    body = entity_id.rsplit("_", 1)[-1].lower()
    if len(body) != 26 or any(ch not in _CROCKFORD for ch in body):
        return False
    millis = 0
    for ch in body[:10]:
        millis = millis * 32 + _CROCKFORD.index(ch)
    created = datetime.fromtimestamp(millis / 1000, tz=utcnow().tzinfo)
    return utcnow() - created < wait


def _ticket_problems(ticket: dict[str, Any], event: InvoiceRequested) -> list[Problem]:
    """A ticket invoiced on its own: once, and within its invoicing window."""
    if ticket.get("invoice_id") not in (None, event.invoice_id):
        return [Problem("TIMBRA_TICKET_ALREADY_INVOICED", f"El ticket {ticket['ticket_number']} ya fue facturado.", path="ticket_id")]
    until = ticket.get("invoiceable_until")
    if until and datetime.fromisoformat(until) <= event.occurred_at:
        return [Problem("TIMBRA_TICKET_WINDOW_CLOSED", f"El plazo para facturar el ticket {ticket['ticket_number']} terminó el {until[:10]}; "
                        "se incluye en la factura global del periodo.", path="ticket_id")]
    return []


def cancellation_summary(event: CancellationChange) -> dict[str, Any] | None:
    """The read model's ``cancellation``: the latest request's state (a refused command that never
    became a request, ``attempt`` 0, only lands on the timeline)."""
    if event.attempt == 0:
        return None
    summary: dict[str, Any] = {
        "status": event.cancellation_status, "motive": event.motive, "attempt": event.attempt, "at": event.occurred_at,
        "substitution_uuid": event.substitution_uuid, "substitution_invoice_id": event.substitution_invoice_id,
        "sat": event.sat.model_dump(),
    }
    for name in ("by", "message", "acceptance", "acuse_url", "respond_by", "reason"):
        value = getattr(event, name, None)
        if value is not None:
            summary[name] = value
    return summary
