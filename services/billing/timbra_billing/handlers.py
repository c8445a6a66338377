"""Kafka entrypoints of billing: the credit gate, and the issuers' contacts (for alerts)."""

from faststream.kafka import KafkaRouter

from timbra_billing.adapters.payments import PaymentRepository
from timbra_billing.service import CreditGate
from timbra_shared import topics
from timbra_shared.events import InvoiceSealed, InvoiceStamped, InvoiceStampFailed, IssuerProfileChanged
from timbra_shared.messaging import subscriber


def build_router(gate: CreditGate, payments: PaymentRepository) -> KafkaRouter:
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

    @subscriber(router, topics.ISSUER_PROFILE, group="billing.issuers")
    async def on_issuer_profile(profile: IssuerProfileChanged) -> None:
        await payments.upsert_issuer(profile.model_dump(mode="json"))

    return router
