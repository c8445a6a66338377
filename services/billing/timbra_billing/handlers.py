"""Kafka entrypoints of billing: the credit gate, and the issuers' contacts (for alerts)."""

from faststream.kafka import KafkaRouter

from timbra_billing.adapters.payments import PaymentRepository
from timbra_billing.service import CreditGate
from timbra_shared import topics
from timbra_shared.events import InvoiceSealed, InvoiceStamped, InvoiceStampFailed, IssuerProfileChanged
from timbra_shared.messaging import batch_subscriber, subscriber


def build_router(gate: CreditGate, payments: PaymentRepository) -> KafkaRouter:
    router = KafkaRouter()

    @batch_subscriber(router, topics.INVOICE_SEALED, group="billing.gate", model=InvoiceSealed)
    async def on_invoices_sealed(events: list[InvoiceSealed]) -> None:
        await gate.reserve_many(events)

    @batch_subscriber(router, topics.INVOICE_STAMPED, group="billing.commit", model=InvoiceStamped)
    async def on_invoices_stamped(events: list[InvoiceStamped]) -> None:
        await gate.commit_many(events)

    @subscriber(router, topics.INVOICE_STAMP_FAILED, group="billing.release")
    async def on_invoice_stamp_failed(event: InvoiceStampFailed) -> None:
        await gate.release(event)

    @subscriber(router, topics.ISSUER_PROFILE, group="billing.issuers")
    async def on_issuer_profile(profile: IssuerProfileChanged) -> None:
        await payments.upsert_issuer(profile.model_dump(mode="json"))

    return router
