"""Direct Kafka: requests produced straight onto ``invoice.requested`` get the same validation,
idempotency and statuses as POST /v1/invoices (real broker, real builder)."""

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaProducer

from timbra_shared import topics
from timbra_shared.devstack.scenario import sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def produce(platform, *messages: dict) -> None:  # noqa: ANN001
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for message in messages:
            await producer.send_and_wait(topics.INVOICE_REQUESTED, json.dumps(message).encode(), key=str(message.get("invoice_id", "x")).encode())
    finally:
        await producer.stop()


async def status_of(client, issuer, invoice_id: str, until: set[str], timeout: float = 60) -> dict | None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        response = await client.http.get(f"/v1/invoices/{invoice_id}", headers=issuer.headers)
        state = response.json() if response.status_code == 200 else None
        if state and state["status"] in until:
            return state
        await asyncio.sleep(0.3)
    return state


async def one_of(client, issuer, ids: list[str], timeout: float = 60) -> tuple[str, str]:  # noqa: ANN001
    """Keyed by invoice_id, two messages may land on different partitions: either may be first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [i for i in ids if (await client.http.get(f"/v1/invoices/{i}", headers=issuer.headers)).status_code == 200]
        if found:
            return found[0], next(i for i in ids if i != found[0])
        await asyncio.sleep(0.3)
    raise AssertionError(f"none of {ids} was recorded")


async def test_raw_message_is_stamped_and_a_duplicate_key_makes_one_invoice(client, issuer, platform) -> None:
    key = new_id("kafka-")
    body = sample_invoice(email=None, idempotency_key=key)
    ids = [new_id("inv_"), new_id("inv_")]
    # the minimal message a producer writes by hand: the envelope defaults (event_id, occurred_at…) are optional
    await produce(platform, *({"invoice_id": i, "issuer_id": issuer.id, "request": body} for i in ids))
    first, second = await one_of(client, issuer, ids)
    state = await status_of(client, issuer, first, {"emailed", "rejected", "stamp_failed"})
    assert state and state["status"] == "emailed", state
    assert state["uuid"] and [s["status"] for s in state["timeline"]][0] == "requested"
    assert (await client.http.get(f"/v1/invoices/{first}/xml", headers=issuer.headers)).status_code == 200
    assert (await client.http.get(f"/v1/invoices/{second}", headers=issuer.headers)).status_code == 404
    listed = (await client.http.get("/v1/invoices", headers=issuer.headers, params={"idempotency_key": key})).json()["data"]
    assert [d["id"] for d in listed] == [first]
    # an HTTP retry with the same key and body answers the invoice Kafka created
    replay = await client.create_invoice(issuer, body)
    assert replay.status_code == 200 and replay.json()["id"] == first


async def test_invalid_request_on_kafka_becomes_a_rejected_invoice_with_coded_errors(client, issuer, platform) -> None:
    body = sample_invoice(email=None)
    del body["items"][0]["product"]["price"]
    invoice_id = new_id("inv_")
    await produce(platform, {"invoice_id": invoice_id, "issuer_id": issuer.id, "request": body})
    state = await status_of(client, issuer, invoice_id, {"rejected"})
    assert state and state["status"] == "rejected", state
    assert [(e["code"], e["path"]) for e in state["errors"]] == [("TIMBRA_VALIDATION", "items[0].product.price")]
    http = await client.create_invoice(issuer, body)
    assert http.status_code == 422 and [e["path"] for e in http.json()["errors"]] == ["items[0].product.price"]


async def test_kafka_duplicate_key_with_another_body_is_rejected_as_a_conflict(client, issuer, platform) -> None:
    key = new_id("kafka-")
    bodies = [sample_invoice(email=None, idempotency_key=key), sample_invoice(email=None, idempotency_key=key, payment_form="01")]
    ids = [new_id("inv_"), new_id("inv_")]
    await produce(platform, *({"invoice_id": i, "issuer_id": issuer.id, "request": b} for i, b in zip(ids, bodies, strict=True)))
    states = {i: await status_of(client, issuer, i, {"emailed", "rejected"}) for i in ids}
    outcome = sorted((s["status"], (s.get("errors") or [{}])[0].get("code")) for s in states.values())
    assert outcome == [("emailed", None), ("rejected", "TIMBRA_IDEMPOTENCY_CONFLICT")], states
