"""Use cases of the notifier: render the printed invoice, then deliver it by email once."""

import asyncio
from email.message import EmailMessage
from typing import Any, Protocol

from timbra_notifier.adapters.mailer import PermanentMailError
from timbra_notifier.adapters.repository import DocumentRepository
from timbra_notifier.domain.printed import printed_context
import base64

from timbra_shared.events import InvoiceEmailed, InvoiceRendered, InvoiceStamped, NotificationRequested
from timbra_shared.ids import utcnow
from timbra_shared.logging import get_logger
from timbra_shared.mongo import Store, Transaction

log = get_logger(__name__)


class Renderer(Protocol):
    def render(self, context: dict[str, Any]) -> bytes: ...


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class NotifierService:
    def __init__(self, *, store: Store, repo: DocumentRepository, renderer: Renderer, mailer: Mailer) -> None:
        self.store = store
        self.repo = repo
        self.renderer = renderer
        self.mailer = mailer

    async def render(self, event: InvoiceStamped) -> None:
        if await self.store.was_processed(f"{event.event_type}:{event.invoice_id}"):
            return
        xml = event.xml.encode()
        pdf = await asyncio.to_thread(lambda: self.renderer.render(printed_context(xml)))

        async def work(tx: Transaction) -> None:
            await self.repo.save({
                "_id": event.invoice_id, "issuer_id": event.issuer_id, "uuid": event.uuid,
                "xml": xml, "pdf": pdf, "summary": event.summary.model_dump(mode="json"), "rendered_at": utcnow(),
            }, session=tx.session)
            tx.emit(InvoiceRendered(invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=event.summary, uuid=event.uuid, pdf_bytes=len(pdf)))

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")

    async def email(self, event: InvoiceRendered) -> None:
        if await self.store.was_processed(f"{event.event_type}:{event.invoice_id}"):
            return
        recipients = list(dict.fromkeys(event.summary.recipients))[:10]
        message_id = None
        skipped = None
        if not recipients:
            skipped = "La factura no tiene destinatarios de correo."
        elif await self.repo.claim_email(event.invoice_id, recipients) is None:
            return
        else:
            doc = await self.repo.get(event.invoice_id)
            assert doc is not None
            message_id = f"<{event.invoice_id}@timbra.local>"
            try:
                await self.mailer.send(self._message(event, doc, recipients, message_id))
            except PermanentMailError as exc:
                skipped = str(exc)
                message_id = None

        async def work(tx: Transaction) -> None:
            if recipients:
                await self.repo.mark_email(event.invoice_id, "sent" if message_id else "failed", session=tx.session, message_id=message_id, error=skipped)
            tx.emit(InvoiceEmailed(invoice_id=event.invoice_id, issuer_id=event.issuer_id, recipients=recipients if message_id else [], message_id=message_id, skipped_reason=skipped))

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")

    async def notify(self, event: NotificationRequested) -> None:
        """Deliver a platform email (CSD expiry, low credits, …) once per event."""
        dedupe = f"{event.event_type}:{event.event_id}"
        if await self.store.was_processed(dedupe) or not await self.repo.claim_notification(event.event_id, event.issuer_id, event.kind):
            return
        message = EmailMessage()
        message["To"] = ", ".join(event.to)
        message["Subject"] = event.subject
        message["Message-ID"] = f"<{event.event_id}@timbra.local>"
        message.set_content(event.body)
        for attachment in event.attachments:
            maintype, _, subtype = attachment.get("content_type", "application/octet-stream").partition("/")
            message.add_attachment(base64.b64decode(attachment["base64"]), maintype=maintype, subtype=subtype or "octet-stream", filename=attachment["filename"])
        error = None
        try:
            await self.mailer.send(message)
        except PermanentMailError as exc:
            error = str(exc)

        async def work(tx: Transaction) -> None:
            await self.repo.mark_notification(event.event_id, "failed" if error else "sent", session=tx.session, error=error)

        await self.store.transact(work, dedupe=dedupe)

    @staticmethod
    def _message(event: InvoiceRendered, doc: dict[str, Any], recipients: list[str], message_id: str) -> EmailMessage:
        summary = event.summary
        name = f"{summary.serie or ''}{summary.folio or ''}" or event.uuid
        message = EmailMessage()
        message["To"] = ", ".join(recipients)
        message["Subject"] = f"Factura {name} de {summary.rfc_emisor}"
        message["Message-ID"] = message_id
        message.set_content(
            f"Hola {summary.nombre_receptor}:\n\nTe enviamos tu factura {name} por {summary.total} {summary.currency}.\n"
            f"Folio fiscal (UUID): {event.uuid}\n\nAdjuntamos el XML y el PDF.\n"
        )
        message.add_attachment(doc["xml"], maintype="application", subtype="xml", filename=f"{event.uuid}.xml")
        message.add_attachment(doc["pdf"], maintype="application", subtype="pdf", filename=f"{event.uuid}.pdf")
        return message
