"""Kafka entrypoints of the cfdi-builder: thin, event in → service call."""

from typing import Annotated, Any

from faststream.kafka import KafkaRouter
from pydantic import Field, ValidationError

from timbra_cfdi_builder.operations import OperationsService
from timbra_cfdi_builder.service import InvoiceService
from timbra_shared import topics
from timbra_shared.events import CancellationEscalated, CancellationEvent, CustomerChanged, DeadLetter, InvoiceRequested, IssuerProfileChanged, ProductChanged, StatusEvent, TicketChanged
from timbra_shared.errors import PoisonMessage, Problem
from timbra_shared.http import validation_problems
from timbra_shared.messaging import batch_subscriber, subscriber, trace_of
from timbra_shared.telemetry import attached


# a request that does not validate still arrives (as its JSON object) to become a rejected invoice
RequestedOrInvalid = Annotated[InvoiceRequested | dict[str, Any], Field(union_mode="left_to_right")]


def build_router(service: InvoiceService) -> KafkaRouter:
    router = KafkaRouter()

    @batch_subscriber(router, topics.INVOICE_REQUESTED, group="cfdi-builder.build", model=RequestedOrInvalid)
    async def on_invoices_requested(events: list[InvoiceRequested | dict[str, Any]]) -> None:
        await service.on_requested_many([e for e in events if isinstance(e, InvoiceRequested)])
        for payload in (e for e in events if not isinstance(e, InvoiceRequested)):
            with attached(trace_of(payload)):
                await reject_invalid(payload)

    async def reject_invalid(payload: dict[str, Any]) -> None:
        # validated here rather than dead-lettered: producers writing straight to Kafka get the
        # same coded errors as a 422, on a rejected invoice
        try:
            event = InvoiceRequested.model_validate(payload)
        except ValidationError as exc:
            errors = [{**e, "loc": e["loc"][1:]} if e["loc"][:1] == ("request",) else e for e in exc.errors()]
            problems = [Problem(p["code"], p["message"], p["source"], p["path"]) for p in validation_problems(errors)]
            if not await service.on_invalid_request(payload, problems):
                raise PoisonMessage(f"invoice.requested sin emisor conocido o sin invoice_id: {exc.error_count()} errores") from None
            return
        await service.on_requested(event)

    @batch_subscriber(router, *topics.STATUS_TOPICS, group="cfdi-builder.timeline", model=StatusEvent)
    async def on_invoice_statuses(events: list[StatusEvent]) -> None:
        await service.on_statuses(events)

    @subscriber(router, *topics.CANCELLATION_EVENT_TOPICS, group="cfdi-builder.cancellations")
    async def on_cancellation(event: CancellationEvent) -> None:
        await service.on_cancellation(event)

    @subscriber(router, topics.CANCELLATION_ESCALATED, group="cfdi-builder.cancellations.escalated")
    async def on_cancellation_escalated(event: CancellationEscalated) -> None:
        await service.on_cancellation(event)

    @subscriber(router, topics.ISSUER_PROFILE, group="cfdi-builder.issuers", background=False)  # series, types: the next invoice reads them
    async def on_issuer_profile(profile: IssuerProfileChanged) -> None:
        await service.on_issuer(profile)

    @subscriber(router, topics.CATALOG_CUSTOMERS, group="cfdi-builder.catalog.customers")
    async def on_customer(change: CustomerChanged) -> None:
        await service.on_catalog(change)

    @subscriber(router, topics.CATALOG_PRODUCTS, group="cfdi-builder.catalog.products")
    async def on_product(change: ProductChanged) -> None:
        await service.on_catalog(change)

    @subscriber(router, topics.CATALOG_TICKETS, group="cfdi-builder.catalog.tickets")
    async def on_ticket(change: TicketChanged) -> None:
        await service.on_catalog(change)

    return router


def build_ops_router(ops: OperationsService) -> KafkaRouter:
    """The dead-letter store: every message on ``timbra.dead_letter`` is kept for operators. A
    message there that is not a ``DeadLetter`` is dead-lettered once more by the middleware,
    wrapped in one that is (no loop: the wrapper always validates)."""
    router = KafkaRouter()

    @subscriber(router, topics.DEAD_LETTER, group="cfdi-builder.dead_letters")
    async def on_dead_letter(letter: DeadLetter) -> None:
        await ops.store_letter(letter)

    return router
