"""Kafka entrypoints of the notifier: rendering never holds back stamping (it consumes
invoice.stamped on its own consumer group), and every status event may fan out to webhooks."""

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from faststream import Context
from faststream.kafka import KafkaRouter

from timbra_notifier.domain import webhooks as rules
from timbra_notifier.service import NotifierService
from timbra_notifier.webhooks import WebhookService
from timbra_shared import topics
from timbra_shared.errors import PoisonMessage
from timbra_shared.events import PIPELINE_EVENTS, InvoiceRendered, InvoiceRequestSeen, InvoiceStamped, IssuerProfileChanged, NotificationRequested
from timbra_shared.messaging import subscriber

CANCELLATION_TOPICS = tuple(rules.CANCELLATION_OF_TOPIC)


def _pipeline_tag(value: Any) -> str | None:
    """``event_type``; a request produced straight onto Kafka may leave the envelope fields out."""
    if isinstance(value, dict):
        return value.get("event_type") or (topics.INVOICE_REQUESTED if "request" in value else None)
    return getattr(value, "event_type", None)


#: every status event, with invoice.requested read leniently (the builder is the one that validates it)
PipelineEvent = Annotated[
    Union[tuple(Annotated[InvoiceRequestSeen if topic == topics.INVOICE_REQUESTED else cls, Tag(topic)] for topic, cls in PIPELINE_EVENTS.items())],  # noqa: UP007
    Discriminator(_pipeline_tag),
]


def build_router(service: NotifierService, webhooks: WebhookService) -> KafkaRouter:
    router = KafkaRouter()

    @subscriber(router, topics.INVOICE_STAMPED, group="notifier.render")
    async def on_invoice_stamped(event: InvoiceStamped) -> None:
        await service.render(event)

    @subscriber(router, topics.INVOICE_RENDERED, group="notifier.email")
    async def on_invoice_rendered(event: InvoiceRendered) -> None:
        await service.email(event)

    @subscriber(router, topics.NOTIFICATION_REQUESTED, group="notifier.notifications")
    async def on_notification_requested(event: NotificationRequested) -> None:
        event_type = rules.NOTIFICATION_TYPES.get(event.kind)
        if event_type:
            await webhooks.publish(event.issuer_id, event_type, event.event_id, {"kind": event.kind, "subject": event.subject, "message": event.body}, event.occurred_at)
        await service.notify(event)

    @subscriber(router, topics.ISSUER_PROFILE, group="notifier.issuers")
    async def on_issuer_profile(profile: IssuerProfileChanged) -> None:
        await service.on_issuer(profile.model_dump(mode="json"))

    @subscriber(router, topics.INVOICE_REQUESTED, *topics.STATUS_TOPICS, group="notifier.webhooks")
    async def on_invoice_status(event: PipelineEvent) -> None:
        if isinstance(event, InvoiceRequestSeen):
            request = event.parsed()
            if request is None:
                return  # the builder rejects it with coded errors, and invoice.rejected is announced
            await service.on_requested(request)
        await webhooks.publish(event.issuer_id, rules.INVOICE_STATUS, event.event_id, rules.invoice_status_data(event), event.occurred_at)

    @subscriber(router, *CANCELLATION_TOPICS, group="notifier.cancellations")
    async def on_cancellation(payload: dict[str, Any], topic: str = Context("message.raw_message.topic")) -> None:
        if not isinstance(payload, dict) or not payload.get("issuer_id") or not payload.get("invoice_id"):
            raise PoisonMessage("a cancellation event needs invoice_id and issuer_id")
        status = rules.CANCELLATION_OF_TOPIC[topic]
        await service.on_cancellation(payload.get("status") or status, payload)
        source_id = str(payload.get("event_id") or f"{topic}:{payload['invoice_id']}")
        await webhooks.publish(payload["issuer_id"], rules.CANCELLATION_STATUS, source_id, rules.cancellation_data(topic, payload))

    return router
