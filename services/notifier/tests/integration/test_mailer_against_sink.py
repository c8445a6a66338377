"""``SmtpMailer`` against the real SMTP sink: a server that postpones (4xx) one recipient and
rejects (5xx) another at RCPT still delivers to the rest, and the mailer reports each refusal
with the server's reply, which is what the follow-up delivery of postponed recipients reads."""

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
