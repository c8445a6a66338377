"""The SMTP "test connection" action: a real connect, EHLO, STARTTLS or SSL, and login.

Runs stdlib smtplib in a worker thread. The answer is a coded Spanish result; the password is
never part of it (server replies are echoed only after the password is scrubbed from them).
"""

import asyncio
import smtplib
import socket
import ssl
from dataclasses import dataclass, field


@dataclass
class SmtpTarget:
    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str | None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0


@dataclass
class ProbeResult:
    ok: bool
    code: str
    message: str


def _reply(exc: smtplib.SMTPResponseException, secret: str | None) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    if secret:
        text = text.replace(secret, "****")
    return f"{exc.smtp_code} {text}".strip()[:200]


def probe(target: SmtpTarget) -> ProbeResult:
    context = ssl.create_default_context()
    try:
        if target.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=target.timeout, context=context)
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=target.timeout)
    except (socket.gaierror, UnicodeError):
        return ProbeResult(False, "TIMBRA_SMTP_HOST_UNKNOWN", f"No se encontró el servidor SMTP {target.host}.")
    except ssl.SSLError:
        return ProbeResult(False, "TIMBRA_SMTP_TLS_FAILED", f"No se pudo establecer SSL con {target.host}:{target.port}; revisa el puerto (465 para SSL) y el certificado del servidor.")
    except (TimeoutError, socket.timeout):
        return ProbeResult(False, "TIMBRA_SMTP_TIMEOUT", f"El servidor SMTP {target.host}:{target.port} no respondió a tiempo.")
    except (OSError, smtplib.SMTPException):
        return ProbeResult(False, "TIMBRA_SMTP_CONNECT_FAILED", f"No se pudo conectar al servidor SMTP {target.host}:{target.port}.")
    try:
        with client:
            client.ehlo()
            if target.security == "starttls":
                if not client.has_extn("starttls"):
                    return ProbeResult(False, "TIMBRA_SMTP_STARTTLS_UNSUPPORTED", "El servidor SMTP no ofrece STARTTLS; elige SSL o ninguna seguridad según tu proveedor.")
                client.starttls(context=context)
                client.ehlo()
            if target.username:
                if not client.has_extn("auth"):
                    return ProbeResult(False, "TIMBRA_SMTP_AUTH_UNSUPPORTED", "El servidor SMTP no ofrece autenticación en esta conexión; prueba con STARTTLS o SSL.")
                client.login(target.username, target.password or "")
            client.noop()
    except smtplib.SMTPAuthenticationError as exc:
        return ProbeResult(False, "TIMBRA_SMTP_AUTH_FAILED", f"El servidor SMTP rechazó el usuario o la contraseña ({_reply(exc, target.password)}).")
    except ssl.SSLError:
        return ProbeResult(False, "TIMBRA_SMTP_TLS_FAILED", "No se pudo establecer la conexión segura (TLS) con el servidor SMTP.")
    except smtplib.SMTPResponseException as exc:
        return ProbeResult(False, "TIMBRA_SMTP_REJECTED", f"El servidor SMTP respondió con un error ({_reply(exc, target.password)}).")
    except (TimeoutError, socket.timeout):
        return ProbeResult(False, "TIMBRA_SMTP_TIMEOUT", "El servidor SMTP dejó de responder.")
    except (OSError, smtplib.SMTPException):
        return ProbeResult(False, "TIMBRA_SMTP_CONNECT_FAILED", "Se perdió la conexión con el servidor SMTP.")
    return ProbeResult(True, "ok", f"Conexión exitosa con {target.host}:{target.port}" + (" y usuario aceptado." if target.username else "."))


async def probe_async(target: SmtpTarget) -> ProbeResult:
    return await asyncio.to_thread(probe, target)
