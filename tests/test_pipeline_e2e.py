"""End to end through every topic, on the real platform: HTTP in, email out."""

import asyncio
import json
import time
from email import message_from_bytes

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from timbra_shared import topics
from timbra_shared.cfdi import verify
from timbra_shared.devstack.scenario import sample_invoice
from timbra_shared.events import InvoiceRequest, InvoiceRequested
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PIPELINE = ["requested", "built", "sealed", "funded", "stamped", "rendered", "emailed"]
SEVEN = {"issuer-profile", "catalog", "cfdi-builder", "stamping", "cancellation", "billing", "notifier"}


async def _emailed(client, issuer, body=None):  # noqa: ANN001, ANN202
    created = await client.create_invoice(issuer, body)
    assert created.status_code == 202, created.text
    invoice_id = created.json()["id"]
    state = (await client.wait_final(issuer, [invoice_id], timeout=60))[invoice_id]
    assert state["status"] == "emailed", state
    return state


async def test_invoice_posted_over_http_reaches_emailed_with_full_timeline(client, issuer, platform) -> None:
    email = f"{new_id()}@example.com"
    state = await _emailed(client, issuer, sample_invoice(email=email))

    assert [step["status"] for step in state["timeline"]] == PIPELINE
    assert [step["service"] for step in state["timeline"]] == ["cfdi-builder", "cfdi-builder", "issuer-profile", "billing", "stamping", "notifier", "notifier"]
    assert state["uuid"] and state["trace_id"]

    xml = await client.http.get(f"/v1/invoices/{state['id']}/xml", headers=issuer.headers)
    assert xml.status_code == 200 and b"TimbreFiscalDigital" in xml.content
    assert verify(xml.content).valid
    assert state["uuid"].encode() in xml.content
    pdf = await client.http.get(f"/v1/invoices/{state['id']}/pdf", headers=issuer.headers)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:
        messages = [m for m in (await sink.get("/api/messages")).json() if email in m["to"]]
        assert len(messages) == 1
        raw = (await sink.get(f"/api/messages/{messages[0]['id']}/raw")).content
    mail = message_from_bytes(raw)
    attachments = {part.get_filename(): part.get_payload(decode=True) for part in mail.walk() if part.get_filename()}
    assert attachments[f"{state['uuid']}.xml"] == xml.content
    assert attachments[f"{state['uuid']}.pdf"].startswith(b"%PDF")


async def test_one_trace_spans_all_seven_services(client, issuer, spans) -> None:
    state = await _emailed(client, issuer)
    trace_id = state["trace_id"]
    deadline = time.monotonic() + 15
    services: set[str] = set()
    while time.monotonic() < deadline and not SEVEN <= services:
        await asyncio.sleep(0.5)
        services = {s["service"] for s in spans() if s["trace_id"] == trace_id}
    assert SEVEN <= services, f"trace {trace_id} only reached {sorted(services)}"
    assert "ingress" in services


async def test_json_logs_carry_trace_and_invoice_ids(client, issuer, platform) -> None:
    state = await _emailed(client, issuer)
    found = []
    for path in platform.config.log_dir.glob("*.log"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if state["id"] in line and line.startswith("{"):
                record = json.loads(line)
                if record.get("invoice_id") == state["id"]:
                    found.append(record)
    assert found, "no structured log line names the invoice"
    assert all(r.get("trace_id") == state["trace_id"] for r in found), found


async def test_every_service_exposes_health_and_metrics(platform) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for name in SEVEN:
            health = await http.get(platform.url(name) + "/healthz")
            assert health.status_code == 200 and health.json()["ok"], (name, health.text)
            metrics = await http.get(platform.url(name) + "/metrics")
            assert metrics.status_code == 200
            assert "faststream_received_messages_total" in metrics.text or "faststream" in metrics.text, name


async def test_request_produced_straight_onto_kafka_is_processed(client, issuer, platform) -> None:
    invoice_id = new_id("inv_")
    event = InvoiceRequested(invoice_id=invoice_id, issuer_id=issuer.id, request=InvoiceRequest.model_validate(sample_invoice()), source="kafka")
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.INVOICE_REQUESTED, event.model_dump_json().encode(), key=invoice_id.encode(), headers=[("content-type", b"application/json")])
    finally:
        await producer.stop()
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        response = await client.http.get(f"/v1/invoices/{invoice_id}", headers=issuer.headers)
        status = response.json().get("status") if response.status_code == 200 else None
        if status == "emailed":
            break
        await asyncio.sleep(0.3)
    assert status == "emailed"


async def test_invalid_json_and_missing_fields_get_specific_4xx(client, issuer) -> None:
    broken = await client.http.post("/v1/invoices", headers={**issuer.headers, "content-type": "application/json"}, content=b"{not json")
    assert broken.status_code == 400
    assert broken.json()["code"] == "invalid_json"

    body = sample_invoice()
    del body["items"][0]["product"]["price"]
    missing = await client.create_invoice(issuer, body)
    assert missing.status_code == 422
    payload = missing.json()
    assert payload["ok"] is False
    assert [e["path"] for e in payload["errors"]] == ["items[0].product.price"]
    assert "obligatorio" in payload["errors"][0]["message"]


async def test_no_credits_rejects_with_spanish_reason(client) -> None:
    broke = await client.onboard(rfc="AAA010101AAA", legal_name="SIN CREDITOS", tax_regime="601", zip_code="06000", credits=0)
    created = await client.create_invoice(broke)
    state = (await client.wait_final(broke, [created.json()["id"]], timeout=30))[created.json()["id"]]
    assert state["status"] == "rejected"
    assert state["errors"][0]["code"] == "TIMBRA_NO_CREDITS"
    assert "Sin folios disponibles" in state["message"]
    xml = await client.http.get(f"/v1/invoices/{state['id']}/xml", headers=broke.headers)
    assert xml.status_code == 404


async def test_idempotency_key_under_concurrent_duplicates(client, issuer) -> None:
    key = new_id("idem-")
    responses = await asyncio.gather(*(client.create_invoice(issuer, sample_invoice(idempotency_key=key)) for _ in range(8)))
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1, ids
    assert sorted(r.status_code for r in responses).count(202) == 1


async def test_another_tenant_gets_404_never_the_invoice(client, issuer) -> None:
    state = await _emailed(client, issuer)
    other = await client.onboard(rfc="BBB010101BB1", legal_name="OTRO EMISOR", tax_regime="601", zip_code="06000", credits=1)
    for suffix in ("", "/xml", "/pdf"):
        response = await client.http.get(f"/v1/invoices/{state['id']}{suffix}", headers=other.headers)
        assert response.status_code == 404, (suffix, response.text)
    forged = await client.http.get(f"/v1/invoices/{state['id']}", headers={**other.headers, "x-timbra-principal": "forged.token"})
    assert forged.status_code == 404


ALL_SERVICES = frozenset(SEVEN)
CONSUMERS = {
    topics.INVOICE_REQUESTED: {"cfdi-builder"},
    topics.INVOICE_BUILT: {"issuer-profile", "cfdi-builder"},
    topics.INVOICE_SEALED: {"billing", "cfdi-builder"},
    topics.INVOICE_FUNDED: {"stamping", "cfdi-builder"},
    topics.INVOICE_STAMPED: {"billing", "catalog", "cancellation", "notifier", "cfdi-builder"},
    topics.INVOICE_STAMP_FAILED: {"billing", "cfdi-builder"},
    topics.INVOICE_RENDERED: {"notifier", "cfdi-builder"},
    topics.INVOICE_EMAILED: {"cfdi-builder"},
    topics.INVOICE_REJECTED: {"cfdi-builder"},
    topics.INVOICE_REDRIVE: ALL_SERVICES,
    topics.ISSUER_PROFILE: {"cfdi-builder"},
}


async def test_malformed_events_go_to_dead_letter_and_do_not_block(client, issuer, platform) -> None:
    """A poison message on every consumed topic is dead-lettered by every consumer of that topic."""
    marker = new_id("poison-")
    dead = AIOKafkaConsumer(topics.DEAD_LETTER, bootstrap_servers=platform.kafka_bootstrap, group_id=marker, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap)
    await dead.start()
    await producer.start()
    letters: dict[str, set[str]] = {}
    try:
        for topic in CONSUMERS:
            await producer.send_and_wait(topic, f'{{"poison": "{marker}", "not": "an event'.encode(), key=marker.encode())
        state = await _emailed(client, issuer)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and letters != CONSUMERS:
            batch = await dead.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    letter = json.loads(record.value)
                    if marker in letter["payload"]:
                        assert letter["reason"] and letter["error_type"]
                        letters.setdefault(letter["original_topic"], set()).add(letter["service"])
    finally:
        await producer.stop()
        await dead.stop()
    missing = {topic: services - letters.get(topic, set()) for topic, services in CONSUMERS.items() if services - letters.get(topic, set())}
    assert not missing, f"no dead letter from these consumers: {missing}"
    assert state["status"] == "emailed"


async def test_platform_notifications_are_emailed_once(client, issuer, platform) -> None:
    from timbra_shared.events import NotificationRequested

    notification = NotificationRequested(issuer_id=issuer.id, kind="test", to=[f"{new_id()}@example.com"], subject="Aviso de prueba", body="Hola: esto es una prueba.")
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap)
    await producer.start()
    try:
        for _ in range(3):  # redelivered: still one email
            await producer.send_and_wait(topics.NOTIFICATION_REQUESTED, notification.model_dump_json().encode(), key=issuer.id.encode(), headers=[("content-type", b"application/json")])
    finally:
        await producer.stop()
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:
        deadline = time.monotonic() + 20
        matching: list = []
        while time.monotonic() < deadline:
            matching = [m for m in (await sink.get("/api/messages")).json() if notification.to[0] in m["to"]]
            if matching:
                await asyncio.sleep(2)
                matching = [m for m in (await sink.get("/api/messages")).json() if notification.to[0] in m["to"]]
                break
            await asyncio.sleep(0.3)
    assert len(matching) == 1 and matching[0]["subject"] == "Aviso de prueba"
