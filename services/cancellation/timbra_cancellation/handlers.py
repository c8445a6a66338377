"""Kafka entrypoints of the cancellation service: thin, event in → service call."""

from faststream.kafka import KafkaRouter

from timbra_cancellation.service import CancellationService
from timbra_shared import topics
from timbra_shared.events import CancelInvoice, InvoiceRejected, InvoiceRequestSeen, InvoiceStamped, InvoiceStampFailed, IssuerProfileChanged
from timbra_shared.messaging import batch_subscriber, subscriber


def build_router(service: CancellationService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.CANCELLATION_REQUESTED, group="cancellation.commands")
    async def on_cancellation_requested(command: CancelInvoice) -> None:
        await service.on_command(command)

    @batch_subscriber(router, topics.INVOICE_REQUESTED, group="cancellation.requests", model=InvoiceRequestSeen)
    async def on_invoices_requested(events: list[InvoiceRequestSeen]) -> None:
        # an invalid request is the builder's to reject, not a dead letter here
        await service.on_requested_many([r for r in (e.parsed() for e in events) if r is not None])

    @batch_subscriber(router, topics.INVOICE_STAMPED, group="cancellation.projection", model=InvoiceStamped)
    async def on_invoices_stamped(events: list[InvoiceStamped]) -> None:
        await service.on_stamped_many(events)

    @subscriber(router, topics.INVOICE_REJECTED, group="cancellation.substitutes.rejected")
    async def on_invoice_rejected(event: InvoiceRejected) -> None:
        await service.on_failed(event)

    @subscriber(router, topics.INVOICE_STAMP_FAILED, group="cancellation.substitutes.stamp_failed")
    async def on_invoice_stamp_failed(event: InvoiceStampFailed) -> None:
        await service.on_failed(event)

    @subscriber(router, topics.ISSUER_PROFILE, group="cancellation.issuers")
    async def on_issuer_profile(profile: IssuerProfileChanged) -> None:
        await service.on_issuer(profile.model_dump(mode="json"))

    return router
