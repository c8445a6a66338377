"""The notifier on the real platform: the email at the SMTP sink with both attachments, the PDF's
content and QR, previews, resends, the issuer's own SMTP server with authentication, and a
permanent SMTP failure recorded with the server's reply (never the password)."""

import asyncio
import shutil
import subprocess
import tempfile
import time
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
import pytest

from timbra_shared.cfdi import verify
from timbra_shared.devstack.scenario import sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

POPPLER = shutil.which("pdftotext") and shutil.which("pdftoppm")
VERIFY_URL = "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"


async def _emailed(client, issuer, body):  # noqa: ANN001, ANN202
    created = await client.create_invoice(issuer, body)
    assert created.status_code == 202, created.text
    invoice_id = created.json()["id"]
    state = (await client.wait_final(issuer, [invoice_id], timeout=90))[invoice_id]
    assert state["status"] == "emailed", state
    return state


async def _mail_to(platform, address: str, count: int = 1, timeout: float = 30) -> list[Message]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:
        while True:
            found = [m for m in (await sink.get("/api/messages")).json() if address in m["to"]]
            if len(found) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        return [(m, message_from_bytes((await sink.get(f"/api/messages/{m['id']}/raw")).content)) for m in found]


def _attachments(mail: Message) -> dict[str, bytes]:
    return {part.get_filename(): part.get_payload(decode=True) for part in mail.walk() if part.get_filename()}


def _pdf_text(pdf: bytes) -> str:
    return " ".join(subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode().split())


def _qr_texts(pdf: bytes) -> list[str]:
    zxingcpp = pytest.importorskip("zxingcpp")
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "f.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", "150", "-singlefile", str(Path(folder) / "f.pdf"), str(Path(folder) / "p")], check=True, capture_output=True)
        image = Image.open(Path(folder) / "p.png")
        return [b.text for b in zxingcpp.read_barcodes(image) if b.format == zxingcpp.BarcodeFormat.QRCode]


@pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext, pdftoppm) not installed")
async def test_the_customer_receives_xml_and_pdf_and_the_pdf_shows_the_stamp(client, issuer, platform) -> None:
    email = f"{new_id()}@example.com"
    body = sample_invoice(email=email, notes="Gracias por su preferencia. Año fiscal, niño, acción.")
    state = await _emailed(client, issuer, body)
    ((summary, mail),) = await _mail_to(platform, email)
    assert summary["from"].endswith("<facturas@timbra.local>") and "ESCUELA KEMPER URGATE" in summary["from"]
    assert summary["subject"].startswith("Factura ") and "ESCUELA KEMPER URGATE" in summary["subject"]
    assert mail["Message-ID"] == f"<{state['id']}@timbra.local>"
    files = _attachments(mail)
    assert set(files) == {f"{state['uuid']}.xml", f"{state['uuid']}.pdf"}
    xml, pdf = files[f"{state['uuid']}.xml"], files[f"{state['uuid']}.pdf"]
    assert verify(xml).valid
    downloaded = await client.http.get(f"/v1/invoices/{state['id']}/pdf", headers=issuer.headers)
    assert downloaded.status_code == 200 and downloaded.content == pdf

    from lxml import etree

    root = etree.fromstring(xml)
    total = root.get("Total")
    tfd = root.find(".//{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital")
    text = _pdf_text(pdf)
    for expected in (state["uuid"], f"{total} MXN", root.get("SubTotal"), "DOSCIENTOS TREINTA Y DOS PESOS 00/100 M.N.", root.get("NoCertificado"),
                     tfd.get("NoCertificadoSAT"), tfd.get("FechaTimbrado"), "MUNICIPIO DE CUAUTITLAN IZCALLI", "Servicio de consultoría 1",
                     "Año fiscal, niño, acción.", "03 - Transferencia electrónica de fondos"):
        assert expected in text, expected
    (qr,) = _qr_texts(pdf)
    rfc_receptor = root.find("{http://www.sat.gob.mx/cfd/4}Receptor").get("Rfc")
    assert qr == f"{VERIFY_URL}?id={state['uuid']}&re={issuer.rfc}&rr={rfc_receptor}&tt={float(total):025.6f}&fe={root.get('Sello')[-8:]}"


@pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext, pdftoppm) not installed")
async def test_preview_pdf_before_stamping_has_no_fiscal_validity(client, issuer) -> None:
    response = await client.http.post("/v1/invoices/preview/pdf", headers=issuer.headers, json=sample_invoice(items=2))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    text = _pdf_text(response.content)
    assert "SIN VALIDEZ FISCAL" in text and "Servicio de consultoría 2" in text and "464.00 MXN" in text
    assert _qr_texts(response.content) == []
    bad = await client.http.post("/v1/invoices/preview/pdf", headers=issuer.headers, json={**sample_invoice(), "items": []})
    assert bad.status_code == 422 and bad.json()["code"] == "TIMBRA_ITEMS_REQUIRED"
    unauthenticated = await client.http.post("/v1/invoices/preview/pdf", json=sample_invoice())
    assert unauthenticated.status_code == 401


async def test_resend_and_templates(client, issuer, platform) -> None:
    email = f"{new_id()}@example.com"
    state = await _emailed(client, issuer, sample_invoice(email=email))
    template = await client.http.put("/v1/issuers/me/email-template", headers=issuer.headers,
                                     json={"subject": "Reenvío de su {tipo} {serie_folio}", "body": "Hola {receptor}, reenviamos el folio {uuid}."})
    assert template.status_code == 200 and template.json()["custom"] is True
    bad = await client.http.put("/v1/issuers/me/email-template", headers=issuer.headers, json={"subject": "{password}"})
    assert bad.status_code == 422
    try:
        other = f"{new_id()}@example.com"
        resent = await client.http.post(f"/v1/invoices/{state['id']}/email", headers=issuer.headers, json={"emails": [other]})
        assert resent.status_code == 200, resent.text
        ((summary, mail),) = await _mail_to(platform, other)
        assert summary["subject"].startswith("Reenvío de su Factura")
        assert state["uuid"] in mail.get_payload(0).get_payload(decode=True).decode()
        assert set(_attachments(mail)) == {f"{state['uuid']}.xml", f"{state['uuid']}.pdf"}
        assert mail["Message-ID"] != f"<{state['id']}@timbra.local>"
        status = (await client.http.get(f"/v1/invoices/{state['id']}/email", headers=issuer.headers)).json()
        assert status["state"] == "sent" and status["resends"][-1]["recipients"] == [other]
        assert len(await _mail_to(platform, email, timeout=0)) == 1  # the original recipient got one email only
    finally:
        await client.http.delete("/v1/issuers/me/email-template", headers=issuer.headers)


async def test_the_issuers_own_smtp_server_with_authentication(client, platform) -> None:
    kemper = await client.onboard(rfc="KEM010101AB1", legal_name="KEMPER DEL NORTE", tax_regime="601", zip_code="64000", credits=5)
    password = "p4ss-" + new_id()
    smtp = await client.http.put("/v1/issuers/me/smtp", headers=kemper.headers, json={
        "address": "facturas@kemper.example", "sender_name": "Kemper Facturación", "username": "kemper-user", "password": password,
        "host": platform.config.host, "port": platform.config.smtp_port, "security": "none",
    })
    assert smtp.status_code == 200, smtp.text
    email = f"{new_id()}@example.com"
    await _emailed(client, kemper, sample_invoice(email=email))
    ((summary, mail),) = await _mail_to(platform, email)
    assert summary["auth_user"] == "kemper-user"
    assert summary["envelope_from"] == "facturas@kemper.example" and "Kemper Facturación" in summary["from"]
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:
        raw = (await sink.get(f"/api/messages/{summary['id']}/raw")).content
    assert password.encode() not in raw


async def test_a_refused_login_is_recorded_with_the_servers_reply_and_no_password(client, platform) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Refuse:
        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
            return "250 OK"

    def deny(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN201
        return AuthResult(success=False, handled=False, message="535 5.7.8 Credenciales rechazadas por el servidor de prueba")

    from timbra_shared.devstack.servers import free_port

    port = free_port()
    controller = Controller(Refuse(), hostname="127.0.0.1", port=port, authenticator=deny, auth_require_tls=False)
    controller.start()
    try:
        issuer = await client.onboard(rfc="REF010101AB1", legal_name="RECHAZOS SA", tax_regime="601", zip_code="64000", credits=5)
        password = "no-me-muestres-" + new_id()
        smtp = await client.http.put("/v1/issuers/me/smtp", headers=issuer.headers, json={
            "address": "facturas@rechazos.example", "username": "rechazos", "password": password, "host": "127.0.0.1", "port": port, "security": "none",
        })
        assert smtp.status_code == 200, smtp.text
        state = await _emailed(client, issuer, sample_invoice(email=f"{new_id()}@example.com"))
        status = (await client.http.get(f"/v1/invoices/{state['id']}/email", headers=issuer.headers)).json()
        assert status["state"] == "failed" and status["message_id"] is None
        assert "535" in status["error"] and "Credenciales rechazadas" in status["error"]
        assert password not in str(status)
        deadline, notice = time.monotonic() + 30, []
        while not notice and time.monotonic() < deadline:  # the issuer is told, from the platform sender
            notice = [mail for _, mail in await _mail_to(platform, "emisor@example.com", timeout=0) if state["uuid"] in mail.as_string()]
            await asyncio.sleep(0.3)
        assert notice and "535" in notice[0].get_payload(decode=True).decode() and password not in notice[0].as_string()
    finally:
        controller.stop()
