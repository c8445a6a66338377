"""The notifier's use cases beyond the happy path: on-demand rendering, CANCELADO, previews, the
issuer's SMTP and templates, resends, and telling the issuer about a permanent failure."""

from decimal import Decimal

import pytest
from lxml import etree

from timbra_notifier.adapters.mailer import SmtpConfig
from timbra_notifier.domain.printed import CANCELADO, SIN_VALIDEZ
from timbra_notifier.service import EmailRefused, NotFound
from timbra_shared.events import InvoiceEmailed, InvoiceRendered, InvoiceRequest, InvoiceRequested, InvoiceStamped, InvoiceSummary

NS_TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"
PROFILE = {"issuer_id": "iss_1", "version": 3, "rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE", "tax_regime": "601", "zip": "42501",
           "email": "dueño@kemper.mx", "logo_id": "logo_1", "logo_placement": "right"}


def _stamped(xml: bytes, recipients=("pagos@ure.mx",)) -> InvoiceStamped:
    uuid = etree.fromstring(xml).find(f".//{NS_TFD}").get("UUID")
    summary = InvoiceSummary(type="I", serie="F", folio="1", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="UNIVERSIDAD ROBOTICA ESPAÑOLA",
                             total=Decimal("1305.00"), recipients=list(recipients))
    return InvoiceStamped(invoice_id="inv_1", issuer_id="iss_1", summary=summary, uuid=uuid, fecha_timbrado="2025-01-01T00:00:00", xml=xml.decode(), pac="sandbox")


async def _rendered(notifier, fakes, xml, **kw) -> InvoiceRendered:
    await notifier.render(_stamped(xml, **kw))
    return next(e for e in fakes.store.emitted if isinstance(e, InvoiceRendered))


async def test_the_issuer_projection_logo_and_notes_reach_the_pdf(notifier, fakes, stamped_xml):
    await notifier.on_issuer(PROFILE)
    await notifier.on_issuer({**PROFILE, "version": 2, "legal_name": "VIEJO"})  # an older profile arrives late
    fakes.profiles.logos["iss_1"] = "data:image/png;base64,AAAA"
    await notifier.on_requested(InvoiceRequested(invoice_id="inv_1", issuer_id="iss_1", request=InvoiceRequest(notes="Entregar en la dirección")))
    await notifier.render(_stamped(stamped_xml))
    (context,) = fakes.renderer.contexts
    assert (context["logo"], context["logo_placement"], context["notes"]) == ("data:image/png;base64,AAAA", "right", "Entregar en la dirección")
    assert fakes.repo.issuers["iss_1"]["legal_name"] == "ESCUELA KEMPER URGATE"
    assert fakes.profiles.forgotten == ["iss_1", "iss_1"]  # a profile change drops the cached SMTP settings


async def test_on_demand_rendering_defers_the_pdf_until_it_is_needed(notifier, fakes, stamped_xml):
    await notifier.on_issuer({**PROFILE, "pdf_rendering": "on_demand"})
    rendered = await _rendered(notifier, fakes, stamped_xml, recipients=())
    assert rendered.pdf_bytes == 0 and fakes.renderer.contexts == []
    assert fakes.repo.documents["inv_1"]["pdf"] is None and fakes.repo.documents["inv_1"]["xml"] == stamped_xml
    _, pdf = await notifier.pdf("inv_1", "iss_1")  # first download renders and caches
    _, again = await notifier.pdf("inv_1", "iss_1")
    assert pdf == again and len(fakes.renderer.contexts) == 1
    assert await notifier.pdf("inv_1", "iss_other") is None


async def test_on_demand_rendering_renders_when_the_email_needs_it(fakes, stamped_xml):
    from timbra_notifier.service import NotifierService

    notifier = NotifierService(store=fakes.store, repo=fakes.repo, renderer=fakes.renderer, mailer=fakes.mailer, profiles=fakes.profiles, default_rendering="on_demand")
    rendered = await _rendered(notifier, fakes, stamped_xml)
    assert fakes.renderer.contexts == []
    await notifier.email(rendered)
    (message,) = fakes.mailer.sent
    pdf = next(p for p in message.iter_attachments() if p.get_filename().endswith(".pdf")).get_content()
    assert pdf.startswith(b"%PDF") and len(fakes.renderer.contexts) == 1


async def test_a_cancelled_invoice_renders_with_the_cancelado_mark(notifier, fakes, stamped_xml):
    await notifier.render(_stamped(stamped_xml))
    _, before = await notifier.pdf("inv_1", "iss_1")
    assert fakes.renderer.contexts[-1]["watermark"] is None
    await notifier.on_cancellation("rejected", {"invoice_id": "inv_1", "issuer_id": "iss_1"})  # the SAT refused: still valid
    assert (await notifier.pdf("inv_1", "iss_1"))[1] == before
    await notifier.on_cancellation("completed", {"invoice_id": "inv_1", "issuer_id": "iss_1"})
    _, after = await notifier.pdf("inv_1", "iss_1")
    assert fakes.renderer.contexts[-1]["watermark"] == CANCELADO and after != before
    await notifier.pdf("inv_1", "iss_1")
    assert len(fakes.renderer.contexts) == 2  # the cancelled PDF is cached too


async def test_preview_builds_a_draft_without_stamp(notifier, fakes):
    request = InvoiceRequest.model_validate({
        "customer": {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991"},
        "items": [{"product": {"description": "Colegiatura", "product_key": "86121500", "unit_key": "E48", "price": "562.50"}, "quantity": "2"}],
        "payment_form": "01", "payment_method": "PUE", "notes": "Borrador",
    })
    with pytest.raises(NotFound):
        await notifier.preview("iss_1", request)
    await notifier.on_issuer(PROFILE)
    pdf = await notifier.preview("iss_1", request)
    (context,) = fakes.renderer.contexts
    assert pdf.startswith(b"%PDF") and context["watermark"] == SIN_VALIDEZ and context["notes"] == "Borrador"
    assert context["c"]["Total"] == "1305.00" and context["emisor"]["Nombre"] == "ESCUELA KEMPER URGATE"
    assert context["tfd"] == {} and context["qr"] is None
    assert fakes.repo.documents == {}  # a preview stores nothing


async def test_preview_draws_the_placement_being_chosen(notifier, fakes):
    request = InvoiceRequest.model_validate({
        "customer": {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991"},
        "items": [{"product": {"description": "Colegiatura", "product_key": "86121500", "unit_key": "E48", "price": "562.50"}, "quantity": "1"}],
        "payment_form": "01", "payment_method": "PUE",
    })
    await notifier.on_issuer(PROFILE)
    await notifier.preview("iss_1", request)
    await notifier.preview("iss_1", request, logo_placement="center")
    assert [c["logo_placement"] for c in fakes.renderer.contexts] == ["right", "center"]


async def test_the_issuers_smtp_and_template_are_used(notifier, fakes, stamped_xml):
    await notifier.on_issuer(PROFILE)
    config = SmtpConfig(host="smtp.kemper.mx", port=587, sender="facturas@kemper.mx", sender_name="Kemper", username="u", password="s3cr3t", security="starttls", source="issuer")
    fakes.profiles.smtp_by_issuer["iss_1"] = config
    await notifier.set_template("iss_1", "Tu {tipo} {serie_folio} de {emisor}", "Estimado {receptor}: total {total}. UUID {uuid}.")
    rendered = await _rendered(notifier, fakes, stamped_xml)
    await notifier.email(rendered)
    (message,) = fakes.mailer.sent
    assert fakes.mailer.configs == [config]
    assert message["Subject"] == "Tu Factura F1 de ESCUELA KEMPER URGATE"
    assert message.get_body(("plain",)).get_content().strip() == f"Estimado UNIVERSIDAD ROBOTICA ESPAÑOLA: total 1305.00 MXN. UUID {rendered.uuid}."
    assert "From" not in message  # the mailer sets the issuer's own address


async def test_the_platform_sender_writes_in_the_issuers_name(notifier, fakes, stamped_xml):
    await notifier.on_issuer(PROFILE)
    await notifier.email(await _rendered(notifier, fakes, stamped_xml))
    (message,) = fakes.mailer.sent
    assert fakes.mailer.configs == [None]
    assert message["From"] == '"ESCUELA KEMPER URGATE" <facturas@timbra.local>' or message["From"] == "ESCUELA KEMPER URGATE <facturas@timbra.local>"
    assert message["Reply-To"] == "dueño@kemper.mx"
    assert message["Subject"] == "Factura F1 de ESCUELA KEMPER URGATE"


async def test_a_template_with_an_unknown_field_is_refused(notifier):
    from timbra_notifier.domain.templates import TemplateInvalid

    with pytest.raises(TemplateInvalid, match="contraseña"):
        await notifier.set_template("iss_1", "Hola {contraseña}", None)
    assert (await notifier.template("iss_1"))["custom"] is False


async def test_issuer_profile_down_is_a_transient_failure(notifier, fakes, stamped_xml):
    fakes.profiles.fail = True
    await notifier.email(await _rendered(notifier, fakes, stamped_xml))
    assert fakes.mailer.sent == [] and fakes.repo.emails["inv_1"]["state"] == "retry"
    assert "configuración de correo del emisor" in fakes.repo.emails["inv_1"]["last_error"]


async def test_a_permanent_failure_is_recorded_and_the_issuer_is_told(notifier, fakes, stamped_xml, permanent_error):
    await notifier.on_issuer(PROFILE)
    rendered = await _rendered(notifier, fakes, stamped_xml)
    fakes.mailer.fail_with = [permanent_error]
    await notifier.email(rendered)
    (emailed,) = [e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]
    assert "550 5.1.1" in emailed.skipped_reason and emailed.message_id is None
    (notice,) = fakes.mailer.sent
    assert notice["To"] == "dueño@kemper.mx" and "550 5.1.1 mailbox unavailable" in notice.get_body(("plain",)).get_content()
    status = await notifier.email_status("inv_1", "iss_1")
    assert status["state"] == "failed" and "550 5.1.1" in status["error"]


async def test_resend_sends_again_with_a_new_message_id(notifier, fakes, stamped_xml, permanent_error):
    with pytest.raises(NotFound):
        await notifier.resend("inv_1", "iss_1", None)
    await notifier.email(await _rendered(notifier, fakes, stamped_xml))
    result = await notifier.resend("inv_1", "iss_1", ["otro@ure.mx"])
    first, second = fakes.mailer.sent
    assert second["To"] == "otro@ure.mx" and second["Message-ID"] != first["Message-ID"] == "<inv_1@timbra.local>"
    assert result["recipients"] == ["otro@ure.mx"] and result["message_id"] == second["Message-ID"]
    fakes.mailer.fail_with = [permanent_error]
    with pytest.raises(EmailRefused) as refused:
        await notifier.resend("inv_1", "iss_1", None)
    assert refused.value.permanent
    with pytest.raises(NotFound):
        await notifier.resend("inv_1", "iss_other", None)
    assert len([e for e in fakes.store.emitted if isinstance(e, InvoiceEmailed)]) == 1  # resends are not status changes
