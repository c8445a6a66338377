"""Webhook rules: event types, signatures, the retry schedule."""

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from timbra_shared import topics

INVOICE_STATUS = "invoice.status_changed"
CANCELLATION_STATUS = "invoice.cancellation_status_changed"
CREDITS_LOW = "credits.low"
CSD_EXPIRING = "csd.expiring"
PAYMENT_CONFIRMED = "billing.payment_confirmed"
EVENT_TYPES = {
    INVOICE_STATUS: "cada cambio de estado de una factura (requested … emailed, rejected, stamp_failed)",
    CANCELLATION_STATUS: "cada cambio del estado de cancelación de una factura",
    CREDITS_LOW: "saldo de timbres bajo o agotado",
    CSD_EXPIRING: "el certificado de sello digital (CSD) está por vencer o venció",
    PAYMENT_CONFIRMED: "se acreditó el pago de un paquete de timbres",
}
NOTIFICATION_TYPES = {
    "billing.low_balance": CREDITS_LOW,
    "billing.zero_balance": CREDITS_LOW,
    "csd.expiring": CSD_EXPIRING,
    "csd.expired": CSD_EXPIRING,
    "billing.payment_confirmed": PAYMENT_CONFIRMED,
}
STATUS_OF_TOPIC = {
    topics.INVOICE_REQUESTED: "requested",
    topics.INVOICE_BUILT: "built",
    topics.INVOICE_SEALED: "sealed",
    topics.INVOICE_FUNDED: "funded",
    topics.INVOICE_REJECTED: "rejected",
    topics.INVOICE_STAMPED: "stamped",
    topics.INVOICE_STAMP_FAILED: "stamp_failed",
    topics.INVOICE_RENDERED: "rendered",
    topics.INVOICE_EMAILED: "emailed",
}
CANCELLATION_OF_TOPIC = {
    topics.CANCELLATION_REQUESTED: "requested",
    topics.CANCELLATION_PENDING: "pending",
    topics.CANCELLATION_ACCEPTED: "accepted",
    topics.CANCELLATION_REJECTED: "rejected",
    topics.CANCELLATION_COMPLETED: "completed",
}
SIGNATURE_HEADER = "Timbra-Signature"
TOLERANCE_S = 300


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: float = TOLERANCE_S) -> bool:
    """What a receiver does (documented in docs/notifier.md; used by the tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, value) for key, value in (item.split("=", 1) for item in header.split(",")) if key == "v1")


def next_attempt(first_at: datetime, attempts: int, now: datetime, *, base_s: float, window_s: float, factor: float = 3.0) -> datetime | None:
    """When to try again after ``attempts`` failed tries, or None when the window is over.

    Exponential: base, base×3, base×9… (5 s, 15 s, 45 s, 2¼ min … 9 h with the defaults); the
    last try lands at the end of the window rather than after it."""
    deadline = first_at + timedelta(seconds=window_s)
    if now >= deadline:
        return None
    delay = timedelta(seconds=base_s * factor ** (attempts - 1))
    return min(now + delay, deadline)


def retryable_status(status: int) -> bool:
    """Every non-2xx answer is retried (the receiver may be mid-deploy), except 410 Gone."""
    return status != 410


def invoice_status_data(event: Any) -> dict[str, Any]:
    """The ``data`` of an invoice.status_changed delivery: never the XML, never a secret."""
    data: dict[str, Any] = {"invoice_id": event.invoice_id, "status": STATUS_OF_TOPIC[event.event_type], "occurred_at": event.occurred_at.isoformat()}
    summary = getattr(event, "summary", None)
    if summary is not None:
        data.update(serie=summary.serie, folio=summary.folio, total=str(summary.total), currency=summary.currency,
                    rfc_receptor=summary.rfc_receptor, customer_id=summary.customer_id)
    for name in ("uuid", "fecha_timbrado", "message", "stage"):
        if getattr(event, name, None):
            data[name] = getattr(event, name)
    if getattr(event, "errors", None):
        data["errors"] = [e.model_dump() for e in event.errors]
    if event.event_type == topics.INVOICE_EMAILED:
        data["email"] = {"recipients": event.recipients, "message_id": event.message_id, "error": event.skipped_reason}
    return data


def cancellation_data(topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in payload.items() if k not in {"event_id", "event_type", "schema_version", "xml", "acuse", "password"}}
    data["cancellation_status"] = CANCELLATION_OF_TOPIC[topic]
    return data
