"""``SmtpMailer`` against real servers on loopback. The SMTP sink: a server that postpones (4xx)
one recipient and rejects (5xx) another at RCPT still delivers to the rest, and the mailer reports
each refusal with the server's reply, which is what the follow-up delivery of postponed recipients
reads. A bare server that hangs up at QUIT: the message it took counts as sent."""

import asyncio
import contextlib
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from timbra_notifier.adapters.mailer import SmtpConfig, SmtpMailer, TransientMailError
from timbra_notifier.service import postponed
from timbra_shared.devstack import smtp_sink

pytestmark = pytest.mark.integration


def _message(to: str) -> EmailMessage:
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = "Factura F1"
    message["Message-ID"] = "<inv_1@timbra.local>"
    message.set_content("Adjuntamos su factura.")
    return message


async def test_postponed_and_rejected_recipients_are_reported_and_the_rest_delivered(tmp_path: Path) -> None:
    async with smtp_sink.running(tmp_path) as (_supervisor, smtp_port, web):
        mailer = SmtpMailer(SmtpConfig("127.0.0.1", smtp_port, "facturas@timbra.local"))
        refused = await mailer.send(_message("cliente@example.com, postpone-1@example.com, rejected@example.com"))
        assert set(refused) == {"postpone-1@example.com", "rejected@example.com"}
        assert refused["postpone-1@example.com"].startswith("450 4.2.1")
        assert refused["rejected@example.com"].startswith("550 5.1.1")
        assert postponed(refused) == ["postpone-1@example.com"]

        with pytest.raises(TransientMailError, match="450 4.2.1"):  # nobody accepted, only postponed: the whole send is retried
            await mailer.send(_message("postpone-2@example.com"))

        async with httpx.AsyncClient(base_url=web, timeout=10) as http:
            (stored,) = (await http.get("/api/messages")).json()
        assert stored["to"] == ["cliente@example.com"]


async def _hangs_up_at_quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, taken: list[bytes], quit_reply: bytes | None) -> None:
    writer.write(b"220 test ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            body = b""
            while (chunk := await reader.readline()) != b".\r\n":
                body += chunk
            taken.append(body)
            writer.write(b"250 2.0.0 queued\r\n")
        elif verb == b"QUIT":
            if quit_reply:
                writer.write(quit_reply)
                await writer.drain()
            break
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("quit_reply", [None, b"421 4.3.0 closing badly\r\n"], ids=["hang-up", "421"])
async def test_a_message_the_server_took_is_sent_even_if_the_goodbye_fails(quit_reply: bytes | None) -> None:
    taken: list[bytes] = []
    server = await asyncio.start_server(lambda r, w: _hangs_up_at_quit(r, w, taken, quit_reply), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        refused = await SmtpMailer(SmtpConfig("127.0.0.1", port, "facturas@timbra.local")).send(_message("cliente@example.com"))
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
    assert refused == {}
    assert len(taken) == 1 and b"Factura F1" in taken[0]
