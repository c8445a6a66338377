"""SMTP delivery (stdlib smtplib in a worker thread)."""

import asyncio
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage


@dataclass
class SmtpConfig:
    host: str
    port: int
    sender: str
    sender_name: str = "Timbra"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: str = "none"  # none | starttls | ssl
    timeout: float = 15.0


class PermanentMailError(Exception):
    pass


class SmtpMailer:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def _send(self, message: EmailMessage) -> None:
        cfg = self.config
        try:
            if cfg.security == "ssl":
                client: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            with client:
                if cfg.security == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if cfg.username:
                    client.login(cfg.username, cfg.password or "")
                client.send_message(message)
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPRecipientsRefused) as exc:
            raise PermanentMailError(f"El servidor de correo rechazó el envío: {exc.__class__.__name__}") from None

    async def send(self, message: EmailMessage) -> None:
        if "From" not in message:
            message["From"] = f"{self.config.sender_name} <{self.config.sender}>"
        await asyncio.to_thread(self._send, message)
