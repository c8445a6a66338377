"""Kafka entrypoints of issuer-profile: sealing is done here because private keys never leave."""

from faststream.kafka import KafkaRouter

from timbra_issuer_profile.service import IssuerService
from timbra_shared import topics
from timbra_shared.events import InvoiceBuilt
from timbra_shared.messaging import subscriber


def build_router(service: IssuerService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_BUILT, group="issuer-profile.seal")
    async def on_invoice_built(event: InvoiceBuilt) -> None:
        await service.seal(event)

    return router
