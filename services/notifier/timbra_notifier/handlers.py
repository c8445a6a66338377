"""Kafka entrypoints of the notifier: rendering never holds back stamping."""

from faststream.kafka import KafkaRouter

from timbra_notifier.service import NotifierService
from timbra_shared import topics
from timbra_shared.events import InvoiceRendered, InvoiceStamped, NotificationRequested
from timbra_shared.messaging import subscriber


def build_router(service: NotifierService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_STAMPED, group="notifier.render")
    async def on_invoice_stamped(event: InvoiceStamped) -> None:
        await service.render(event)

    @subscriber(router, topics.INVOICE_RENDERED, group="notifier.email")
    async def on_invoice_rendered(event: InvoiceRendered) -> None:
        await service.email(event)

    @subscriber(router, topics.NOTIFICATION_REQUESTED, group="notifier.notifications")
    async def on_notification_requested(event: NotificationRequested) -> None:
        await service.notify(event)

    return router
