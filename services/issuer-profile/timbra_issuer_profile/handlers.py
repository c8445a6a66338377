"""Kafka entrypoints of issuer-profile: sealing is done here because private keys never leave."""

from faststream.kafka import KafkaRouter

from timbra_issuer_profile.service import IssuerService
from timbra_shared import topics
from timbra_shared.events import InvoiceBuilt
from timbra_shared.messaging import batch_subscriber


def build_router(service: IssuerService) -> KafkaRouter:
    router = KafkaRouter()

    @batch_subscriber(router, topics.INVOICE_BUILT, group="issuer-profile.seal", model=InvoiceBuilt)
    async def on_invoices_built(events: list[InvoiceBuilt]) -> None:
        await service.seal_many(events)

    return router
