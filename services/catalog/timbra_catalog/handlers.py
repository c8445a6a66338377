"""Kafka entrypoints of the catalog service."""

from faststream.kafka import KafkaRouter

from timbra_catalog.service import CatalogService
from timbra_shared import topics
from timbra_shared.events import InvoiceStamped
from timbra_shared.messaging import subscriber


def build_router(service: CatalogService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_STAMPED, group="catalog.usage")
    async def on_invoice_stamped(event: InvoiceStamped) -> None:
        await service.on_stamped(event)

    return router
