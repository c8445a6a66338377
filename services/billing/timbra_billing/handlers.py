"""Kafka entrypoints of billing: the credit gate."""

from faststream.kafka import KafkaRouter

from timbra_billing.service import CreditGate
from timbra_shared import topics
from timbra_shared.events import InvoiceSealed, InvoiceStamped, InvoiceStampFailed
from timbra_shared.messaging import subscriber


def build_router(gate: CreditGate) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_SEALED, group="billing.gate")
    async def on_invoice_sealed(event: InvoiceSealed) -> None:
        await gate.reserve(event)

    @subscriber(router, topics.INVOICE_STAMPED, group="billing.commit")
    async def on_invoice_stamped(event: InvoiceStamped) -> None:
        await gate.commit(event)

    @subscriber(router, topics.INVOICE_STAMP_FAILED, group="billing.release")
    async def on_invoice_stamp_failed(event: InvoiceStampFailed) -> None:
        await gate.release(event)

    return router
