"""Driving cancellations on a running platform (the tests in tests/test_cancellation_*.py and
demos): stamped invoices, SAT's rules in the sandbox PAC, a consumer of the cancellation topics,
a loopback webhook receiver."""

import asyncio
import json
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from timbra_shared import topics
from timbra_shared.devstack import Platform
from timbra_shared.devstack.scenario import Issuer, TimbraClient, sample_invoice

TOPICS = (topics.CANCELLATION_REQUESTED, *topics.CANCELLATION_EVENT_TOPICS, topics.CANCELLATION_ESCALATED, topics.DEAD_LETTER)
EXPENSIVE = {"description": "Equipo de cómputo", "product_key": "43211503", "unit_key": "H87", "price": "5000.00", "taxes": [{"type": "IVA", "rate": "0.16"}]}


def random_rfc() -> str:
    """A well-formed persona-moral RFC no other test uses (the sandbox's rules are keyed by RFC)."""
    letters = "".join(random.choices(string.ascii_uppercase, k=3))
    homoclave = "".join(random.choices(string.ascii_uppercase + string.digits, k=2))
    return f"{letters}180429{homoclave}{random.choice(string.digits)}"


def customer(rfc: str, **overrides: Any) -> dict[str, Any]:
    return {"rfc": rfc, "legal_name": "COMERCIALIZADORA DE PRUEBA", "tax_regime": "601", "zip": "86991", "use": "G03", "email": "cliente@example.com", **overrides}


def invoice_body(rfc: str, *, expensive: bool = True, **overrides: Any) -> dict[str, Any]:
    """Over $1,000 (the receptor must accept) unless ``expensive`` is False ($232.00)."""
    body = sample_invoice(customer=customer(rfc))
    if expensive:
        body["items"] = [{"product": EXPENSIVE, "quantity": "1"}]
    body.update(overrides)
    return body


async def stamped(client: TimbraClient, issuer: Issuer, body: dict[str, Any], *, timeout: float = 90) -> dict[str, Any]:
    created = await client.create_invoice(issuer, body)
    assert created.status_code == 202, created.text
    invoice_id = created.json()["id"]
    state = (await client.wait_final(issuer, [invoice_id], timeout=timeout))[invoice_id]
    assert state["status"] == "emailed", state
    assert state["uuid"], state
    return state


async def wait_cancellation(client: TimbraClient, issuer: Issuer, invoice_id: str, states: set[str], *, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.http.get(f"/v1/invoices/{invoice_id}/cancellation", headers=issuer.headers)
        if response.status_code == 200:
            body = response.json()
            if body["cancellation_status"] in states:
                return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"cancellation of {invoice_id} did not reach {states}: {body}")


async def wait_invoice(client: TimbraClient, issuer: Issuer, invoice_id: str, check: Any, *, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = await client.invoice(issuer, invoice_id)
        if check(state):
            return state
        await asyncio.sleep(0.3)
    raise AssertionError(f"invoice {invoice_id} never matched: {state}")


class Sandbox:
    """The sandbox PAC's admin side: SAT's rules for a receptor, introspection, faults."""

    def __init__(self, platform: Platform) -> None:
        self.http = httpx.AsyncClient(base_url=platform.url("sandbox-pac"), timeout=10)
        self.token = platform.env_for("sandbox-pac").get("TIMBRA_PAC_TOKEN", "sandbox-token")

    async def rule(self, key: str, **rule: Any) -> None:
        response = await self.http.put("/admin/cancellation-rules", json={"key": key, **rule})
        assert response.status_code == 200, response.text

    async def info(self, uuid: str) -> dict[str, Any]:
        response = await self.http.get(f"/admin/cancellations/{uuid}")
        assert response.status_code == 200, response.text
        return response.json()

    async def faults(self, **faults: Any) -> None:
        response = await self.http.put("/admin/faults", json=faults)
        assert response.status_code == 200, response.text

    async def answer(self, rfc_receptor: str, uuid: str, accept: bool) -> httpx.Response:
        return await self.http.post(f"/acceptreject/{rfc_receptor}/{uuid}/{'Aceptacion' if accept else 'Rechazo'}", headers={"Authorization": f"Bearer {self.token}"})

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class Events:
    """Every message on the cancellation topics (and the dead-letter topic) since the start."""

    bootstrap: str
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _task: asyncio.Task | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> "Events":
        self._consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            for records in (await self._consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        self.records.append((record.topic, json.loads(record.value)))
                    except ValueError:
                        continue

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()

    def of(self, invoice_id: str, topic: str | None = None) -> list[dict[str, Any]]:
        out = []
        for name, payload in self.records:
            if topic is not None and name != topic:
                continue
            key = payload.get("invoice_id") or payload.get("key")
            if key == invoice_id:
                out.append(payload)
        return out

    def kinds(self, invoice_id: str) -> list[str]:
        """The kinds of the invoice's cancellation events, de-duplicated by event id, in time order."""
        seen, out = set(), []
        for name, payload in self.records:
            if name in topics.CANCELLATION_EVENT_TOPICS and payload.get("invoice_id") == invoice_id and payload["event_id"] not in seen:
                seen.add(payload["event_id"])
                out.append((payload["occurred_at"], name.split(".", 1)[1]))
        return [kind for _, kind in sorted(out)]  # topics interleave in any order; the events carry their time

    async def wait(self, invoice_id: str, topic: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(invoice_id, topic)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.2)
        raise AssertionError(f"{count} × {topic} for {invoice_id} not seen; got {[(t, p.get('event_type')) for t, p in self.records if (p.get('invoice_id') or p.get('key')) == invoice_id]}")


@dataclass
class Receiver:
    """A tiny HTTP/1.1 webhook receiver on loopback that answers 200 and keeps the bodies."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/hooks"

    async def start(self) -> "Receiver":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ":" in line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.bodies.append(json.loads(body))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
