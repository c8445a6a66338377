"""The SMTP sink: a real SMTP conversation in, the message out over HTTP."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from timbra_shared.devstack import smtp_sink

pytestmark = pytest.mark.integration

XML = b'<?xml version="1.0" encoding="UTF-8"?><cfdi:Comprobante Version="4.0"/>'
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 8


@pytest.fixture
async def sink(tmp_path: Path):
    async with smtp_sink.running(tmp_path) as running:
        yield running


def _invoice_mail() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Facturación Timbra <facturas@emisor.example>"
    msg["To"] = "Cliente Ñandú <cliente@example.com>"
    msg["Subject"] = "Factura A-123 — CFDI 4.0"
    msg["Message-ID"] = "<inv-123@timbra.test>"
    msg.set_content("Adjuntamos su factura A-123.")
    msg.add_alternative("<p>Adjuntamos su factura <b>A-123</b>.</p>", subtype="html")
    msg.add_attachment(XML, maintype="application", subtype="xml", filename="A-123.xml")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="A-123.pdf")
    return msg


async def test_receives_mail_with_attachments_and_serves_it(sink, tmp_path: Path):
    sup, smtp_port, web = sink
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login("emisor@example.com", "any-password")
        smtp.send_message(_invoice_mail(), to_addrs=["cliente@example.com", "copia-oculta@example.com"])

    async with httpx.AsyncClient(base_url=web, timeout=10) as http:
        listing = (await http.get("/api/messages")).json()
        assert len(listing) == 1
        m = listing[0]
        assert m["subject"] == "Factura A-123 — CFDI 4.0"
        assert m["to"] == ["cliente@example.com", "copia-oculta@example.com"]
        assert "facturas@emisor.example" in m["from"]
        assert m["message_id"] == "<inv-123@timbra.test>"
        assert m["auth_user"] == "emisor@example.com"
        assert m["date"] == "" or isinstance(m["date"], str)
        assert m["attachments"] == [
            {"filename": "A-123.xml", "content_type": "application/xml", "size": len(XML)},
            {"filename": "A-123.pdf", "content_type": "application/pdf", "size": len(PDF)},
        ]

        detail = (await http.get(f"/api/messages/{m['id']}")).json()
        assert "Adjuntamos su factura A-123." in detail["text"]
        assert "<b>A-123</b>" in detail["html"]

        raw = await http.get(f"/api/messages/{m['id']}/raw")
        assert raw.status_code == 200 and b"Subject:" in raw.content

        pdf = await http.get(f"/api/messages/{m['id']}/attachments/1")
        assert pdf.content == PDF and pdf.headers["content-type"] == "application/pdf"
        assert (await http.get(f"/api/messages/{m['id']}/attachments/2")).status_code == 404
        assert (await http.get("/api/messages/nope")).status_code == 404

        assert (await http.get("/api/messages", params={"to": "copia-oculta"})).json()[0]["id"] == m["id"]
        assert (await http.get("/api/messages", params={"to": "otro@example.com"})).json() == []

        page = await http.get("/")
        assert "Factura A-123" in page.text

    eml = list((tmp_path / "mail").glob("*.eml"))
    assert len(eml) == 1

    # messages survive a restart of the sink
    sup.restart("smtp-sink")
    await sup.wait_healthy("smtp-sink", 30)
    async with httpx.AsyncClient(base_url=web, timeout=10) as http:
        again = (await http.get("/api/messages")).json()
        assert [x["id"] for x in again] == [m["id"]]
        assert again[0]["to"] == m["to"] and again[0]["attachments"] == m["attachments"]

        assert (await http.delete("/api/messages")).json() == {"deleted": 1}
        assert (await http.get("/api/messages")).json() == []
    assert list((tmp_path / "mail").glob("*.eml")) == []


async def test_accepts_mail_without_auth(sink):
    _, smtp_port, web = sink
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: hola\r\n\r\nsin auth\r\n")
    async with httpx.AsyncClient(base_url=web) as http:
        (msg,) = (await http.get("/api/messages")).json()
        assert msg["subject"] == "hola" and msg["auth_user"] is None and msg["attachments"] == []

