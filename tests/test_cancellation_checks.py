"""What Timbra refuses before the PAC is called (each with its code and a Spanish message, and no
call reaching the PAC), and the faults after it: a PAC outage and a lost answer are retried
without a second request at SAT, an unknown final state is escalated to the operators' topics."""

import asyncio
import json
import os
import subprocess
import sys

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from timbra_shared import topics
from timbra_shared.devstack.cancellation import Events, Sandbox, invoice_body, random_rfc, stamped, wait_cancellation, wait_invoice

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def emisor(client):  # noqa: ANN001, ANN201
    return await client.onboard(rfc=random_rfc(), legal_name="CANCELACIONES RECHAZADAS", tax_regime="601", zip_code="42501", credits=200)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def otro(client):  # noqa: ANN001, ANN201
    return await client.onboard(rfc=random_rfc(), legal_name="OTRO EMISOR", tax_regime="601", zip_code="42501", credits=20)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(platform):  # noqa: ANN001, ANN201
    pac = Sandbox(platform)
    yield pac
    await pac.faults(mode="none", timeout_s=15.0)
    await pac.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def events(platform):  # noqa: ANN001, ANN201
    collector = await Events(platform.kafka_bootstrap).start()
    yield collector
    await collector.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mongo(platform):  # noqa: ANN001, ANN201
    client = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    yield client["timbra_cancellation"]
    await client.close()


async def _delete(client, issuer, invoice_id: str, **params):  # noqa: ANN001, ANN202
    return await client.http.delete(f"/v1/invoices/{invoice_id}", params=params, headers=issuer.headers)


def _refused(response, status: int, code: str) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and body["code"] == code, body
    assert body["errors"][0]["code"] == code and body["errors"][0]["source"] == "timbra"
    assert len(body["message"].split()) >= 3, body  # a sentence the issuer can act on
    return body


async def test_refusals_before_the_pac(client, emisor, otro, sandbox, mongo) -> None:
    rfc = random_rfc()
    invoice = await stamped(client, emisor, invoice_body(rfc))
    invoice_id, uuid = invoice["id"], invoice["uuid"]

    # exists and belongs to the caller: another tenant's invoice is not found
    _refused(await _delete(client, emisor, "inv_no_existe", motive="02"), 404, "TIMBRA_CANCEL_NOT_FOUND")
    _refused(await _delete(client, otro, invoice_id, motive="02"), 404, "TIMBRA_CANCEL_NOT_FOUND")
    assert (await client.http.get(f"/v1/invoices/{invoice_id}/cancellation", headers=otro.headers)).status_code == 404

    # the motive: present, in SAT's catalog; 01 with a substitute, 02–04 without
    missing = await client.http.delete(f"/v1/invoices/{invoice_id}", headers=emisor.headers)
    assert missing.status_code == 422 and missing.json()["errors"][0]["path"] == "motive"
    body = _refused(await _delete(client, emisor, invoice_id, motive="05"), 422, "TIMBRA_CANCEL_MOTIVE_INVALID")
    assert "catálogo" in body["message"] and body["errors"][0]["path"] == "motive"
    _refused(await _delete(client, emisor, invoice_id, motive="01"), 422, "TIMBRA_CANCEL_SUBSTITUTION_REQUIRED")
    _refused(await _delete(client, emisor, invoice_id, motive="02", substitution=uuid), 422, "TIMBRA_CANCEL_SUBSTITUTION_NOT_ALLOWED")
    _refused(await _delete(client, emisor, invoice_id, motive="04"), 422, "TIMBRA_CANCEL_MOTIVE_04_NOT_GLOBAL")

    # the substitute: exists for this issuer, is not the original, relates it with 04
    _refused(await _delete(client, emisor, invoice_id, motive="01", substitution="inv_no_existe"), 422, "TIMBRA_CANCEL_SUBSTITUTE_NOT_FOUND")
    foreign = await stamped(client, otro, invoice_body(rfc, related=[{"relationship": "04", "uuids": [uuid]}]))
    _refused(await _delete(client, emisor, invoice_id, motive="01", substitution=foreign["id"]), 422, "TIMBRA_CANCEL_SUBSTITUTE_NOT_FOUND")
    _refused(await _delete(client, emisor, invoice_id, motive="01", substitution=uuid), 422, "TIMBRA_CANCEL_SUBSTITUTE_IS_ORIGINAL")
    unrelated = await stamped(client, emisor, invoice_body(rfc, related=[{"relationship": "07", "uuids": [uuid]}]))
    body = _refused(await _delete(client, emisor, invoice_id, motive="01", substitution=unrelated["uuid"]), 422, "TIMBRA_CANCEL_SUBSTITUTE_NOT_RELATED")
    assert "TipoRelacion 04" in body["message"]

    # SAT's deadline (CFF 29-A): an invoice issued in 2023 could be cancelled until March 2024
    await mongo.cancellable.update_one({"_id": invoice_id}, {"$set": {"fecha": "2023-06-15T10:00:00"}})
    body = _refused(await _delete(client, emisor, invoice_id, motive="02"), 422, "TIMBRA_CANCEL_DEADLINE_PASSED")
    assert "2024-03-31" in body["message"]

    # none of these reached the PAC
    info = await sandbox.info(uuid)
    assert info["calls"] == 0 and info["solicitudes"] == 0, info
    assert (await client.invoice(emisor, invoice_id))["status"] == "emailed"


async def test_an_invoice_not_stamped_cannot_be_cancelled(client, emisor) -> None:
    created = await client.create_invoice(emisor, invoice_body(random_rfc(), payment_form="77"))  # not in c_FormaPago: rejected by the builder
    invoice_id = created.json()["id"]
    assert (await client.wait_final(emisor, [invoice_id]))[invoice_id]["status"] == "rejected"
    for _ in range(50):  # the cancellation service projects invoice.requested asynchronously
        response = await _delete(client, emisor, invoice_id, motive="02")
        if response.status_code != 404:
            break
        await asyncio.sleep(0.2)
    _refused(response, 409, "TIMBRA_CANCEL_NOT_STAMPED")


async def test_related_documents_in_force_block_the_cancellation_and_are_listed(client, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    invoice = await stamped(client, emisor, invoice_body(rfc))
    credit_note = await stamped(client, emisor, invoice_body(rfc, type="E", payment_form="03", related=[{"relationship": "01", "uuids": [invoice["uuid"]]}]))

    body = _refused(await _delete(client, emisor, invoice["id"], motive="02"), 409, "TIMBRA_CANCEL_RELATED_IN_FORCE")
    assert credit_note["uuid"].upper() in body["message"] and "TipoRelacion 01" in body["message"]
    assert (await sandbox.info(invoice["uuid"]))["calls"] == 0

    # the credit note (egreso: no acceptance) is cancelled first; then the invoice can be
    assert (await _delete(client, emisor, credit_note["id"], motive="02")).status_code == 202
    done = await wait_cancellation(client, emisor, credit_note["id"], {"completed"})
    assert done["expected"]["reason"] == "tipo" and done["acceptance"] == "sin_aceptacion"
    assert (await _delete(client, emisor, invoice["id"], motive="02")).status_code == 202
    await wait_cancellation(client, emisor, invoice["id"], {"completed"})


async def test_in_process_and_already_cancelled(client, emisor, sandbox) -> None:
    rfc = random_rfc()
    await sandbox.rule(rfc, direct_window_s=0, receptor_answer="none", response_window_s=600)
    invoice = await stamped(client, emisor, invoice_body(rfc))
    assert (await _delete(client, emisor, invoice["id"], motive="03")).status_code == 202
    _refused(await _delete(client, emisor, invoice["id"], motive="03"), 409, "TIMBRA_CANCEL_IN_PROCESS")
    await wait_cancellation(client, emisor, invoice["id"], {"pending"})
    _refused(await _delete(client, emisor, invoice["id"], motive="02"), 409, "TIMBRA_CANCEL_IN_PROCESS")

    assert (await sandbox.answer(rfc, invoice["uuid"], accept=True)).status_code == 200
    await wait_cancellation(client, emisor, invoice["id"], {"completed"})
    _refused(await _delete(client, emisor, invoice["id"], motive="02"), 409, "TIMBRA_CANCEL_ALREADY_CANCELLED")
    assert (await sandbox.info(invoice["uuid"]))["solicitudes"] == 1


# --------------------------------------------------------------------------- faults


async def test_a_pac_outage_is_retried_without_a_second_request_at_sat(client, emisor, sandbox, events) -> None:
    invoice = await stamped(client, emisor, invoice_body(random_rfc(), expensive=False))
    invoice_id = invoice["id"]
    await sandbox.faults(mode="outage")
    try:
        assert (await _delete(client, emisor, invoice_id, motive="02")).status_code == 202
        for _ in range(100):
            state = (await client.http.get(f"/v1/invoices/{invoice_id}/cancellation", headers=emisor.headers)).json()
            if sum(h["event"] == "pac_unavailable" for h in state["history"]) >= 3:
                break
            await asyncio.sleep(0.2)
        assert state["cancellation_status"] == "requested" and sum(h["event"] == "pac_unavailable" for h in state["history"]) >= 3, state
        # the answer is lost after SAT registered the request: the retry gets the same request back
        await sandbox.faults(mode="timeout_after_cancel", timeout_s=4.0)
        for _ in range(100):
            if (await sandbox.info(invoice["uuid"]))["solicitudes"] == 1:
                break
            await asyncio.sleep(0.2)
    finally:
        await sandbox.faults(mode="none", timeout_s=15.0)
    done = await wait_cancellation(client, emisor, invoice_id, {"completed"})
    info = await sandbox.info(invoice["uuid"])
    assert info["calls"] >= 4 and info["solicitudes"] == 1 and info["duplicates"] >= 1, info
    assert done["acceptance"] == "sin_aceptacion"
    await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
    await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
    assert events.kinds(invoice_id) == ["completed"]


async def test_an_unknown_final_state_is_escalated_to_the_operators(client, platform, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    await sandbox.rule(rfc, direct_window_s=0, final_state="Cancelación en revisión por la autoridad")
    invoice = await stamped(client, emisor, invoice_body(rfc))
    invoice_id = invoice["id"]
    assert (await _delete(client, emisor, invoice_id, motive="02")).status_code == 202

    escalated = await wait_cancellation(client, emisor, invoice_id, {"escalated"})
    assert "Cancelación en revisión por la autoridad" in escalated["message"]
    event = (await events.wait(invoice_id, topics.CANCELLATION_ESCALATED))[0]
    assert "estado desconocido" in event["reason"]
    letter = next(p for p in events.of(invoice_id, topics.DEAD_LETTER) if p.get("service") == "cancellation")
    assert letter["error_type"] == "CancellationEscalated" and json.loads(letter["payload"])["uuid"] == invoice["uuid"]
    state = await wait_invoice(client, emisor, invoice_id, lambda s: "cancellation_escalated" in [t["status"] for t in s["timeline"]])
    assert state["status"] == "emailed" and state["cancellation"]["status"] == "escalated"

    # the operator's command lists it; after checking SAT, resumes it
    env = {**os.environ, **platform.env_for("cancellation")}
    listed = subprocess.run([sys.executable, "-m", "timbra_cancellation.cli", "escalated", "list", "--json"], env=env, capture_output=True, text=True, check=True)
    assert invoice_id in [d["_id"] for d in json.loads(listed.stdout)]
    await sandbox.rule(rfc, direct_window_s=0, receptor_answer="accept")
    resumed = subprocess.run([sys.executable, "-m", "timbra_cancellation.cli", "escalated", "resume", invoice_id], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resumed 1" in resumed.stdout, resumed.stderr
    done = await wait_cancellation(client, emisor, invoice_id, {"completed"})
    assert done["acceptance"] == "con_aceptacion"
    await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
