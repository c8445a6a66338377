"""Kafka entrypoints of the stamping service."""

from faststream.kafka import KafkaRouter

from timbra_shared import topics
from timbra_shared.events import InvoiceFunded
from timbra_shared.messaging import subscriber
from timbra_stamping.service import StampingService


def build_router(service: StampingService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_FUNDED, group="stamping.stamp")
    async def on_invoice_funded(event: InvoiceFunded) -> None:
        await service.stamp(event)

    return router
