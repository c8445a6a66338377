"""A local SMTP sink: a real SMTP server that keeps every message, plus a web/JSON view.

    python -m timbra_shared.devstack.smtp_sink

SMTP on 127.0.0.1:$TIMBRA_SMTP_PORT (1025), accepting any AUTH PLAIN/LOGIN credentials
without TLS.  Messages are kept in memory and as .eml files under
$TIMBRA_DATA_DIR/mail (reloaded on start).  HTTP on 127.0.0.1:$TIMBRA_SMTP_WEB_PORT (8025):

    GET    /healthz
    GET    /api/messages                  [{id, from, to, subject, message_id, date, attachments:[...]}]
           ?to=<substring>&subject=<substring>&limit=<n>
    GET    /api/messages/{id}             the summary plus text, html and headers
    GET    /api/messages/{id}/raw         the message as received (message/rfc822)
    GET    /api/messages/{id}/attachments/{n}
    DELETE /api/messages                  forget every message (and delete the .eml files)
    DELETE /api/messages/{id}
    GET    /                              a simple HTML list

Addresses for failure tests, answered at RCPT like a real server: a local part starting with
``postpone`` gets ``450 4.2.1`` (temporary: mailbox busy, greylisting), one starting with
``reject`` gets ``550 5.1.1`` (no such user). The other recipients of the message still get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import html
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import HTMLResponse

log = logging.getLogger("timbra.smtp_sink")

HOST = "127.0.0.1"


@dataclass
class StoredMessage:
    id: str
    raw: bytes
    mail_from: str
    rcpt_tos: list[str]
    received_at: str
    auth_user: str | None = None
    path: Path | None = None
    _parsed: EmailMessage | None = field(default=None, repr=False)

    @property
    def parsed(self) -> EmailMessage:
        if self._parsed is None:
            self._parsed = email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[assignment]
        return self._parsed  # type: ignore[return-value]

    def attachment_parts(self) -> list[EmailMessage]:
        parts = []
        for part in self.parsed.walk():
            if part.is_multipart():
                continue
            disposition = part.get_content_disposition()
            if disposition == "attachment" or part.get_filename():
                parts.append(part)
        return parts

    def summary(self) -> dict[str, Any]:
        msg = self.parsed
        attachments = []
        for part in self.attachment_parts():
            payload = part.get_payload(decode=True) or b""
            attachments.append(
                {"filename": part.get_filename(), "content_type": part.get_content_type(), "size": len(payload)}
            )
        return {
            "id": self.id,
            "from": str(msg.get("From", "")) or self.mail_from,
            "to": list(self.rcpt_tos),
            "header_to": str(msg.get("To", "")),
            "cc": str(msg.get("Cc", "")),
            "subject": str(msg.get("Subject", "")),
            "message_id": str(msg.get("Message-ID", "")),
            "date": str(msg.get("Date", "")),
            "received_at": self.received_at,
            "envelope_from": self.mail_from,
            "auth_user": self.auth_user,
            "size": len(self.raw),
            "attachments": attachments,
        }

    def detail(self) -> dict[str, Any]:
        msg = self.parsed
        out = self.summary()
        text = msg.get_body(preferencelist=("plain",))
        body_html = msg.get_body(preferencelist=("html",))
        out["text"] = _content(text)
        out["html"] = _content(body_html)
        out["headers"] = [[k, str(v)] for k, v in msg.items()]
        return out


def _content(part: EmailMessage | None) -> str | None:
    if part is None:
        return None
    try:
        return part.get_content()
    except (LookupError, KeyError, ValueError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


class MailStore:
    """Messages in arrival order, mirrored to ``<mail_dir>/<received>_<id>.eml``."""

    _FILE = re.compile(r"^(?P<ts>\d+)_(?P<id>[A-Za-z0-9]+)\.eml$")

    def __init__(self, mail_dir: Path | None) -> None:
        self.mail_dir = mail_dir
        self.messages: dict[str, StoredMessage] = {}
        if mail_dir is not None:
            mail_dir.mkdir(parents=True, exist_ok=True)
            self._load()

    def _load(self) -> None:
        assert self.mail_dir is not None
        for path in sorted(self.mail_dir.glob("*.eml")):
            m = self._FILE.match(path.name)
            if not m:
                continue
            raw = path.read_bytes()
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            rcpts = [r.strip() for r in str(parsed.get("X-Sink-Rcpt-To", "")).split(",") if r.strip()]
            received = datetime.fromtimestamp(int(m["ts"]) / 1e6, timezone.utc).isoformat()
            self.messages[m["id"]] = StoredMessage(
                id=m["id"], raw=_strip_sink_headers(raw), mail_from=str(parsed.get("X-Sink-Mail-From", "")),
                rcpt_tos=rcpts, received_at=received, path=path,
                auth_user=str(parsed.get("X-Sink-Auth-User", "")) or None,
            )

    def add(self, raw: bytes, mail_from: str, rcpt_tos: list[str], auth_user: str | None) -> StoredMessage:
        now_us = time.time_ns() // 1000
        msg_id = secrets.token_hex(8)
        stored = StoredMessage(
            id=msg_id, raw=raw, mail_from=mail_from, rcpt_tos=list(rcpt_tos),
            received_at=datetime.fromtimestamp(now_us / 1e6, timezone.utc).isoformat(), auth_user=auth_user,
        )
        if self.mail_dir is not None:
            # envelope data travels in leading X-Sink-* headers of the stored file
            extra = (
                f"X-Sink-Mail-From: {mail_from}\r\nX-Sink-Rcpt-To: {', '.join(rcpt_tos)}\r\n"
                + (f"X-Sink-Auth-User: {auth_user}\r\n" if auth_user else "")
            ).encode("utf-8", "replace")
            path = self.mail_dir / f"{now_us:020d}_{msg_id}.eml"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(extra + raw)
            os.replace(tmp, path)
            stored.path = path
        self.messages[msg_id] = stored
        return stored

    def get(self, msg_id: str) -> StoredMessage:
        try:
            return self.messages[msg_id]
        except KeyError:
            raise HTTPException(404, f"no message {msg_id}") from None

    def delete(self, msg_id: str) -> None:
        stored = self.get(msg_id)
        if stored.path is not None:
            stored.path.unlink(missing_ok=True)
        del self.messages[msg_id]

    def clear(self) -> int:
        n = len(self.messages)
        for msg_id in list(self.messages):
            self.delete(msg_id)
        return n


def _strip_sink_headers(raw: bytes) -> bytes:
    while raw.startswith(b"X-Sink-"):
        end = raw.find(b"\n")
        if end < 0:
            break
        raw = raw[end + 1 :]
    return raw


POSTPONED = "450 4.2.1 Mailbox busy, try again later"
REJECTED = "550 5.1.1 No such user here"


class SinkHandler:
    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("postpone"):
            return POSTPONED
        if local.startswith("reject"):
            return REJECTED
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        auth_user = None
        login = getattr(session.auth_data, "login", None) if session.authenticated else None
        if isinstance(login, (bytes, str)):
            auth_user = login.decode("utf-8", "replace") if isinstance(login, bytes) else login
        stored = self.store.add(raw, envelope.mail_from or "", list(envelope.rcpt_tos), auth_user)
        log.info("stored message %s from %s to %s", stored.id, envelope.mail_from, envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def _accept_any(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    return AuthResult(success=True, handled=False, auth_data=auth_data)


def create_app(store: MailStore) -> FastAPI:
    app = FastAPI(title="Timbra SMTP sink", docs_url="/docs", redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True, "messages": len(store.messages)}

    @app.get("/api/messages")
    async def list_messages(to: str | None = None, subject: str | None = None, limit: int | None = None) -> list[dict]:
        out = []
        for m in store.messages.values():
            s = m.summary()
            if to and not any(to.lower() in r.lower() for r in [*s["to"], s["header_to"]]):
                continue
            if subject and subject.lower() not in s["subject"].lower():
                continue
            out.append(s)
        return out[-limit:] if limit else out

    @app.get("/api/messages/{msg_id}")
    async def get_message(msg_id: str) -> dict:
        return store.get(msg_id).detail()

    @app.get("/api/messages/{msg_id}/raw")
    async def raw_message(msg_id: str) -> Response:
        return Response(store.get(msg_id).raw, media_type="message/rfc822")

    @app.get("/api/messages/{msg_id}/attachments/{n}")
    async def attachment(msg_id: str, n: int) -> Response:
        parts = store.get(msg_id).attachment_parts()
        if not 0 <= n < len(parts):
            raise HTTPException(404, f"message {msg_id} has no attachment {n}")
        part = parts[n]
        filename = part.get_filename() or f"attachment-{n}"
        return Response(
            part.get_payload(decode=True) or b"",
            media_type=part.get_content_type(),
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.delete("/api/messages")
    async def clear() -> dict:
        return {"deleted": store.clear()}

    @app.delete("/api/messages/{msg_id}")
    async def delete_one(msg_id: str) -> dict:
        store.delete(msg_id)
        return {"deleted": 1}

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        rows = []
        for m in reversed(list(store.messages.values())):
            s = m.summary()
            atts = " ".join(
                f'<a href="/api/messages/{s["id"]}/attachments/{i}">{html.escape(a["filename"] or "?")}</a>'
                for i, a in enumerate(s["attachments"])
            )
            rows.append(
                "<tr>"
                f"<td>{html.escape(s['received_at'][:19])}</td>"
                f"<td>{html.escape(s['from'])}</td>"
                f"<td>{html.escape(', '.join(s['to']))}</td>"
                f"<td><a href=\"/api/messages/{s['id']}\">{html.escape(s['subject'] or '(sin asunto)')}</a></td>"
                f"<td>{atts}</td>"
                f"<td><a href=\"/api/messages/{s['id']}/raw\">.eml</a></td>"
                "</tr>"
            )
        body = "\n".join(rows) or '<tr><td colspan="6">Sin mensajes.</td></tr>'
        return (
            "<!doctype html><html lang=\"es\"><head><meta charset=\"utf-8\"><title>Timbra SMTP sink</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse;width:100%}"
            "td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;font-size:.9rem}</style></head><body>"
            f"<h1>Correos recibidos ({len(store.messages)})</h1>"
            "<p>JSON: <a href=\"/api/messages\">/api/messages</a></p>"
            "<table><tr><th>Recibido</th><th>De</th><th>Para</th><th>Asunto</th><th>Adjuntos</th><th></th></tr>"
            f"{body}</table></body></html>"
        )

    return app


async def serve(smtp_port: int, web_port: int, mail_dir: Path | None, host: str = HOST) -> None:
    import uvicorn

    store = MailStore(mail_dir)
    loop = asyncio.get_running_loop()
    handler = SinkHandler(store)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="timbra-smtp-sink",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=_accept_any,
            loop=loop,
        )

    smtp_server = await loop.create_server(factory, host=host, port=smtp_port)
    log.info("SMTP sink on %s:%s, web on http://%s:%s, mail dir %s", host, smtp_port, host, web_port, mail_dir)
    config = uvicorn.Config(create_app(store), host=host, port=web_port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        smtp_server.close()
        await smtp_server.wait_closed()


@contextlib.asynccontextmanager
async def running(folder: Path) -> AsyncIterator[tuple[Any, int, str]]:
    """A sink in a child process on free ports, for tests: yields (its Supervisor, SMTP port, web URL)."""
    import sys

    from timbra_shared.devstack.servers import free_port
    from timbra_shared.devstack.supervisor import Supervisor

    smtp_port, web_port = free_port(), free_port()
    supervisor = Supervisor(folder / "logs", grace=5)
    env = {"TIMBRA_SMTP_PORT": str(smtp_port), "TIMBRA_SMTP_WEB_PORT": str(web_port), "TIMBRA_DATA_DIR": str(folder)}
    supervisor.start("smtp-sink", [sys.executable, "-m", "timbra_shared.devstack.smtp_sink"], env, health_url=f"http://{HOST}:{web_port}/healthz")
    try:
        await supervisor.wait_healthy("smtp-sink", 30)
        yield supervisor, smtp_port, f"http://{HOST}:{web_port}"
    finally:
        supervisor.stop_all()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    smtp_port = int(os.environ.get("TIMBRA_SMTP_PORT") or 1025)
    web_port = int(os.environ.get("TIMBRA_SMTP_WEB_PORT") or 8025)
    data_dir = os.environ.get("TIMBRA_DATA_DIR")
    mail_dir = Path(os.environ.get("TIMBRA_SMTP_MAIL_DIR") or (Path(data_dir) / "mail" if data_dir else ".data/mail"))
    asyncio.run(serve(smtp_port, web_port, mail_dir, host=os.environ.get("TIMBRA_HTTP_HOST", HOST)))


if __name__ == "__main__":
    main()
