"""Kafka entrypoints of the cfdi-builder: thin, event in → service call."""

from faststream.kafka import KafkaRouter

from timbra_cfdi_builder.service import InvoiceService
from timbra_shared import topics
from timbra_shared.events import CancellationEscalated, CancellationEvent, CustomerChanged, InvoiceRequested, IssuerProfileChanged, ProductChanged, StatusEvent, TicketChanged
from timbra_shared.messaging import subscriber


def build_router(service: InvoiceService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_REQUESTED, group="cfdi-builder.build")
    async def on_invoice_requested(event: InvoiceRequested) -> None:
        await service.on_requested(event)

    @subscriber(router, *topics.STATUS_TOPICS, group="cfdi-builder.timeline")
    async def on_invoice_status(event: StatusEvent) -> None:
        await service.on_status(event)

    @subscriber(router, *topics.CANCELLATION_EVENT_TOPICS, group="cfdi-builder.cancellations")
    async def on_cancellation(event: CancellationEvent) -> None:
        await service.on_cancellation(event)

    @subscriber(router, topics.CANCELLATION_ESCALATED, group="cfdi-builder.cancellations.escalated")
    async def on_cancellation_escalated(event: CancellationEscalated) -> None:
        await service.on_cancellation(event)

    @subscriber(router, topics.ISSUER_PROFILE, group="cfdi-builder.issuers")
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
