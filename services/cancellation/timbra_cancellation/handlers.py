"""Kafka entrypoints of the cancellation service."""

from faststream.kafka import KafkaRouter

from timbra_cancellation.service import CancellationService
from timbra_shared import topics
from timbra_shared.events import InvoiceStamped
from timbra_shared.messaging import subscriber


def build_router(service: CancellationService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_STAMPED, group="cancellation.projection")
    async def on_invoice_stamped(event: InvoiceStamped) -> None:
        await service.on_stamped(event)

    return router
