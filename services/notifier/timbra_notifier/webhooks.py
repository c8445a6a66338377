"""Webhooks (use cases): endpoints, fan-out of platform events, and the delivery worker.

Delivery: every event an endpoint subscribes to becomes one ``webhook_deliveries`` document
(``_id = <endpoint>:<event id>``, so a redelivered source event adds nothing). A background worker
in every notifier instance claims due deliveries with a lease, POSTs the signed body, and records
the attempt; failures are retried on an exponential schedule for up to 24 h. The worker never has
more than ``per_endpoint`` requests in flight to one endpoint and ``concurrency`` in all, and each
request has a timeout, so a slow or dead endpoint only delays its own deliveries.
"""

import asyncio
import json
import os
import socket
import time
from collections import defaultdict
from datetime import datetime
from typing import Any, Protocol

import httpx

from timbra_notifier.domain import webhooks as rules
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger

log = get_logger(__name__)

USER_AGENT = "Timbra-Webhooks/1"
MAX_ENDPOINTS = 20


class WebhookInvalid(ValueError):
    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


class Sender(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str, float]: ...


class HttpSender:
    """POST with httpx; answers (status or None on a network error, a short excerpt, seconds)."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(follow_redirects=False, limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=4.0))

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str, float]:
        started = time.monotonic()
        try:
            response = await asyncio.wait_for(self.http.post(url, content=body, headers=headers, timeout=timeout), timeout + 1)
        except (httpx.HTTPError, asyncio.TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - started
        return response.status_code, response.text[:300], time.monotonic() - started


def public_endpoint(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"], "url": doc["url"], "events": doc["events"], "description": doc.get("description"),
        "enabled": doc.get("enabled", True), "created_at": doc.get("created_at"), "updated_at": doc.get("updated_at"),
    }


def public_delivery(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"], "endpoint_id": doc["endpoint_id"], "event_id": doc["event_id"], "type": doc["type"],
        "state": doc["state"], "attempts": doc.get("attempts", 0), "next_at": doc.get("next_at") if doc["state"] == "pending" else None,
        "created_at": doc.get("created_at"), "finished_at": doc.get("finished_at"), "replay_of": doc.get("replay_of"),
        "log": doc.get("log", []),
    }


def _validate(url: str | None, events: list[str] | None) -> None:
    if url is not None:
        if not (url.startswith("https://") or url.startswith("http://")) or len(url) > 2000:
            raise WebhookInvalid("TIMBRA_WEBHOOK_URL_INVALID", "La URL del webhook debe empezar con https:// (o http:// en pruebas).", "url")
    if events is not None:
        unknown = sorted(set(events) - set(rules.EVENT_TYPES))
        if not events or unknown:
            raise WebhookInvalid("TIMBRA_WEBHOOK_EVENTS_INVALID", f"Tipos de evento desconocidos o vacíos: {', '.join(unknown) or '(ninguno)'}. Disponibles: {', '.join(rules.EVENT_TYPES)}.", "events")


class WebhookService:
    def __init__(self, repo: Any, sender: Sender, *, retry_base_s: float = 5.0, retry_window_s: float = 86400.0, timeout_s: float = 10.0,
                 concurrency: int = 32, per_endpoint: int = 2, poll_s: float = 0.5, lease_s: float | None = None) -> None:
        self.repo = repo
        self.sender = sender
        self.retry_base_s = retry_base_s
        self.retry_window_s = retry_window_s
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.poll_s = poll_s
        self.lease_s = lease_s or timeout_s * 3 + 5
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()}"
        self._in_flight: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ endpoints

    async def create_endpoint(self, issuer_id: str, url: str, events: list[str], description: str | None) -> dict[str, Any]:
        _validate(url, events)
        if await self.repo.count_endpoints(issuer_id) >= MAX_ENDPOINTS:
            raise WebhookInvalid("TIMBRA_WEBHOOK_LIMIT", f"Un emisor puede registrar hasta {MAX_ENDPOINTS} webhooks.")
        doc = {"_id": new_id("we_"), "issuer_id": issuer_id, "url": url, "events": sorted(set(events)), "description": description,
               "enabled": True, "secret": rules.new_secret(), "created_at": utcnow()}
        await self.repo.insert_endpoint(doc)
        return {**public_endpoint(doc), "secret": doc["secret"]}  # the only time the secret is shown

    async def update_endpoint(self, issuer_id: str, endpoint_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        _validate(fields.get("url"), fields.get("events"))
        if "events" in fields:
            fields["events"] = sorted(set(fields["events"]))
        doc = await self.repo.update_endpoint(endpoint_id, issuer_id, fields)
        return public_endpoint(doc) if doc else None

    async def roll_secret(self, issuer_id: str, endpoint_id: str) -> dict[str, Any] | None:
        doc = await self.repo.update_endpoint(endpoint_id, issuer_id, {"secret": rules.new_secret()})
        return {**public_endpoint(doc), "secret": doc["secret"]} if doc else None

    # ------------------------------------------------------------------ fan-out

    async def publish(self, issuer_id: str, event_type: str, source_event_id: str, data: dict[str, Any], occurred_at: datetime | None = None) -> int:
        """One delivery per subscribed endpoint; the event id derives from the source event's, so
        a redelivered or redriven source event is delivered once."""
        endpoints = await self.repo.subscribed(issuer_id, event_type)
        if not endpoints:
            return 0
        event_id = f"evt_{source_event_id}"
        body = json.dumps({"id": event_id, "type": event_type, "created_at": (occurred_at or utcnow()).isoformat(), "issuer_id": issuer_id, "data": data},
                          ensure_ascii=False, separators=(",", ":"), default=str)
        now = utcnow()
        added = 0
        for endpoint in endpoints:
            added += await self.repo.insert_delivery({
                "_id": f"{endpoint['_id']}:{event_id}", "endpoint_id": endpoint["_id"], "issuer_id": issuer_id, "event_id": event_id,
                "type": event_type, "body": body, "state": "pending", "attempts": 0, "created_at": now, "first_at": now, "next_at": now,
                "lease_until": None, "log": [],
            })
        if added:
            self._wake.set()
        return added

    async def replay(self, issuer_id: str, delivery_id: str) -> dict[str, Any] | None:
        """Send an event again to the same endpoint (same event id, so the receiver can dedupe), as a new delivery."""
        original = await self.repo.delivery(delivery_id, issuer_id)
        if original is None or await self.repo.endpoint(original["endpoint_id"], issuer_id) is None:
            return None
        now = utcnow()
        doc = {"_id": f"{original['endpoint_id']}:{original['event_id']}:replay:{new_id()}", "endpoint_id": original["endpoint_id"], "issuer_id": issuer_id,
               "event_id": original["event_id"], "type": original["type"], "body": original["body"], "state": "pending", "attempts": 0,
               "created_at": now, "first_at": now, "next_at": now, "lease_until": None, "log": [], "replay_of": original["_id"]}
        await self.repo.insert_delivery(doc)
        self._wake.set()
        return public_delivery(doc)

    # ------------------------------------------------------------------ the worker

    async def deliver_due(self) -> int:
        """Start every due delivery this instance may send now; returns how many it started."""
        started = 0
        while len(self._tasks) < self.concurrency:
            busy = [e for e, n in self._in_flight.items() if n >= self.per_endpoint]
            claimed = await self.repo.claim_due(utcnow(), busy, self.lease_s, self.owner)
            if claimed is None:
                break
            self._in_flight[claimed["endpoint_id"]] += 1
            task = asyncio.create_task(self._deliver(claimed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception as exc:  # MongoDB hiccup: keep the worker alive
                log.warning("webhooks.worker_failed", error=repr(exc)[:300])
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except asyncio.TimeoutError:
                pass

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        endpoint_id = delivery["endpoint_id"]
        try:
            endpoint = await self.repo.endpoint(endpoint_id)
            now = utcnow()
            if endpoint is None or not endpoint.get("enabled", True) or not endpoint.get("secret"):
                await self.repo.record_attempt(delivery["_id"], self.owner, {"at": now, "status": None, "error": "endpoint eliminado o deshabilitado"},
                                               {"state": "cancelled", "finished_at": now})
                return
            body = delivery["body"].encode()
            headers = {
                "content-type": "application/json", "user-agent": USER_AGENT,
                rules.SIGNATURE_HEADER: rules.sign(endpoint["secret"], body),
                "Timbra-Event-Id": delivery["event_id"], "Timbra-Event-Type": delivery["type"],
                "Timbra-Delivery-Id": delivery["_id"], "Timbra-Attempt": str(delivery.get("attempts", 0) + 1),
            }
            status, excerpt, seconds = await self.sender.post(endpoint["url"], body, headers, self.timeout_s)
            now = utcnow()
            attempt = {"at": now, "status": status, "ms": round(seconds * 1000), "response": excerpt}
            if status is not None and 200 <= status < 300:
                await self.repo.record_attempt(delivery["_id"], self.owner, attempt, {"state": "succeeded", "finished_at": now})
                return
            attempts = delivery.get("attempts", 0) + 1
            retry_at = rules.next_attempt(delivery["first_at"], attempts, now, base_s=self.retry_base_s, window_s=self.retry_window_s) if (status is None or rules.retryable_status(status)) else None
            if retry_at is None:
                await self.repo.record_attempt(delivery["_id"], self.owner, attempt, {"state": "failed", "finished_at": now})
                log.warning("webhooks.gave_up", endpoint_id=endpoint_id, delivery_id=delivery["_id"], status=status)
            else:
                await self.repo.record_attempt(delivery["_id"], self.owner, attempt, {"next_at": retry_at})
        except Exception as exc:  # the lease expires and another pass retries it
            log.warning("webhooks.delivery_crashed", delivery_id=delivery["_id"], error=repr(exc)[:300])
        finally:
            self._in_flight[endpoint_id] -= 1
            if self._in_flight[endpoint_id] <= 0:
                self._in_flight.pop(endpoint_id, None)
            self._wake.set()
