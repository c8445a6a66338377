"""SMTP delivery (stdlib smtplib in a worker thread), with the platform's or the issuer's settings.

Errors are classified for the service: :class:`PermanentMailError` (bad address, authentication
refused, a 5xx answer: retrying cannot help) or :class:`TransientMailError` (4xx answers, refused
or dropped connections, timeouts). Both carry the server's reply with the password scrubbed.
"""

import asyncio
import base64
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr


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
    source: str = "platform"  # platform | issuer

    @classmethod
    def from_issuer(cls, settings: dict, timeout: float = 15.0) -> "SmtpConfig":
        return cls(
            host=settings["host"], port=int(settings["port"]), sender=settings["address"],
            sender_name=settings.get("sender_name") or settings["address"], username=settings.get("username") or None,
            password=settings.get("password") or None, security=settings.get("security") or "starttls", timeout=timeout, source="issuer",
        )


class MailError(Exception):
    pass


class PermanentMailError(MailError):
    pass


class TransientMailError(MailError):
    pass


def scrub(text: str, secret: str | None) -> str:
    """Remove the password, and the base64 forms an AUTH exchange could echo, from ``text``."""
    if not secret:
        return text
    for form in {secret, base64.b64encode(secret.encode()).decode()}:
        text = text.replace(form, "********")
    return text


def _reply(exc: BaseException) -> str:
    code = getattr(exc, "smtp_code", None)
    error = getattr(exc, "smtp_error", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{rcpt}: {c} {e.decode(errors='replace') if isinstance(e, bytes) else e}" for rcpt, (c, e) in exc.recipients.items()]
        return "; ".join(parts)
    if code is not None:
        return f"{code} {error.decode(errors='replace') if isinstance(error, bytes) else error}".strip()
    return f"{type(exc).__name__}: {exc}"


def classify(exc: BaseException, password: str | None) -> MailError:
    reply = scrub(_reply(exc), password)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return PermanentMailError(f"El servidor de correo rechazó la autenticación: {reply}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        if all(400 <= c < 500 for c in codes):
            return TransientMailError(f"El servidor de correo pospuso los destinatarios: {reply}")
        return PermanentMailError(f"El servidor de correo rechazó los destinatarios: {reply}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentMailError(f"El servidor de correo no admite la seguridad configurada: {reply}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentMailError(f"El certificado TLS del servidor de correo no es válido: {scrub(str(exc), password)}")
    code = getattr(exc, "smtp_code", None)
    if isinstance(code, int) and 500 <= code < 600:
        return PermanentMailError(f"El servidor de correo rechazó el envío: {reply}")
    if isinstance(exc, (smtplib.SMTPException, OSError, socket.timeout, TimeoutError)):
        return TransientMailError(f"No se pudo entregar el correo por ahora: {reply}")
    return TransientMailError(f"No se pudo entregar el correo por ahora: {reply}")


def _quit_quietly(client: smtplib.SMTP) -> None:
    """The server has taken the message: a failed goodbye must not turn it into a retry (a second email)."""
    try:
        client.quit()
    except Exception:  # noqa: BLE001
        client.close()


class SmtpMailer:
    """``send(message, config)``; ``config`` defaults to the platform sender."""

    def __init__(self, config: SmtpConfig, *, tls_context: Callable[[], ssl.SSLContext] = ssl.create_default_context) -> None:
        self.config = config
        self.tls_context = tls_context

    def _send(self, message: EmailMessage, cfg: SmtpConfig) -> dict:
        try:
            if cfg.security == "ssl":
                client: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=self.tls_context())
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is classified, with the password scrubbed
            raise classify(exc, cfg.password) from None
        try:
            if cfg.security == "starttls":
                client.starttls(context=self.tls_context())
            if cfg.username:
                client.login(cfg.username, cfg.password or "")
            refused = client.send_message(message)
        except Exception as exc:  # noqa: BLE001
            client.close()
            raise classify(exc, cfg.password) from None
        _quit_quietly(client)
        return {rcpt: f"{c} {e.decode(errors='replace') if isinstance(e, bytes) else e}" for rcpt, (c, e) in (refused or {}).items()}

    async def send(self, message: EmailMessage, config: SmtpConfig | None = None) -> dict:
        """Deliver ``message``; returns the recipients the server refused (when others were accepted)."""
        cfg = config or self.config
        if "From" not in message:
            message["From"] = formataddr((cfg.sender_name, cfg.sender))
        return await asyncio.to_thread(self._send, message, cfg)
