"""Stamping against the real platform (its own, module-scoped): the stored legal document, the
status endpoint, a 307 duplicate, a permanent rejection releasing the credit, the 72-hour
deadline, and the dead-letter command and console replay."""

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio

from timbra_shared import topics
from timbra_shared.cfdi import build, load_csd, parse_xml, seal, verify
from timbra_shared.cfdi.fecha import now_local
from timbra_shared.cfdi.testing import make_csd, sample_invoice
from timbra_shared.cfdi.tfd import find_tfd, verify_tfd
from timbra_shared.cfdi.xsd import xsd_errors
from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.scenario import Issuer, TimbraClient, sample_invoice as sample_request
from timbra_shared.events import InvoiceFunded, InvoiceSummary
from timbra_shared.mongo import make_client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ENV = {
    "TIMBRA_STUCK_AFTER": "6", "TIMBRA_SWEEP_INTERVAL": "1", "TIMBRA_OUTBOX_POLL": "0.5",
    "TIMBRA_STAMP_MAX_ATTEMPTS": "3", "TIMBRA_STAMP_BACKOFF_BASE": "0.2", "TIMBRA_STAMP_BACKOFF_MAX": "1",
    "TIMBRA_STAMP_POLL": "0.2", "TIMBRA_PAC_BREAKER_THRESHOLD": "1000",
}
DONE = frozenset({"stamped", "rendered", "emailed", "stamp_failed", "rejected"})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    config = PlatformConfig.for_tests(tmp_path_factory.mktemp("stamping-platform"), extra_env=ENV)
    async with Platform(config) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(platform: Platform) -> AsyncIterator[TimbraClient]:
    async with TimbraClient(platform.url("ingress"), platform.admin_key) as api:
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def issuer(client: TimbraClient) -> Issuer:
    return await client.onboard(credits=100)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pac(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.url("sandbox-pac"), timeout=10, headers={"Authorization": "Bearer sandbox-token"}) as http:
        yield http
        await http.put("/admin/faults", json={"mode": "none"})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mongo(platform: Platform):
    client = make_client(platform.mongodb_url)
    yield client["timbra_stamping"]
    await client.close()


async def _one(client: TimbraClient, issuer: Issuer, until: frozenset[str] = DONE) -> dict:
    response = await client.create_invoice(issuer, sample_request())
    assert response.status_code == 202, response.text
    invoice_id = response.json()["id"]
    return (await client.wait_final(issuer, [invoice_id], until=until, timeout=60))[invoice_id]


async def test_the_stored_document_is_the_legal_cfdi_byte_exact(client, issuer, pac, mongo):
    state = await _one(client, issuer)
    assert state["status"] in {"stamped", "rendered", "emailed"}, state
    response = await client.http.get(f"/v1/invoices/{state['id']}/xml", headers=issuer.headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    xml = response.content
    stored = await mongo.stamps.find_one({"_id": state["id"]})
    assert bytes(stored["xml"]) == xml  # served exactly as stored
    previous = (await pac.get("/cfdi33/stamp/status", params={"customid": state["id"]})).json()["data"]
    assert xml == previous["cfdi"].encode()  # and stored exactly as the PAC returned it
    root = parse_xml(xml)
    assert xsd_errors(root) == []
    assert verify(xml).valid
    tfd = find_tfd(xml)
    assert tfd.UUID == state["uuid"] == stored["uuid"]
    assert verify_tfd(tfd, (await pac.get("/certificate")).content, sello_cfd=root.get("Sello"))


async def test_stamping_status_shows_attempts_and_time_left(client, issuer):
    state = await _one(client, issuer)
    status = (await client.http.get(f"/v1/invoices/{state['id']}/stamping", headers=issuer.headers)).json()
    assert status["state"] == "stamped" and status["attempts"] == 1 and status["uuid"] == state["uuid"]
    assert status["seconds_left"] is None and status["deadline"] > status["stamp_by"]
    other = await client.onboard(rfc="OTR010101AA1", legal_name="OTRO", tax_regime="601", zip_code="06000", credits=0)
    assert (await client.http.get(f"/v1/invoices/{state['id']}/stamping", headers=other.headers)).status_code == 404


async def _stamp_count(pac: httpx.AsyncClient) -> int:
    return (await pac.get("/healthz")).json()["stamps"]


async def test_duplicate_a_lost_commit_is_recovered_through_307_with_the_same_uuid(client, issuer, platform, pac, mongo):
    state = await _one(client, issuer)
    funded = await mongo.client["timbra_billing"].outbox.find_one({"invoice_id": state["id"], "topic": topics.INVOICE_FUNDED})
    stamps_before = await _stamp_count(pac)
    # Simulate a stamping instance that got the PAC's answer but died before its commit:
    await mongo.stamps.delete_one({"_id": state["id"]})
    await mongo.stamp_jobs.delete_one({"_id": state["id"]})
    await mongo.processed.delete_one({"_id": f"{topics.INVOICE_FUNDED}:{state['id']}"})
    event = InvoiceFunded.model_validate_json(funded["payload"])
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for _ in range(2):  # and the event delivered twice
            await producer.send_and_wait(topics.INVOICE_FUNDED, event.model_dump_json().encode(), key=state["id"].encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + 30
    while (stored := await mongo.stamps.find_one({"_id": state["id"]})) is None:
        assert time.monotonic() < deadline, "the re-delivered funded event was never stamped"
        await asyncio.sleep(0.2)
    assert stored["uuid"] == state["uuid"] and stored["recovered_previous"] is True
    assert await _stamp_count(pac) == stamps_before  # the PAC did not stamp it again
    status = (await client.http.get(f"/v1/invoices/{state['id']}/stamping", headers=issuer.headers)).json()
    assert [h["outcome"] for h in status["history"]] == ["recovered"]


async def _balance(client: TimbraClient, issuer: Issuer) -> dict:
    return (await client.http.get("/v1/billing/balance", headers=issuer.headers)).json()


async def test_permanent_rejection_fails_with_sats_code_and_releases_the_credit(client, platform, pac):
    issuer = await client.onboard(rfc="REJ010101AA1", legal_name="REJECT TEST", tax_regime="601", zip_code="06000", credits=5)
    await pac.put("/admin/faults", json={"mode": "reject", "reject_code": "CFDI40139"})
    try:
        state = await _one(client, issuer, until=frozenset({"stamp_failed", "stamped", "emailed"}))
    finally:
        await pac.put("/admin/faults", json={"mode": "none"})
    assert state["status"] == "stamp_failed", state
    (error,) = state["errors"]
    assert error["code"] == "CFDI40139" and error["source"] == "sat"
    assert "Nombre del emisor" in error["message"] and state["message"] == error["message"]
    deadline = time.monotonic() + 20
    while (balance := await _balance(client, issuer))["reserved"] != 0:
        assert time.monotonic() < deadline, balance
        await asyncio.sleep(0.3)
    assert balance["available"] == 5 and balance["consumed"] == 0, balance
    status = (await client.http.get(f"/v1/invoices/{state['id']}/stamping", headers=issuer.headers)).json()
    assert status["state"] == "failed" and status["failure"]["code"] == "CFDI40139" and status["attempts"] == 0


async def test_an_invoice_past_its_window_is_failed_before_the_pac_sees_it(client, issuer, platform, pac):
    # A sealed CFDI whose Fecha is 71 h 55 min old: inside SAT's window, but not by Timbra's margin.
    cer, key = make_csd(rfc="EKU9003173C9")
    fecha = (now_local("42501") - timedelta(hours=71, minutes=55)).strftime("%Y-%m-%dT%H:%M:%S")
    xml = seal(build(sample_invoice(Fecha=fecha, Folio="7100")), load_csd(cer, key, "12345678a")).decode()
    invoice_id = "inv_deadline_" + hashlib.sha256(xml.encode()).hexdigest()[:10]
    summary = InvoiceSummary(type="I", serie="A", folio="7100", fecha=fecha, rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="U", total=1)
    event = InvoiceFunded(invoice_id=invoice_id, issuer_id=issuer.id, summary=summary, xml=xml, reservation_id="res_x")
    requests_before = (await pac.get("/healthz")).json()["requests"]
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topics.INVOICE_FUNDED, event.model_dump_json().encode(), key=invoice_id.encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + 30
    while True:
        response = await client.http.get(f"/v1/invoices/{invoice_id}/stamping", headers=issuer.headers)
        if response.status_code == 200 and response.json()["state"] != "pending":
            break
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.2)
    status = response.json()
    assert status["state"] == "failed" and status["failure"]["code"] == "TIMBRA_STAMP_DEADLINE"
    assert "72 horas" in status["failure"]["message"]
    assert (await pac.get("/healthz")).json()["requests"] == requests_before  # the PAC never saw it


def _cli(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MONGODB_URL": platform.mongodb_url}
    script = os.path.join(os.path.dirname(sys.executable), "timbra-stamping")
    return subprocess.run([script, *args], env=env, capture_output=True, text=True, timeout=60)


async def test_exhausted_retries_go_to_dead_letters_and_the_operator_replays_them(client, issuer, platform, pac, mongo):
    await pac.put("/admin/faults", json={"mode": "outage"})
    try:
        state = await _one(client, issuer, until=frozenset({"funded"}))
        deadline = time.monotonic() + 60
        while (job := await mongo.stamp_jobs.find_one({"_id": state["id"]}) or {}).get("state") != "dead_letter":
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.3)
        assert job["attempts"] == 3
        listing = _cli(platform, "dlq", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        dead = {d["_id"]: d for d in json.loads(listing.stdout)}
        assert state["id"] in dead and "SAT no disponible" in dead[state["id"]]["last_error"]
        human = _cli(platform, "dlq", "list")
        assert state["id"] in human.stdout
    finally:
        await pac.put("/admin/faults", json={"mode": "none"})
    assert (await client.invoice(issuer, state["id"]))["status"] == "funded"  # waiting for an operator, credit still reserved
    replay = _cli(platform, "dlq", "replay", state["id"])
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stdout + replay.stderr
    final = (await client.wait_final(issuer, [state["id"]], until=frozenset({"stamped", "rendered", "emailed"}), timeout=60))[state["id"]]
    assert final["status"] in {"stamped", "rendered", "emailed"}, final
    job = await mongo.stamp_jobs.find_one({"_id": state["id"]})
    assert job["state"] == "stamped" and job["replays"] == 1
    assert "replayed" in [h["outcome"] for h in job["history"]]
    assert state["id"] not in {d["_id"] for d in json.loads(_cli(platform, "dlq", "list", "--json").stdout)}
    async with httpx.AsyncClient(timeout=30) as http:
        metrics = (await http.get(platform.url("stamping") + "/metrics")).text
    assert 'timbra_stamps_total{outcome="dead_letter"} 1.0' in metrics


async def test_the_consoles_replay_of_a_stamping_dead_letter_stamps_the_invoice(client, issuer, platform, pac, mongo):
    await pac.put("/admin/faults", json={"mode": "outage"})
    try:
        state = await _one(client, issuer, until=frozenset({"funded"}))
        deadline = time.monotonic() + 60
        while (await mongo.stamp_jobs.find_one({"_id": state["id"]}) or {}).get("state") != "dead_letter":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
    finally:
        await pac.put("/admin/faults", json={"mode": "none"})
    key = await client.http.post("/v1/staff/keys", headers=client.admin, json={"role": "operator", "name": "pruebas operador"})
    assert key.status_code == 201, key.text
    operator = {"Authorization": f"Bearer {key.json()['key']}"}
    letter = None
    deadline = time.monotonic() + 60
    while letter is None:
        assert time.monotonic() < deadline, "the stamping dead letter reached the console's store"
        rows = (await client.http.get("/v1/ops/dead-letters", headers=operator, params={"invoice_id": state["id"]})).json()["data"]
        letter = next((r for r in rows if r["service"] == "stamping"), None)
        await asyncio.sleep(0.3)
    assert letter["original_topic"] == topics.INVOICE_FUNDED
    replayed = await client.http.post(f"/v1/ops/dead-letters/{letter['id']}/replay", headers=operator, json={"note": "el PAC ya responde"})
    assert replayed.status_code == 200, replayed.text
    final = (await client.wait_final(issuer, [state["id"]], until=frozenset({"stamped", "rendered", "emailed"}), timeout=60))[state["id"]]
    assert final["status"] in {"stamped", "rendered", "emailed"}, final
    job = await mongo.stamp_jobs.find_one({"_id": state["id"]})
    assert job["state"] == "stamped" and job["replays"] == 1


class _ClaimedFirstBy:
    """A ``stamp_jobs`` collection on which ``rival`` claims due jobs just before each update of
    ours: the race two stamping instances run when both find the same oldest due jobs."""

    def __init__(self, collection, rival) -> None:  # noqa: ANN001
        self._collection, self._rival, self.rival_claims = collection, rival, []

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._collection, name)

    async def update_many(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if not self.rival_claims:
            self.rival_claims.append(await self._rival())
        return await self._collection.update_many(*args, **kwargs)


async def test_an_instance_that_loses_a_claim_race_takes_the_next_due_jobs(platform):
    from timbra_stamping.adapters.repository import PENDING, JobRepository

    client = make_client(platform.mongodb_url)
    db = client[f"timbra_test_claims_{os.getpid()}_{int(time.time())}"]
    try:
        now = datetime.now(UTC)
        await db.stamp_jobs.insert_many([
            {"_id": f"inv_{n:03}", "state": PENDING, "pac": "sandbox", "next_attempt_at": now - timedelta(seconds=100 - n), "lease_owner": None, "lease_until": None}
            for n in range(60)
        ])
        ours, theirs = JobRepository(db), JobRepository(db)
        ours.jobs = _ClaimedFirstBy(db.stamp_jobs, lambda: theirs.claim_due_many("b", now, 30, 20))

        claimed = await ours.claim_due_many("a", now, 30, 20)

        (rival,) = ours.jobs.rival_claims
        assert [j["_id"] for j in rival] == [f"inv_{n:03}" for n in range(20)]  # the oldest, which we had found too
        assert [j["_id"] for j in claimed] == [f"inv_{n:03}" for n in range(20, 40)]  # not nothing: the next due ones
        assert await db.stamp_jobs.count_documents({"lease_owner": "a"}) == 20 and await db.stamp_jobs.count_documents({"lease_owner": "b"}) == 20
    finally:
        await client.drop_database(db.name)
        await client.close()
