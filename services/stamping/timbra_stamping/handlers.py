"""Kafka entrypoints of the stamping service."""

from typing import Any

from faststream.kafka import KafkaRouter

from timbra_shared import topics
from timbra_shared.events import InvoiceFunded
from timbra_shared.messaging import batch_subscriber, subscriber
from timbra_stamping.service import StampingService


def build_router(service: StampingService, *, consumers: int = 1) -> KafkaRouter:
    router = KafkaRouter()
    options: dict[str, Any] = {"max_workers": consumers} if consumers > 1 else {}

    if consumers > 1:  # FastStream's concurrent consumers, one event at a time
        @subscriber(router, topics.INVOICE_FUNDED, group="stamping.stamp", **options)
        async def on_invoice_funded(event: InvoiceFunded) -> None:
            await service.accept(event)
    else:
        @batch_subscriber(router, topics.INVOICE_FUNDED, group="stamping.stamp", model=InvoiceFunded)
        async def on_invoices_funded(events: list[InvoiceFunded]) -> None:
            await service.accept_many(events)

    return router
