"""Kafka entrypoints of the stamping service."""

from typing import Any

from faststream.kafka import KafkaRouter

from timbra_shared import topics
from timbra_shared.events import InvoiceFunded
from timbra_shared.messaging import subscriber
from timbra_stamping.service import StampingService


def build_router(service: StampingService, *, consumers: int = 1) -> KafkaRouter:
    router = KafkaRouter()
    options: dict[str, Any] = {"max_workers": consumers} if consumers > 1 else {}

    @subscriber(router, topics.INVOICE_FUNDED, group="stamping.stamp", **options)
    async def on_invoice_funded(event: InvoiceFunded) -> None:
        await service.accept(event)

    return router
