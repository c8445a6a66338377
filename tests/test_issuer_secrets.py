"""Secrets never leave the vault: after a full run (onboarding, a CSD upload with a wrong and then
the right password, SMTP settings and their test, an invoice stamped and emailed), the captured
logs, traces and every event on every topic contain neither the CSD password, nor the key bytes,
nor the SMTP password; and issuer-profile's database holds them only encrypted."""

import asyncio
import base64
import secrets
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_der_private_key
from pymongo import AsyncMongoClient

from timbra_shared.cfdi.testing import make_csd
from timbra_shared.devstack.scenario import Issuer
from timbra_shared.topics import ALL_TOPICS

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def _forms(secret: bytes) -> list[bytes]:
    """The ways a secret could leak into text: raw, base64, base64url, hex; and a long slice of each."""
    forms = [secret, base64.b64encode(secret), base64.urlsafe_b64encode(secret), secret.hex().encode(), secret.hex().upper().encode()]
    return forms + [f[len(f) // 3: len(f) // 3 + 48] for f in forms if len(f) > 96]


async def _all_events(bootstrap: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        known = await consumer.topics()  # fetches the cluster's metadata
        assert set(ALL_TOPICS) <= known, set(ALL_TOPICS) - known
        partitions = [TopicPartition(topic, p) for topic in sorted(known) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + 60

        async def behind() -> list[TopicPartition]:
            return [tp for tp in partitions if await consumer.position(tp) < ends[tp]]

        while time.monotonic() < deadline and await behind():
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batch.values():
                for record in records:
                    values.append((record.value or b"") + (record.key or b"") + b"".join(v for _k, v in record.headers or []))
        assert not await behind(), "could not read every topic to its end"
        return values
    finally:
        await consumer.stop()


async def test_no_secret_reaches_logs_traces_events_or_plaintext_storage(client, platform) -> None:
    rfc = "SEC" + "900101" + "AB" + str(secrets.randbelow(10))
    csd_password = "Clave-CSD-" + secrets.token_hex(6)
    smtp_password = "Clave-SMTP-" + secrets.token_hex(6)
    cer, key = make_csd(rfc=rfc, name="SECRETOS SA", password=csd_password)
    plain_key = load_der_private_key(key, csd_password.encode()).private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())

    created = await client.http.post("/v1/issuers", headers=client.admin, json={"rfc": rfc, "legal_name": "SECRETOS SA", "tax_regime": "601", "zip": "42501", "email": "secretos@example.com"})
    assert created.status_code == 201, created.text
    issuer = Issuer(id=created.json()["id"], api_key=created.json()["api_key"], slug=created.json()["slug"], rfc=rfc)
    await client.http.put("/v1/issuers/me/acceptances", headers=issuer.headers, json={"privacy_notice": True, "carta_manifiesto": True})
    wrong = await client.http.put("/v1/issuers/me/csd", headers=issuer.headers, files={"cer": ("a.cer", cer), "key": ("a.key", key)}, data={"password": csd_password[::-1]})
    assert wrong.status_code == 422
    uploaded = await client.http.put("/v1/issuers/me/csd", headers=issuer.headers, files={"cer": ("a.cer", cer), "key": ("a.key", key)}, data={"password": csd_password})
    assert uploaded.status_code == 200, uploaded.text
    smtp = {"address": "f@secretos.mx", "username": "f@secretos.mx", "password": smtp_password, "host": "127.0.0.1", "port": platform.config.smtp_port, "security": "none"}
    assert (await client.http.put("/v1/issuers/me/smtp", headers=issuer.headers, json=smtp)).status_code == 200
    assert (await client.http.post("/v1/issuers/me/smtp/test", headers=issuer.headers)).status_code == 200
    assert (await client.http.post("/v1/issuers/me/smtp/test", headers=issuer.headers, json={**smtp, "port": 1})).status_code == 422
    await client.http.post("/v1/billing/credits", headers=client.admin, json={"issuer_id": issuer.id, "stamps": 1, "months": 12})
    invoice = (await client.create_invoice(issuer)).json()["id"]
    assert (await client.wait_final(issuer, [invoice], timeout=60))[invoice]["status"] == "emailed"
    await asyncio.sleep(1.5)  # let every service flush its last log lines

    secrets_to_find = {"CSD password": [csd_password.encode()], "SMTP password": [smtp_password.encode()], ".key file": _forms(key), "private key": _forms(plain_key)}

    def leaks(blob: bytes) -> list[str]:
        return [name for name, forms in secrets_to_find.items() if any(f in blob for f in forms)]

    # the captured logs and traces of every process
    files = [*platform.config.log_dir.glob("*.log"), *platform.config.trace_dir.glob("*.jsonl")]
    assert any(f.name.startswith("issuer-profile") for f in files)
    found = {str(f.name): leaks(f.read_bytes()) for f in files}
    assert not {k: v for k, v in found.items() if v}, found
    assert any(issuer.id.encode() in f.read_bytes() for f in files if f.name.startswith("issuer-profile")), "the scan did not see this run's logs"

    # every event on every topic
    events = await _all_events(platform.kafka_bootstrap)
    assert any(rfc.encode() in e for e in events), "the scan did not see this run's events"
    leaked = [leaks(e) for e in events if leaks(e)]
    assert not leaked, leaked

    # the database holds the secrets only encrypted
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        for name in await mongo.list_database_names():
            if not name.startswith("timbra_"):
                continue
            for collection in await mongo[name].list_collection_names():
                async for doc in mongo[name][collection].find({}):
                    blob = repr(doc).encode() + b"".join(v for v in _bytes(doc))
                    assert not leaks(blob), (name, collection, leaks(blob))
    finally:
        await mongo.close()

    # and no API answer carried them
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=30) as http:
        for path in ("/v1/issuers/me", "/v1/issuers/me/smtp", "/v1/issuers/me/csds", "/v1/issuers/me/keys"):
            assert not leaks((await http.get(path, headers=issuer.headers)).content), path


def _bytes(value: object) -> list[bytes]:
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, dict):
        return [b for v in value.values() for b in _bytes(v)]
    if isinstance(value, list):
        return [b for v in value for b in _bytes(v)]
    return []
