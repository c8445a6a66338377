"""Use cases of the notifier: render the printed invoice, deliver it by email once, previews,
resends, templates, the CANCELADO mark, and platform notifications."""

import asyncio
import base64
from datetime import datetime
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any, Protocol

from timbra_notifier.adapters.mailer import MailError, PermanentMailError, SmtpConfig, TransientMailError
from timbra_notifier.adapters.repository import EMAIL_LEASE_S
from timbra_notifier.domain import templates
from timbra_notifier.domain.printed import CANCELADO, SIN_VALIDEZ, printed_context
from timbra_notifier.domain.preview import preview_xml
from timbra_notifier.domain.webhooks import next_attempt
from timbra_shared.events import InvoiceEmailed, InvoiceRendered, InvoiceRequest, InvoiceRequested, InvoiceStamped, InvoiceSummary, NotificationRequested
from timbra_shared.errors import RetryLater
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.mongo import Store, Transaction, outlast_outage

log = get_logger(__name__)

MAX_RECIPIENTS = 10
CANCELLED_STATUSES = {"accepted", "completed", "canceled", "cancelled"}


class Renderer(Protocol):
    def render(self, context: dict[str, Any]) -> bytes: ...


class Mailer(Protocol):
    async def send(self, message: EmailMessage, config: SmtpConfig | None = None) -> dict: ...


class Profiles(Protocol):
    async def smtp(self, issuer_id: str) -> SmtpConfig | None: ...
    async def logo(self, issuer_id: str, logo_id: str | None) -> str | None: ...
    def forget_smtp(self, issuer_id: str) -> None: ...


class NotFound(Exception):
    pass


class EmailRefused(Exception):
    """A resend the SMTP server refused: ``permanent`` tells a bad address/auth from an outage."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def postponed(refused: dict[str, str]) -> list[str]:
    """The refused recipients whose answer was temporary (4xx: mailbox busy, greylisting): worth
    another try. ``refused`` maps each to the server's reply, "450 4.2.1 …"."""
    return [rcpt for rcpt, reply in refused.items() if str(reply).strip()[:1] == "4"]


def _followup_view(followup: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the email status shows of the postponed recipients' own delivery."""
    if not followup:
        return None
    return {"state": followup.get("state"), "recipients": followup.get("recipients", []), "delivered": followup.get("delivered", []),
            "attempts": followup.get("attempts", 0), "next_attempt_at": followup.get("next_at") if followup.get("state") == "retry" else None,
            "error": followup.get("error") or followup.get("last_error")}


def _issuer_context(issuer: dict[str, Any]) -> dict[str, str]:
    address = issuer.get("fiscal_address") or {}
    parts = [str(v) for v in address.values() if v]
    contact = " · ".join(x for x in (issuer.get("email"), issuer.get("phone")) if x)
    return {"address": ", ".join(parts), "contact": contact}


class NotifierService:
    def __init__(
        self,
        *,
        store: Store,
        repo: Any,
        renderer: Renderer,
        mailer: Mailer,
        profiles: Profiles | None = None,
        default_rendering: str = "eager",
        email_retry_base_s: float = 30.0,
        email_retry_window_s: float = 24 * 3600.0,
    ) -> None:
        self.store = store
        self.repo = repo
        self.renderer = renderer
        self.mailer = mailer
        self.profiles = profiles
        self.default_rendering = default_rendering
        self.email_retry_base_s = email_retry_base_s
        self.email_retry_window_s = email_retry_window_s

    # ------------------------------------------------------------------ projections

    async def on_issuer(self, profile: dict[str, Any]) -> None:
        await self.repo.upsert_issuer(profile)
        if self.profiles is not None:
            self.profiles.forget_smtp(profile["issuer_id"])

    async def on_requested(self, event: InvoiceRequested) -> None:
        """Keep what the PDF shows but the CFDI does not carry: the notes."""
        if event.request.notes:
            await self.repo.save_request(event.invoice_id, event.issuer_id, {"notes": event.request.notes})

    async def rendering_mode(self, issuer_id: str) -> str:
        issuer = await self.repo.issuer(issuer_id) or {}
        return issuer.get("pdf_rendering") or self.default_rendering

    # ------------------------------------------------------------------ rendering

    async def _render_xml(self, xml: bytes, issuer_id: str, *, invoice_id: str | None = None, watermark: str | None = None, notes: str | None = None,
                          logo_placement: str | None = None) -> bytes:
        issuer = await self.repo.issuer(issuer_id) or {}
        if notes is None and invoice_id is not None:
            notes = ((await self.repo.request(invoice_id)) or {}).get("notes")
        logo = await self.profiles.logo(issuer_id, issuer.get("logo_id")) if self.profiles is not None else None
        context = printed_context(xml, watermark=watermark, notes=notes, logo=logo, logo_placement=logo_placement or issuer.get("logo_placement"), issuer=_issuer_context(issuer))
        return await asyncio.to_thread(self.renderer.render, context)

    async def render(self, event: InvoiceStamped) -> None:
        """invoice.stamped → store the XML (and, unless the issuer renders on demand, the PDF)."""
        if await self.store.was_processed(f"{event.event_type}:{event.invoice_id}"):
            return
        xml = event.xml.encode()
        mode = await self.rendering_mode(event.issuer_id)
        pdf = await self._render_xml(xml, event.issuer_id, invoice_id=event.invoice_id) if mode == "eager" else None

        async def work(tx: Transaction) -> None:
            await self.repo.save({
                "_id": event.invoice_id, "issuer_id": event.issuer_id, "uuid": event.uuid, "xml": xml, "pdf": pdf, "rendering": mode,
                "summary": event.summary.model_dump(mode="json"), "rendered_at": utcnow() if pdf else None, "cancelled_at": None,
            }, session=tx.session)
            tx.emit(InvoiceRendered(invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=event.summary, uuid=event.uuid, pdf_bytes=len(pdf or b"")))

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")

    async def pdf(self, invoice_id: str, issuer_id: str | None) -> tuple[dict[str, Any], bytes] | None:
        """The invoice's PDF, rendered and cached now if it was deferred; with the CANCELADO mark
        once the invoice is cancelled."""
        doc = await self.repo.get(invoice_id, issuer_id)
        if doc is None:
            return None
        field = "pdf_cancelled" if doc.get("cancelled_at") else "pdf"
        if doc.get(field):
            return doc, doc[field]
        pdf = await self._render_xml(doc["xml"], doc["issuer_id"], invoice_id=invoice_id, watermark=CANCELADO if field == "pdf_cancelled" else None)
        await self.repo.set_pdf(invoice_id, field, pdf)
        return doc, pdf

    async def preview(self, issuer_id: str, request: InvoiceRequest, *, logo_placement: str | None = None) -> bytes:
        """A draft PDF of ``request`` before stamping, marked SIN VALIDEZ FISCAL. ``logo_placement``
        overrides the stored one: the panel previews the placement being chosen, which reaches this
        service's copy of the profile only after issuer.profile is consumed."""
        xml = await self.preview_cfdi(issuer_id, request)
        return await self._render_xml(xml, issuer_id, watermark=SIN_VALIDEZ, notes=request.notes, logo_placement=logo_placement)

    async def preview_cfdi(self, issuer_id: str, request: InvoiceRequest) -> bytes:
        """The unsealed draft CFDI of ``request`` (the panel's "Actualizar totales" reads its totals)."""
        issuer = await self.repo.issuer(issuer_id)
        if issuer is None:
            raise NotFound(issuer_id)
        return preview_xml(request, issuer, utcnow())

    async def mark_cancelled(self, invoice_id: str, issuer_id: str | None, at: datetime | None = None) -> bool:
        return await self.repo.mark_cancelled(invoice_id, issuer_id, at or utcnow())

    async def on_cancellation(self, status: str, payload: dict[str, Any]) -> None:
        if status in CANCELLED_STATUSES and payload.get("invoice_id"):
            await self.mark_cancelled(payload["invoice_id"], payload.get("issuer_id"))

    # ------------------------------------------------------------------ email

    async def _smtp(self, issuer_id: str) -> SmtpConfig | None:
        if self.profiles is None:
            return None
        try:
            return await self.profiles.smtp(issuer_id)
        except Exception as exc:  # issuer-profile unreachable: a transient failure of this email
            raise TransientMailError(f"No se pudo leer la configuración de correo del emisor: {exc}") from None

    async def _message(self, invoice_id: str, issuer_id: str, summary: InvoiceSummary, uuid: str, doc: dict[str, Any], pdf: bytes,
                       recipients: list[str], message_id: str, config: SmtpConfig | None) -> EmailMessage:
        issuer = await self.repo.issuer(issuer_id) or {}
        custom = await self.repo.template(issuer_id) or {}
        issuer_name = issuer.get("legal_name") or summary.rfc_emisor
        subject, body = templates.render(custom.get("subject") or templates.DEFAULT_SUBJECT, custom.get("body") or templates.DEFAULT_BODY,
                                         templates.values(summary, uuid, issuer_name))
        message = EmailMessage()
        if config is None:  # the platform sender, in the issuer's name; replies go to the issuer
            message["From"] = formataddr((issuer_name, getattr(self.mailer, "config", SmtpConfig("", 0, "facturas@timbra.local")).sender))
            if issuer.get("email"):
                message["Reply-To"] = issuer["email"]
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Message-ID"] = message_id
        message.set_content(body)
        message.add_attachment(doc["xml"], maintype="application", subtype="xml", filename=f"{uuid}.xml")
        message.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"{uuid}.pdf")
        return message

    async def _attempt(self, invoice_id: str, issuer_id: str, summary: InvoiceSummary, uuid: str, recipients: list[str], message_id: str) -> dict:
        found = await self.pdf(invoice_id, None)
        if found is None:
            raise TransientMailError("El documento de la factura aún no está disponible.")
        doc, pdf = found
        config = await self._smtp(issuer_id)
        return await self.mailer.send(await self._message(invoice_id, issuer_id, summary, uuid, doc, pdf, recipients, message_id, config), config)

    async def email(self, event: InvoiceRendered) -> None:
        """invoice.rendered → one email per invoice; transient failures go to the retry schedule."""
        dedupe = f"{event.event_type}:{event.invoice_id}"
        if await self.store.was_processed(dedupe):
            return
        recipients = list(dict.fromkeys(event.summary.recipients))[:MAX_RECIPIENTS]
        if not recipients:
            await self._finish(event.invoice_id, event.issuer_id, [], None, "La factura no tiene destinatarios de correo.", dedupe=dedupe, mark=False)
            return
        claim = await self.repo.claim_email(event.invoice_id, recipients)
        if claim is None:
            return
        message_id = f"<{event.invoice_id}@timbra.local>"
        try:
            refused = await self._attempt(event.invoice_id, event.issuer_id, event.summary, event.uuid, recipients, message_id)
        except PermanentMailError as exc:
            await self._finish(event.invoice_id, event.issuer_id, [], None, str(exc), dedupe=dedupe)
            await self._tell_issuer(event.invoice_id, event.issuer_id, event.summary, event.uuid, str(exc))
            return
        except TransientMailError as exc:
            await self._schedule_retry(event.invoice_id, event.issuer_id, event.summary, event.uuid, claim, str(exc), dedupe=dedupe)
            return
        await self._record_sent(event.invoice_id, event.issuer_id, event.summary, event.uuid, recipients, message_id, refused, dedupe=dedupe)

    async def _record_sent(self, invoice_id: str, issuer_id: str, summary: InvoiceSummary, uuid: str, recipients: list[str], message_id: str,
                           refused: dict[str, str], *, dedupe: str) -> None:
        """The email has left: record it, and schedule the postponed recipients, in one transaction
        that outlasts a MongoDB outage; a lost record would send the email again on redelivery."""
        followup = self._followup(issuer_id, summary, uuid, refused)

        delivered = [r for r in recipients if r not in refused]
        await outlast_outage(lambda: self._finish(invoice_id, issuer_id, delivered, message_id, None, dedupe=dedupe, refused=refused, followup=followup),
                             within_s=EMAIL_LEASE_S, what=f"email.sent:{invoice_id}")
        if followup:
            log.warning("email.followup_scheduled", invoice_id=invoice_id, recipients=len(followup["recipients"]), next_at=followup["next_at"].isoformat() if followup["next_at"] else None)

    def _followup(self, issuer_id: str, summary: InvoiceSummary, uuid: str, refused: dict[str, str]) -> dict[str, Any] | None:
        """Recipients the server postponed while it accepted the others get their own retries
        (same Message-ID, same back-off and window as a whole delivery)."""
        later = postponed(refused)
        if not later:
            return None
        now = utcnow()
        retry_at = next_attempt(now, 1, now, base_s=self.email_retry_base_s, window_s=self.email_retry_window_s, factor=2.0)
        context = {"issuer_id": issuer_id, "summary": summary.model_dump(mode="json"), "uuid": uuid}
        return {"recipients": later, "next_at": retry_at, "attempts": 1, "first_at": now,
                "last_error": "; ".join(f"{r}: {refused[r]}" for r in later), "context": context}

    async def retry_due_followups(self) -> int:
        """Try the postponed recipients whose retry is due (called by the background worker)."""
        done = 0
        while (claim := await self.repo.due_followup(utcnow())) is not None:
            invoice_id, followup = claim["_id"], claim["followup"]
            context = followup["context"]
            summary = InvoiceSummary.model_validate(context["summary"])
            issuer_id, uuid = context["issuer_id"], context["uuid"]
            recipients = followup["recipients"]
            delivered = list(followup.get("delivered") or [])
            try:
                refused = await self._attempt(invoice_id, issuer_id, summary, uuid, recipients, f"<{invoice_id}@timbra.local>")
            except PermanentMailError as exc:
                await self.repo.finish_followup(invoice_id, "failed", error=str(exc))
                await self._tell_issuer(invoice_id, issuer_id, summary, uuid, str(exc))
            except TransientMailError as exc:
                await self._reschedule_followup(claim, str(exc), recipients, delivered, summary)
            else:
                # the email has left: its record outlasts a MongoDB outage, or the lease would run out and send it again
                delivered += [r for r in recipients if r not in refused]
                later = postponed(refused)
                what = f"email.followup:{invoice_id}"
                if later:
                    error = "; ".join(f"{r}: {refused[r]}" for r in later)
                    await outlast_outage(lambda: self._reschedule_followup(claim, error, later, delivered, summary), within_s=EMAIL_LEASE_S, what=what)
                elif refused:
                    reason = "El servidor de correo rechazó los destinatarios: " + "; ".join(f"{r}: {e}" for r, e in refused.items())
                    await outlast_outage(lambda: self.repo.finish_followup(invoice_id, "failed", delivered=delivered, error=reason, recipients=[]),
                                         within_s=EMAIL_LEASE_S, what=what)
                    await self._tell_issuer(invoice_id, issuer_id, summary, uuid, reason)
                else:
                    await outlast_outage(lambda: self.repo.finish_followup(invoice_id, "sent", delivered=delivered, recipients=[]), within_s=EMAIL_LEASE_S, what=what)
            done += 1
        return done

    async def _reschedule_followup(self, claim: dict[str, Any], error: str, recipients: list[str], delivered: list[str], summary: InvoiceSummary) -> None:
        invoice_id, followup = claim["_id"], claim["followup"]
        now = utcnow()
        retry_at = next_attempt(followup["first_at"], int(followup.get("attempts") or 1), now, base_s=self.email_retry_base_s,
                                window_s=self.email_retry_window_s, factor=2.0)
        if retry_at is None:
            reason = f"No se pudo entregar el correo a {', '.join(recipients)} en {self.email_retry_window_s / 3600:g} horas. Último error: {error}"
            await self.repo.finish_followup(invoice_id, "failed", delivered=delivered, error=reason)
            context = followup["context"]
            await self._tell_issuer(invoice_id, context["issuer_id"], summary, context["uuid"], reason)
            return
        await self.repo.schedule_followup(invoice_id, {**followup, "recipients": recipients, "delivered": delivered, "next_at": retry_at, "last_error": error})

    async def _finish(self, invoice_id: str, issuer_id: str, recipients: list[str], message_id: str | None, error: str | None, *,
                      dedupe: str, mark: bool = True, refused: dict | None = None, followup: dict[str, Any] | None = None) -> None:
        async def work(tx: Transaction) -> None:
            if mark:
                fields: dict[str, Any] = {"message_id": message_id, "error": error, "next_at": None}
                if refused:
                    fields["refused"] = refused
                if not await self.repo.mark_email(invoice_id, "sent" if message_id else "failed", session=tx.session, **fields):
                    return  # another attempt already finished this delivery
                if followup:
                    await self.repo.schedule_followup(invoice_id, followup, session=tx.session)
            tx.emit(InvoiceEmailed(invoice_id=invoice_id, issuer_id=issuer_id, recipients=recipients if message_id else [], message_id=message_id, skipped_reason=error))

        await self.store.transact(work, dedupe=dedupe)

    async def _schedule_retry(self, invoice_id: str, issuer_id: str, summary: InvoiceSummary, uuid: str, claim: dict[str, Any], error: str, *, dedupe: str | None) -> None:
        now = utcnow()
        first_at = claim.get("first_at") or now
        retry_at = next_attempt(first_at, int(claim.get("attempts") or 1), now, base_s=self.email_retry_base_s, window_s=self.email_retry_window_s, factor=2.0)
        if retry_at is None:
            reason = f"No se pudo entregar el correo en {self.email_retry_window_s / 3600:g} horas. Último error: {error}"
            await self._finish(invoice_id, issuer_id, [], None, reason, dedupe=dedupe or f"email.final:{invoice_id}")
            await self._tell_issuer(invoice_id, issuer_id, summary, uuid, reason)
            return
        context = {"issuer_id": issuer_id, "summary": summary.model_dump(mode="json"), "uuid": uuid}
        await self.repo.schedule_email_retry(invoice_id, retry_at, error, context)
        log.warning("email.retry_scheduled", invoice_id=invoice_id, next_at=retry_at.isoformat(), error=error[:300])
        if dedupe is not None:  # the event is handled: the retry schedule owns the delivery now
            async def work(tx: Transaction) -> None:
                return None

            await self.store.transact(work, dedupe=dedupe)

    async def retry_due_emails(self) -> int:
        """Try the deliveries whose retry is due (called by the background worker)."""
        done = 0
        while (claim := await self.repo.due_email_retry(utcnow())) is not None:
            invoice_id = claim["_id"]
            context = claim.get("retry") or {}
            summary = InvoiceSummary.model_validate(context["summary"])
            issuer_id, uuid = context["issuer_id"], context["uuid"]
            message_id = f"<{invoice_id}@timbra.local>"
            dedupe = f"email.final:{invoice_id}"
            try:
                refused = await self._attempt(invoice_id, issuer_id, summary, uuid, claim["recipients"], message_id)
            except PermanentMailError as exc:
                await self._finish(invoice_id, issuer_id, [], None, str(exc), dedupe=dedupe)
                await self._tell_issuer(invoice_id, issuer_id, summary, uuid, str(exc))
            except TransientMailError as exc:
                await self._schedule_retry(invoice_id, issuer_id, summary, uuid, claim, str(exc), dedupe=None)
            else:
                await self._record_sent(invoice_id, issuer_id, summary, uuid, claim["recipients"], message_id, refused, dedupe=dedupe)
            done += 1
        return done

    async def retry_emails_forever(self, interval: float = 1.0) -> None:
        while True:
            try:
                await self.retry_due_emails()
                await self.retry_due_followups()
            except Exception as exc:  # keep the worker alive through MongoDB hiccups
                log.warning("email.retry_worker_failed", error=repr(exc)[:300])
            await asyncio.sleep(interval)

    async def _tell_issuer(self, invoice_id: str, issuer_id: str, summary: InvoiceSummary, uuid: str, reason: str) -> None:
        """A permanent failure is also emailed to the issuer (platform sender), once."""
        issuer = await self.repo.issuer(issuer_id) or {}
        if not issuer.get("email"):
            return
        name = f"{summary.serie or ''}{summary.folio or ''}" or uuid
        try:
            await self.notify(NotificationRequested(
                event_id=f"email-failed-{invoice_id}", issuer_id=issuer_id, kind="invoice.email_failed", to=[issuer["email"]],
                subject=f"No se pudo enviar la factura {name} por correo",
                body=(f"No pudimos enviar la factura {name} (UUID {uuid}) a {', '.join(summary.recipients[:MAX_RECIPIENTS]) or 'sus destinatarios'}.\n\n"
                      f"Respuesta del servidor de correo: {reason}\n\n"
                      "Revisa las direcciones del cliente o tu configuración de correo y reenvíala con POST /v1/invoices/{id}/email.\n"),
            ), platform=True)
        except Exception as exc:  # telling the issuer is best effort; the status already records it
            log.warning("email.tell_issuer_failed", invoice_id=invoice_id, error=repr(exc)[:300])

    async def resend(self, invoice_id: str, issuer_id: str, emails: list[str] | None) -> dict[str, Any]:
        """POST /v1/invoices/{id}/email: send the invoice again now, to ``emails`` or its recipients."""
        doc = await self.repo.get(invoice_id, issuer_id)
        if doc is None:
            raise NotFound(invoice_id)
        summary = InvoiceSummary.model_validate(doc["summary"])
        recipients = list(dict.fromkeys(emails or summary.recipients))[:MAX_RECIPIENTS]
        if not recipients:
            raise EmailRefused("La factura no tiene destinatarios; indica al menos un correo en emails.", permanent=True)
        message_id = f"<{invoice_id}.{new_id()}@timbra.local>"
        entry: dict[str, Any] = {"at": utcnow(), "recipients": recipients, "message_id": message_id}
        try:
            refused = await self._attempt(invoice_id, issuer_id, summary, doc["uuid"], recipients, message_id)
        except MailError as exc:
            await self.repo.log_resend(invoice_id, {**entry, "error": str(exc)})
            raise EmailRefused(str(exc), permanent=isinstance(exc, PermanentMailError)) from None
        await self.repo.log_resend(invoice_id, {**entry, "refused": refused})
        return {"ok": True, "recipients": [r for r in recipients if r not in refused], "message_id": message_id, "refused": refused}

    async def email_status(self, invoice_id: str, issuer_id: str) -> dict[str, Any] | None:
        if await self.repo.get(invoice_id, issuer_id) is None:
            return None
        doc = await self.repo.email_status(invoice_id) or {}
        return {
            "invoice_id": invoice_id, "state": doc.get("state", "pending"), "recipients": doc.get("recipients", []),
            "attempts": doc.get("attempts", 0), "message_id": doc.get("message_id"), "error": doc.get("error") or doc.get("last_error"),
            "next_attempt_at": doc.get("next_at") if doc.get("state") == "retry" else None, "refused": doc.get("refused") or {},
            "followup": _followup_view(doc.get("followup")), "resends": doc.get("resends", []),
        }

    # ------------------------------------------------------------------ templates

    async def template(self, issuer_id: str) -> dict[str, Any]:
        custom = await self.repo.template(issuer_id) or {}
        return {"subject": custom.get("subject") or templates.DEFAULT_SUBJECT, "body": custom.get("body") or templates.DEFAULT_BODY,
                "custom": bool(custom.get("subject") or custom.get("body")), "fields": templates.FIELDS}

    async def set_template(self, issuer_id: str, subject: str | None, body: str | None) -> dict[str, Any]:
        for text in (subject, body):
            if text:
                templates.check(text)
        await self.repo.set_template(issuer_id, subject or None, body or None)
        return await self.template(issuer_id)

    async def reset_template(self, issuer_id: str) -> dict[str, Any]:
        await self.repo.delete_template(issuer_id)
        return await self.template(issuer_id)

    # ------------------------------------------------------------------ platform notifications

    async def notify(self, event: NotificationRequested, *, platform: bool = False) -> None:
        """Deliver a platform email (CSD expiry, low credits, …) once per event, from the platform sender."""
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
        except TransientMailError as exc:  # redelivered after a back-off; the claim lets it through again
            raise RetryLater(str(exc)) from None

        async def work(tx: Transaction) -> None:
            await self.repo.mark_notification(event.event_id, "failed" if error else "sent", session=tx.session, error=error)

        await outlast_outage(lambda: self.store.transact(work, dedupe=dedupe), within_s=EMAIL_LEASE_S, what=f"notification:{event.event_id}")
