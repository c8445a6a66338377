"""Webhooks against a real HTTP receiver on loopback: signatures, retries with back-off, one
delivery per event (redelivered source events add nothing), the delivery log and replay, and a
dead endpoint of one issuer not delaying another issuer's deliveries."""

import asyncio
import json
import time
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from timbra_notifier.domain.webhooks import sign, verify
from timbra_shared import topics
from timbra_shared.devstack.scenario import sample_invoice
from timbra_shared.devstack.testing import until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PIPELINE = ["requested", "built", "sealed", "funded", "stamped", "rendered", "emailed"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server. ``/flaky/*`` answers 500 to the first request of each event id and
    204 afterwards; ``/hang/*`` never answers; anything else answers 200."""

    requests: list[Received] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> "Receiver":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = [r for r in self.requests if r.headers.get("timbra-event-id") == headers.get("timbra-event-id") and r.path == path]
            self.requests.append(Received(path, headers, body, time.monotonic()))
            if path.startswith("/hang"):
                await asyncio.sleep(60)
                return
            status = "500 Internal Server Error" if path.startswith("/flaky") and not seen else "200 OK"
            writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest_asyncio.fixture(loop_scope="session")
async def receiver():  # noqa: ANN201
    running = await Receiver().start()
    yield running
    await running.stop()


async def _register(client, issuer, url: str, events=("invoice.status_changed",)) -> dict:  # noqa: ANN001
    response = await client.http.post("/v1/webhooks", headers=issuer.headers, json={"url": url, "events": list(events), "description": "pruebas"})
    assert response.status_code == 201, response.text
    return response.json()


async def test_signature_scheme() -> None:
    body = b'{"id":"evt_1"}'
    header = sign("whsec_x", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("whsec_x", body, header, now=1_700_000_100)
    assert not verify("whsec_y", body, header, now=1_700_000_100)
    assert not verify("whsec_x", body + b" ", header, now=1_700_000_100)
    assert not verify("whsec_x", body, header, now=1_700_000_000 + 301)  # too old: a replayed capture


async def test_signed_retried_deduplicated_logged_and_replayed(client, issuer, platform, receiver) -> None:
    endpoint = await _register(client, issuer, f"{receiver.url}/flaky/{issuer.id}")
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    listed = (await client.http.get("/v1/webhooks", headers=issuer.headers)).json()["data"]
    assert endpoint["id"] in [e["id"] for e in listed] and all("secret" not in e for e in listed)

    created = await client.create_invoice(issuer, sample_invoice())
    invoice_id = created.json()["id"]
    path = f"/flaky/{issuer.id}"

    def of_invoice() -> list[Received]:
        return [r for r in receiver.on(path) if r.event["data"]["invoice_id"] == invoice_id]

    # every status is delivered: first answered 500, then retried and answered 200
    assert await until(lambda: {r.event["data"]["status"] for r in of_invoice() if r.headers["timbra-attempt"] == "2"} >= set(PIPELINE), timeout=90, interval=0.25), \
        sorted((r.event["data"]["status"], r.headers["timbra-attempt"]) for r in of_invoice())
    requests = of_invoice()
    by_event: dict[str, list[Received]] = {}
    for r in requests:
        assert r.headers["content-type"] == "application/json" and r.headers["timbra-event-type"] == "invoice.status_changed"
        assert verify(secret, r.body, r.headers["timbra-signature"]), r.headers["timbra-signature"]
        assert not verify(secret + "x", r.body, r.headers["timbra-signature"])
        assert r.event["id"] == r.headers["timbra-event-id"] and r.event["type"] == "invoice.status_changed"
        by_event.setdefault(r.event["id"], []).append(r)
    assert sorted(r.event["data"]["status"] for group in by_event.values() for r in group[:1]) == sorted(PIPELINE)
    for group in by_event.values():
        assert [r.headers["timbra-attempt"] for r in group] == ["1", "2"]
        assert 3.0 < group[1].at - group[0].at < 30.0  # the back-off (5 s), not an immediate hammering
        assert group[0].body == group[1].body  # the same event, byte for byte
    emailed = next(r.event for r in requests if r.event["data"]["status"] == "emailed")
    assert emailed["data"]["email"]["recipients"] == ["cliente@example.com"] and "xml" not in json.dumps(emailed)

    # a redelivered source event (the notifier consumes invoice.stamped again) adds no delivery
    stamped = await _read_event(platform, topics.INVOICE_STAMPED, invoice_id)
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.INVOICE_STAMPED, stamped, key=invoice_id.encode(), headers=[("content-type", b"application/json")])
    finally:
        await producer.stop()
    await asyncio.sleep(8)
    assert len(of_invoice()) == len(requests)

    # the delivery log and the replay action
    log = (await client.http.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=issuer.headers)).json()["data"]
    mine = [d for d in log if d["event_id"] in by_event]
    assert len(mine) == len(PIPELINE) and all(d["state"] == "succeeded" and d["attempts"] == 2 for d in mine)
    assert all([a["status"] for a in d["log"]] == [500, 200] for d in mine)
    target = next(d for d in mine if d["event_id"] == emailed["id"])
    replay = await client.http.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{target['id']}/replay", headers=issuer.headers)
    assert replay.status_code == 202, replay.text
    assert await until(lambda: len(by_event_now := [r for r in of_invoice() if r.event["id"] == emailed["id"]]) == 3 and by_event_now[-1].headers["timbra-attempt"] == "1", 20, interval=0.25)
    replayed = (await client.http.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=issuer.headers)).json()["data"]
    assert any(d["replay_of"] == target["id"] and d["state"] == "succeeded" for d in replayed)

    # another issuer cannot see or replay it
    other = await client.onboard(rfc="WHK010101AB1", legal_name="OTRO WEBHOOK", tax_regime="601", zip_code="06000", credits=0)
    assert (await client.http.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=other.headers)).status_code == 404
    assert (await client.http.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{target['id']}/replay", headers=other.headers)).status_code == 404
    assert (await client.http.delete(f"/v1/webhooks/{endpoint['id']}", headers=issuer.headers)).status_code == 200


async def test_a_dead_endpoint_does_not_delay_another_issuers_deliveries(client, issuer, receiver) -> None:
    stuck = await client.onboard(rfc="DEA010101AB1", legal_name="ENDPOINT MUERTO", tax_regime="601", zip_code="06000", credits=20)
    dead = await _register(client, stuck, f"{receiver.url}/hang/{stuck.id}")
    alive = await _register(client, issuer, f"{receiver.url}/ok/{issuer.id}")
    try:
        slow_ids = [(await client.create_invoice(stuck, sample_invoice(email=None))).json()["id"] for _ in range(4)]
        assert await until(lambda: len(receiver.on(f"/hang/{stuck.id}")) >= 2, 60, interval=0.25)  # the dead endpoint is now holding connections
        started = time.monotonic()
        created = await client.create_invoice(issuer, sample_invoice(email=None))
        invoice_id = created.json()["id"]

        def delivered() -> set[str]:
            return {r.event["data"]["status"] for r in receiver.on(f"/ok/{issuer.id}") if r.event["data"]["invoice_id"] == invoice_id}

        assert await until(lambda: "stamped" in delivered(), 60, interval=0.25), delivered()
        waited = time.monotonic() - started
        hung = receiver.on(f"/hang/{stuck.id}")
        assert len({r.event["data"]["invoice_id"] for r in hung}) <= len(slow_ids)
        # the per-endpoint limit: no more than 2 requests at once to the dead endpoint, each held
        # until the 10 s timeout, so at most 2 arrive within the first 9 s
        assert len([r for r in hung if r.at - hung[0].at < 9]) <= 2, [round(r.at - hung[0].at, 1) for r in hung]
        assert waited < 45, waited
    finally:
        await client.http.delete(f"/v1/webhooks/{dead['id']}", headers=stuck.headers)
        await client.http.delete(f"/v1/webhooks/{alive['id']}", headers=issuer.headers)


async def test_webhook_validation(client, issuer) -> None:
    bad_url = await client.http.post("/v1/webhooks", headers=issuer.headers, json={"url": "ftp://x", "events": ["invoice.status_changed"]})
    assert bad_url.status_code == 422 and bad_url.json()["code"] == "TIMBRA_WEBHOOK_URL_INVALID"
    bad_event = await client.http.post("/v1/webhooks", headers=issuer.headers, json={"url": "https://example.com/h", "events": ["invoice.exploded"]})
    assert bad_event.status_code == 422 and "invoice.exploded" in bad_event.json()["message"]
    types = (await client.http.get("/v1/webhooks/event-types", headers=issuer.headers)).json()["data"]
    assert {"invoice.status_changed", "invoice.cancellation_status_changed", "credits.low"} <= {t["type"] for t in types}


async def _read_event(platform, topic: str, invoice_id: str) -> bytes:  # noqa: ANN001
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=platform.kafka_bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    if record.key == invoice_id.encode():
                        return record.value
    finally:
        await consumer.stop()
    raise AssertionError(f"no {topic} event for {invoice_id}")
