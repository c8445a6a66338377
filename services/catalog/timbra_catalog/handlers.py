"""Kafka entrypoints of the catalog service."""

from faststream.kafka import KafkaRouter

from timbra_catalog.portal_service import PortalService
from timbra_catalog.service import CatalogService
from timbra_shared import topics
from timbra_shared.events import CancellationCompleted, InvoiceRejected, InvoiceStamped, InvoiceStampFailed, IssuerProfileChanged, TicketSubmitted
from timbra_shared.messaging import batch_subscriber, subscriber


def build_router(service: CatalogService, portal: PortalService) -> KafkaRouter:
    router = KafkaRouter()

    @batch_subscriber(router, topics.INVOICE_STAMPED, group="catalog.usage", model=InvoiceStamped)
    async def on_invoices_stamped(events: list[InvoiceStamped]) -> None:
        await service.on_stamped_many(events, also=portal.stamped_unit)

    @subscriber(router, topics.INVOICE_REJECTED, group="catalog.tickets.rejected")
    async def on_invoice_rejected(event: InvoiceRejected) -> None:
        await service.on_failed(event)
        await portal.on_failed(event)

    @subscriber(router, topics.INVOICE_STAMP_FAILED, group="catalog.tickets.stamp_failed")
    async def on_invoice_stamp_failed(event: InvoiceStampFailed) -> None:
        await service.on_failed(event)
        await portal.on_failed(event)

    @subscriber(router, topics.CANCELLATION_COMPLETED, group="catalog.tickets.cancelled")
    async def on_cancellation_completed(event: CancellationCompleted) -> None:
        await service.on_cancelled(event)
        await portal.on_cancelled(event)

    @subscriber(router, topics.POS_TICKETS, group="catalog.pos")
    async def on_pos_ticket(event: TicketSubmitted) -> None:
        await service.on_ticket_submitted(event)

    @subscriber(router, topics.ISSUER_PROFILE, group="catalog.portal.issuers")
    async def on_issuer_profile(profile: IssuerProfileChanged) -> None:
        await portal.on_issuer_profile(profile)

    return router
