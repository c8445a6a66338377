"""``NotifierService`` with fake renderer, mailer, repository and store."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from lxml import etree
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from timbra_shared import topics
from timbra_shared.events import InvoiceEmailed, InvoiceRendered, InvoiceStamped, InvoiceSummary, NotificationRequested

NS_TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"


def _summary(recipients=("pagos@ure.mx",)) -> InvoiceSummary:
    return InvoiceSummary(type="I", serie="F", folio="1", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="UNIVERSIDAD ROBOTICA ESPAÑOLA", total=Decimal("1305.00"), recipients=list(recipients))


def _stamped(xml: bytes, recipients=("pagos@ure.mx",)) -> InvoiceStamped:
    uuid = etree.fromstring(xml).find(f".//{NS_TFD}").get("UUID")
    return InvoiceStamped(invoice_id="inv_1", issuer_id="iss_1", summary=_summary(recipients), uuid=uuid, fecha_timbrado="2025-01-01T00:00:00", xml=xml.decode(), pac="sandbox")


def _rendered(recipients=("pagos@ure.mx",), uuid="5FB2822E-396D-4725-8521-CDC4BDD20CCF") -> InvoiceRendered:
    return InvoiceRendered(invoice_id="inv_1", issuer_id="iss_1", summary=_summary(recipients), uuid=uuid, pdf_bytes=10)


async def _render_then(notifier, fakes, stamped_xml, recipients=("pagos@ure.mx",)) -> InvoiceRendered:
    await notifier.render(_stamped(stamped_xml, recipients))
    (rendered,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceRendered)]
    return rendered


# --------------------------------------------------------------------------- render


async def test_render_stores_xml_and_pdf_and_emits_rendered(notifier, fakes, stamped_xml):
    event = _stamped(stamped_xml)
    await notifier.render(event)

    (context,) = fakes.renderer.contexts
    assert context["total_letra"] == "UN MIL TRESCIENTOS CINCO PESOS 00/100 M.N."
    ((doc, session),) = fakes.repo.saves
    assert session is fakes.store.sessions[0]
    assert doc["_id"] == "inv_1" and doc["uuid"] == event.uuid
    assert doc["xml"] == stamped_xml
    assert doc["pdf"].startswith(b"%PDF")
    (rendered,) = fakes.store.emitted
    assert isinstance(rendered, InvoiceRendered)
    assert (rendered.invoice_id, rendered.uuid, rendered.pdf_bytes) == ("inv_1", event.uuid, len(doc["pdf"]))
    assert rendered.summary == event.summary


async def test_render_once(notifier, fakes, stamped_xml):
    event = _stamped(stamped_xml)
    await notifier.render(event)
    await notifier.render(event)
    assert len(fakes.renderer.contexts) == 1
    assert len(fakes.store.emitted) == 1
    assert f"{topics.INVOICE_STAMPED}:inv_1" in fakes.store.processed


# --------------------------------------------------------------------------- email


async def test_email_is_sent_once_with_both_attachments(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml, recipients=("pagos@ure.mx", "conta@ure.mx"))
    await notifier.email(rendered)
    await notifier.email(rendered)  # redelivery

    (message,) = fakes.mailer.sent
    assert message["To"] == "pagos@ure.mx, conta@ure.mx"
    assert message["Subject"] == "Factura F1 de EKU9003173C9"
    assert message["Message-ID"] == "<inv_1@timbra.local>"
    body = message.get_body(("plain",)).get_content()
    assert "UNIVERSIDAD ROBOTICA ESPAÑOLA" in body and rendered.uuid in body and "1305.00 MXN" in body
    attachments = {part.get_filename(): (part.get_content_type(), part.get_content()) for part in message.iter_attachments()}
    assert set(attachments) == {f"{rendered.uuid}.xml", f"{rendered.uuid}.pdf"}
    assert attachments[f"{rendered.uuid}.xml"] == ("application/xml", stamped_xml)
    assert attachments[f"{rendered.uuid}.pdf"][0] == "application/pdf"
    assert attachments[f"{rendered.uuid}.pdf"][1] == fakes.repo.documents["inv_1"]["pdf"]

    (emailed,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    assert emailed.recipients == ["pagos@ure.mx", "conta@ure.mx"]
    assert emailed.message_id == "<inv_1@timbra.local>"
    assert emailed.skipped_reason is None
    (mark,) = fakes.repo.marks
    assert (mark["state"], mark["message_id"], mark["error"]) == ("sent", "<inv_1@timbra.local>", None)
    assert mark["session"] in fakes.store.sessions


async def test_transient_failure_is_retried_later_with_the_same_message_id(notifier, fakes, stamped_xml, transient_error):
    rendered = await _render_then(notifier, fakes, stamped_xml)
    fakes.mailer.fail_with = [transient_error]
    await notifier.email(rendered)
    assert not [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    retry = fakes.repo.emails["inv_1"]
    assert retry["state"] == "retry" and retry["last_error"] == str(transient_error)
    delay = (retry["next_at"] - datetime.now(UTC)).total_seconds()
    assert 20 < delay <= 30  # the first back-off step
    await notifier.email(rendered)  # a redelivery of invoice.rendered: the schedule owns the delivery now
    assert fakes.mailer.sent == []

    assert await notifier.retry_due_emails() == 0  # not due yet
    retry["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    assert await notifier.retry_due_emails() == 1
    (message,) = fakes.mailer.sent
    assert message["Message-ID"] == "<inv_1@timbra.local>"
    (emailed,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    assert emailed.message_id == "<inv_1@timbra.local>" and emailed.recipients == ["pagos@ure.mx"]
    assert fakes.repo.emails["inv_1"]["state"] == "sent" and fakes.repo.emails["inv_1"]["attempts"] == 2


async def test_backoff_doubles_and_gives_up_at_the_end_of_the_window(notifier, fakes, stamped_xml, transient_error):
    rendered = await _render_then(notifier, fakes, stamped_xml)
    fakes.mailer.fail_with = [transient_error]
    await notifier.email(rendered)
    first = fakes.repo.emails["inv_1"]
    first["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    fakes.mailer.fail_with = [transient_error]
    await notifier.retry_due_emails()
    delay = (fakes.repo.emails["inv_1"]["next_at"] - datetime.now(UTC)).total_seconds()
    assert 50 < delay <= 60  # 30 s, then 60 s
    # a day later: the next failure ends it, recorded with the last server reply
    fakes.repo.emails["inv_1"]["first_at"] = datetime.now(UTC) - timedelta(hours=25)
    fakes.repo.emails["inv_1"]["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    fakes.mailer.fail_with = [transient_error]
    await notifier.retry_due_emails()
    (emailed,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    assert emailed.message_id is None and "24 horas" in emailed.skipped_reason and "421 4.3.2" in emailed.skipped_reason
    assert fakes.repo.emails["inv_1"]["state"] == "failed"


async def test_no_recipients_is_recorded_as_skipped_without_mail(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml, recipients=())
    await notifier.email(rendered)
    assert fakes.mailer.sent == []
    (emailed,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    assert emailed.recipients == []
    assert emailed.message_id is None
    assert emailed.skipped_reason == "La factura no tiene destinatarios de correo."
    assert fakes.repo.marks == [] and fakes.repo.emails == {}


async def test_permanent_mail_error_is_recorded(notifier, fakes, stamped_xml, permanent_error):
    rendered = await _render_then(notifier, fakes, stamped_xml)
    fakes.mailer.fail_with = [permanent_error]
    await notifier.email(rendered)
    await notifier.email(rendered)  # a redelivery does not try again

    assert fakes.mailer.sent == []
    (emailed,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    assert emailed.recipients == [] and emailed.message_id is None
    assert emailed.skipped_reason == str(permanent_error)
    (mark,) = fakes.repo.marks
    assert (mark["state"], mark["message_id"], mark["error"]) == ("failed", None, str(permanent_error))


async def test_recipients_are_deduplicated_and_capped(notifier, fakes, stamped_xml):
    many = ["a@x.mx", "a@x.mx", *[f"u{i}@x.mx" for i in range(12)]]
    rendered = await _render_then(notifier, fakes, stamped_xml)
    rendered = rendered.model_copy(update={"summary": rendered.summary.model_copy(update={"recipients": many})})
    await notifier.email(rendered)
    (message,) = fakes.mailer.sent
    to = message["To"].split(", ")
    assert len(to) == 10 and to[0] == "a@x.mx" and len(set(to)) == 10


async def test_a_sent_email_is_recorded_through_a_mongodb_outage_and_not_sent_again(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml)
    fakes.store.fail_next = [AutoReconnect("mongod is down"), ServerSelectionTimeoutError("no servers")]
    await notifier.email(rendered)
    assert fakes.store.fail_next == []  # both failed records were retried
    assert fakes.repo.emails["inv_1"]["state"] == "sent"
    await notifier.email(rendered)  # the redelivery after the outage
    assert len(fakes.mailer.sent) == 1
    assert len([e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]) == 1


async def test_a_failure_that_is_not_an_outage_is_not_retried_after_sending(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml)
    fakes.store.fail_next = [ValueError("a bug"), AutoReconnect("not reached")]
    with pytest.raises(ValueError):
        await notifier.email(rendered)
    assert len(fakes.store.fail_next) == 1 and fakes.repo.emails["inv_1"]["state"] == "sending"


async def test_an_email_already_sent_is_not_sent_again(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml)
    fakes.repo.emails["inv_1"] = {"_id": "inv_1", "state": "sent", "attempts": 1}
    await notifier.email(rendered)
    assert fakes.mailer.sent == []


# --------------------------------------------------------------------------- postponed recipients


async def test_recipients_postponed_while_others_were_accepted_get_their_own_retries(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml, recipients=("pagos@ure.mx", "conta@ure.mx", "malo@ure.mx"))
    fakes.mailer.refusals = [{"conta@ure.mx": "450 4.2.1 mailbox busy", "malo@ure.mx": "550 5.1.1 no such user"}]
    await notifier.email(rendered)
    (emailed,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    assert emailed.recipients == ["pagos@ure.mx"]  # the invoice counts as emailed to whom it reached
    followup = fakes.repo.emails["inv_1"]["followup"]
    assert followup["state"] == "retry" and followup["recipients"] == ["conta@ure.mx"]  # 5xx is not retried
    (mark,) = fakes.repo.marks
    assert fakes.repo.followup_sessions == [mark["session"]]  # scheduled in the transaction that records the send
    assert 20 < (followup["next_at"] - datetime.now(UTC)).total_seconds() <= 30
    assert await notifier.retry_due_followups() == 0  # not due yet

    followup["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    fakes.mailer.refusals = [{"conta@ure.mx": "451 4.7.1 greylisted"}]
    assert await notifier.retry_due_followups() == 1
    followup = fakes.repo.emails["inv_1"]["followup"]
    assert followup["state"] == "retry" and followup["attempts"] == 2 and "greylisted" in followup["last_error"]
    assert 50 < (followup["next_at"] - datetime.now(UTC)).total_seconds() <= 60  # 30 s, then 60 s

    followup["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    assert await notifier.retry_due_followups() == 1
    retried = fakes.mailer.sent[1:]
    assert [m["To"] for m in retried] == ["conta@ure.mx", "conta@ure.mx"]  # only the postponed one
    assert all(m["Message-ID"] == "<inv_1@timbra.local>" for m in retried)  # the same message
    followup = fakes.repo.emails["inv_1"]["followup"]
    assert followup["state"] == "sent" and followup["delivered"] == ["conta@ure.mx"]
    assert len([e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]) == 1  # still one invoice.emailed
    status = await notifier.email_status("inv_1", "iss_1")
    assert status["state"] == "sent" and status["followup"]["state"] == "sent" and status["followup"]["delivered"] == ["conta@ure.mx"]


async def test_a_follow_up_that_left_is_recorded_through_a_mongodb_outage_and_not_sent_again(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml, recipients=("pagos@ure.mx", "conta@ure.mx", "caja@ure.mx"))
    fakes.mailer.refusals = [{"conta@ure.mx": "450 4.2.1 mailbox busy", "caja@ure.mx": "451 4.3.0 try later"}]
    await notifier.email(rendered)
    followup = fakes.repo.emails["inv_1"]["followup"]

    followup["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    fakes.mailer.refusals = [{"caja@ure.mx": "451 4.3.0 try later"}]
    fakes.repo.followup_failures = [AutoReconnect("mongod is down")]
    assert await notifier.retry_due_followups() == 1
    assert fakes.repo.followup_failures == []  # the reschedule was retried, not dropped
    followup = fakes.repo.emails["inv_1"]["followup"]
    assert followup["state"] == "retry" and followup["recipients"] == ["caja@ure.mx"] and followup["delivered"] == ["conta@ure.mx"]

    followup["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    fakes.repo.followup_failures = [AutoReconnect("mongod is down"), ServerSelectionTimeoutError("no servers")]
    assert await notifier.retry_due_followups() == 1
    assert fakes.repo.followup_failures == []
    assert fakes.repo.emails["inv_1"]["followup"]["state"] == "sent"
    assert await notifier.retry_due_followups() == 0  # nothing left to send again
    assert [m["To"] for m in fakes.mailer.sent[1:]] == ["conta@ure.mx, caja@ure.mx", "caja@ure.mx"]


async def test_postponed_recipients_are_given_up_at_the_end_of_the_window_and_the_issuer_is_told(notifier, fakes, stamped_xml, transient_error):
    fakes.repo.issuers["iss_1"] = {"issuer_id": "iss_1", "version": 1, "email": "emisor@eku.mx", "legal_name": "ESCUELA KEMPER URGATE"}
    rendered = await _render_then(notifier, fakes, stamped_xml, recipients=("pagos@ure.mx", "conta@ure.mx"))
    fakes.mailer.refusals = [{"conta@ure.mx": "452 4.2.2 mailbox full"}]
    await notifier.email(rendered)
    followup = fakes.repo.emails["inv_1"]["followup"]
    followup["first_at"] = datetime.now(UTC) - timedelta(hours=25)
    followup["next_at"] = datetime.now(UTC) - timedelta(seconds=1)
    fakes.mailer.fail_with = [transient_error]
    assert await notifier.retry_due_followups() == 1
    followup = fakes.repo.emails["inv_1"]["followup"]
    assert followup["state"] == "failed" and "conta@ure.mx" in followup["error"] and "24 horas" in followup["error"]
    told = [m for m in fakes.mailer.sent if m["To"] == "emisor@eku.mx"]
    assert len(told) == 1 and "421 4.3.2" in told[0].get_content()


async def test_a_send_with_only_permanent_refusals_schedules_nothing(notifier, fakes, stamped_xml):
    rendered = await _render_then(notifier, fakes, stamped_xml, recipients=("pagos@ure.mx", "malo@ure.mx"))
    fakes.mailer.refusals = [{"malo@ure.mx": "550 5.1.1 no such user"}]
    await notifier.email(rendered)
    assert "followup" not in fakes.repo.emails["inv_1"]
    assert fakes.repo.emails["inv_1"]["refused"] == {"malo@ure.mx": "550 5.1.1 no such user"}


# --------------------------------------------------------------------------- platform notifications


async def test_a_platform_notification_is_sent_once_and_recorded_through_a_mongodb_outage(notifier, fakes):
    event = NotificationRequested(issuer_id="iss_1", kind="csd.expiring", to=["emisor@eku.mx"], subject="Tu CSD vence pronto", body="Renueva tu CSD.")
    fakes.store.fail_next = [AutoReconnect("mongod is down")]
    await notifier.notify(event)
    await notifier.notify(event)  # redelivered
    (message,) = fakes.mailer.sent
    assert message["To"] == "emisor@eku.mx" and message["Message-ID"] == f"<{event.event_id}@timbra.local>"
    assert fakes.repo.notifications[event.event_id]["state"] == "sent"
