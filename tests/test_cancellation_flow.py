"""Cancellation on the real platform, one path per test: each motive, SAT's direct cancellation,
the receptor's acceptance, rejection and silence ("plazo vencido"), the guided substitution, the
Kafka command; the invoice's status, timeline and the events on the topics in each; the acuse,
the CANCELADO PDF, the issuer's email and webhook.

SAT's clocks are compressed per receptor RFC in the sandbox PAC (``direct_window_s`` replaces
"until the end of the next business day", ``response_window_s`` the receptor's 3 business days)."""

import asyncio
import shutil
import subprocess
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from lxml import etree

from timbra_shared.devstack.cancellation import Events, Receiver, Sandbox, invoice_body, random_rfc, stamped, wait_cancellation, wait_invoice
from timbra_shared.devstack.cancellation import customer as customer_of
from timbra_shared import topics
from timbra_shared.cfdi.acuse import verify_acuse
from timbra_shared.events import CancelInvoice

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CFDI = "{http://www.sat.gob.mx/cfd/4}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def emisor(client):  # noqa: ANN001, ANN201
    """An issuer of its own (its RFC keys nothing else in the sandbox)."""
    return await client.onboard(rfc=random_rfc(), legal_name="CANCELACIONES DE PRUEBA", tax_regime="601", zip_code="42501", credits=200)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(platform):  # noqa: ANN001, ANN201
    pac = Sandbox(platform)
    yield pac
    await pac.faults(mode="none")
    await pac.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def events(platform):  # noqa: ANN001, ANN201
    collector = await Events(platform.kafka_bootstrap).start()
    yield collector
    await collector.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hooks(client, emisor):  # noqa: ANN001, ANN201
    receiver = await Receiver().start()
    response = await client.http.post("/v1/webhooks", headers=emisor.headers, json={"url": receiver.url, "events": ["invoice.cancellation_status_changed"]})
    assert response.status_code == 201, response.text
    yield receiver
    await receiver.stop()


async def _acceptance_required(sandbox, rfc: str, **rule) -> None:  # noqa: ANN001
    """The receptor ``rfc``'s invoices are out of the day-after-issue window at once."""
    await sandbox.rule(rfc, direct_window_s=0, **rule)


def _steps(state: dict) -> list[str]:
    return [t["status"] for t in state["timeline"]]


def _pdf_text(pdf: bytes) -> str:
    return " ".join(subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode().split())


# --------------------------------------------------------------------------- SAT cancels directly


async def test_motive_02_up_to_1000_pesos_is_cancelled_without_acceptance(client, platform, emisor, sandbox, events, hooks) -> None:
    rfc = random_rfc()
    await _acceptance_required(sandbox, rfc)  # only the amount makes it direct
    invoice = await stamped(client, emisor, invoice_body(rfc, expensive=False))
    invoice_id = invoice["id"]

    response = await client.http.delete(f"/v1/invoices/{invoice_id}", params={"motive": "02"}, headers=emisor.headers)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["cancellation_status"] == "requested" and accepted["motive"] == "02" and accepted["uuid"] == invoice["uuid"]
    assert accepted["expected"]["acceptance_required"] is False and accepted["expected"]["reason"] == "monto"

    done = await wait_cancellation(client, emisor, invoice_id, {"completed"})
    assert done["acceptance"] == "sin_aceptacion"
    assert done["sat"]["estado"] == "Cancelado" and done["sat"]["estatus_cancelacion"] == "Cancelado sin aceptación"
    state = await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
    assert state["cancellation"]["status"] == "completed" and state["cancellation"]["motive"] == "02"
    assert [t["status"] for t in state["timeline"]][-1] == "canceled"

    await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
    await events.wait(invoice_id, topics.CANCELLATION_REQUESTED)
    assert events.kinds(invoice_id) == ["completed"], events.kinds(invoice_id)
    completed = events.of(invoice_id, topics.CANCELLATION_COMPLETED)[0]
    assert completed["acceptance"] == "sin_aceptacion" and completed["uuid"] == invoice["uuid"] and completed["attempt"] == 1

    # the acuse: SAT's signed receipt, stored and downloadable, for this UUID
    receipt = await client.http.get(done["acuse_url"], headers=emisor.headers)
    assert receipt.status_code == 200 and receipt.headers["content-type"].startswith("application/xml")
    acuse = verify_acuse(receipt.content)
    assert acuse.folios == {invoice["uuid"].upper(): "201"} and acuse.rfc_emisor == emisor.rfc

    # the PDF is marked CANCELADO
    if shutil.which("pdftotext"):
        for _ in range(50):
            pdf = await client.http.get(f"/v1/invoices/{invoice_id}/pdf", headers=emisor.headers)
            if "CANCELADO" in _pdf_text(pdf.content):
                break
        assert "CANCELADO" in _pdf_text(pdf.content)

    # the SAT saw exactly one request
    info = await sandbox.info(invoice["uuid"])
    assert info["solicitudes"] == 1 and info["motivo"] == "02" and info["kind"] == "sin_aceptacion"

    # the issuer is told by email (with the acuse) and by webhook
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as mail:
        for _ in range(100):
            messages = (await mail.get("/api/messages", params={"subject": "cancelada"})).json()
            mine = [m for m in messages if (invoice.get("serie") or "") + (invoice.get("folio") or "") in m["subject"] and "emisor@example.com" in m["to"]]
            if mine:
                break
            await asyncio.sleep(0.2)
        assert mine, messages
        assert any(a["filename"].startswith("acuse-") for a in mine[0]["attachments"])
    for _ in range(100):
        mine = [b for b in hooks.bodies if b.get("data", {}).get("invoice_id") == invoice_id]
        if any(b["data"]["cancellation_status"] == "completed" for b in mine):
            break
        await asyncio.sleep(0.2)
    assert any(b["data"]["cancellation_status"] == "completed" for b in mine), hooks.bodies[-3:]


# --------------------------------------------------------------------------- the receptor decides


async def test_motive_03_over_1000_waits_for_the_receptor_who_accepts(client, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    await _acceptance_required(sandbox, rfc, receptor_answer="accept", answer_after_s=6)
    invoice = await stamped(client, emisor, invoice_body(rfc))
    invoice_id = invoice["id"]

    response = await client.http.delete(f"/v1/invoices/{invoice_id}", params={"motive": "03"}, headers=emisor.headers)
    assert response.status_code == 202, response.text

    pending = await wait_cancellation(client, emisor, invoice_id, {"pending", "completed"})
    assert pending["cancellation_status"] == "pending", pending
    assert pending["sat"]["estatus_cancelacion"] == "En proceso" and pending["respond_by"]
    state = await wait_invoice(client, emisor, invoice_id, lambda s: "cancellation_pending" in _steps(s))
    if "canceled" not in _steps(state):  # still in force while the receptor decides
        assert state["status"] == "emailed" and state["cancellation"]["status"] == "pending", state

    done = await wait_cancellation(client, emisor, invoice_id, {"completed"})
    assert done["acceptance"] == "con_aceptacion" and done["sat"]["estatus_cancelacion"] == "Cancelado con aceptación"
    state = await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled" and "cancellation_accepted" in _steps(s))
    assert _steps(state)[-3:] == ["cancellation_pending", "cancellation_accepted", "canceled"], _steps(state)

    await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
    assert events.kinds(invoice_id) == ["pending", "accepted", "completed"], events.kinds(invoice_id)
    assert events.of(invoice_id, topics.CANCELLATION_ACCEPTED)[0]["by"] == "receptor"
    assert events.of(invoice_id, topics.CANCELLATION_COMPLETED)[0]["acceptance"] == "con_aceptacion"
    assert (await sandbox.info(invoice["uuid"]))["solicitudes"] == 1


async def test_the_receptor_rejects_and_a_new_request_is_accepted_later(client, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    await _acceptance_required(sandbox, rfc, receptor_answer="none", response_window_s=600)
    invoice = await stamped(client, emisor, invoice_body(rfc))
    invoice_id, uuid = invoice["id"], invoice["uuid"]

    assert (await client.http.delete(f"/v1/invoices/{invoice_id}", params={"motive": "02"}, headers=emisor.headers)).status_code == 202
    await wait_cancellation(client, emisor, invoice_id, {"pending"})
    answered = await sandbox.answer(rfc, uuid, accept=False)  # the receptor, through its PAC
    assert answered.status_code == 200, answered.text

    rejected = await wait_cancellation(client, emisor, invoice_id, {"rejected"})
    assert rejected["sat"]["estatus_cancelacion"] == "Solicitud rechazada" and rejected["errors"][0]["code"] == "TIMBRA_CANCEL_REJECTED_BY_RECEPTOR"
    assert "rechazó" in rejected["message"]
    await events.wait(invoice_id, topics.CANCELLATION_REJECTED)
    state = await wait_invoice(client, emisor, invoice_id, lambda s: s.get("cancellation", {}).get("status") == "rejected")
    assert state["status"] == "emailed"  # in force
    assert events.of(invoice_id, topics.CANCELLATION_REJECTED)[0]["by"] == "receptor"

    # a second request: this time the receptor accepts
    await sandbox.rule(rfc, direct_window_s=0, receptor_answer="accept", answer_after_s=1)
    again = await client.http.delete(f"/v1/invoices/{invoice_id}", params={"motive": "02"}, headers=emisor.headers)
    assert again.status_code == 202, again.text
    assert again.json()["attempt"] == 2
    done = await wait_cancellation(client, emisor, invoice_id, {"completed"})
    assert done["attempt"] == 2 and done["acceptance"] == "con_aceptacion"
    state = await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
    assert state["cancellation"]["attempt"] == 2
    await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
    assert events.kinds(invoice_id) == ["pending", "rejected", "pending", "accepted", "completed"], events.kinds(invoice_id)
    assert (await sandbox.info(uuid))["solicitudes"] == 2


async def test_silence_of_the_receptor_cancels_by_plazo_vencido(client, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    await _acceptance_required(sandbox, rfc, receptor_answer="none", response_window_s=3)
    invoice = await stamped(client, emisor, invoice_body(rfc))
    invoice_id = invoice["id"]

    assert (await client.http.delete(f"/v1/invoices/{invoice_id}", params={"motive": "02"}, headers=emisor.headers)).status_code == 202
    done = await wait_cancellation(client, emisor, invoice_id, {"completed"})
    assert done["acceptance"] == "plazo_vencido" and done["sat"]["estatus_cancelacion"] == "Plazo vencido"
    await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
    await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
    assert events.kinds(invoice_id) == ["pending", "accepted", "completed"], events.kinds(invoice_id)
    assert events.of(invoice_id, topics.CANCELLATION_ACCEPTED)[0]["by"] == "plazo_vencido"


# --------------------------------------------------------------------------- motive 01: substitution


async def test_guided_substitution_issues_the_corrected_invoice_then_cancels_the_original_with_01(client, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    await _acceptance_required(sandbox, rfc, receptor_answer="accept", answer_after_s=1)
    original = await stamped(client, emisor, invoice_body(rfc, payment_form="01"))
    invoice_id = original["id"]

    response = await client.http.post(f"/v1/invoices/{invoice_id}/cancellation/substitution", headers=emisor.headers,
                                      json={"changes": {"payment_form": "03", "notes": "Sustituye a la factura con forma de pago equivocada"}})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["cancellation_status"] == "awaiting_substitute" and body["motive"] == "01"
    substitute_id = body["substitution"]["invoice_id"]

    for _ in range(100):  # the builder takes the substitute's request from invoice.requested
        if (await client.http.get(f"/v1/invoices/{substitute_id}", headers=emisor.headers)).status_code == 200:
            break
        await asyncio.sleep(0.2)
    substitute = (await client.wait_final(emisor, [substitute_id], timeout=90))[substitute_id]
    assert substitute["status"] == "emailed", substitute
    xml = etree.fromstring((await client.http.get(f"/v1/invoices/{substitute_id}/xml", headers=emisor.headers)).content)
    assert xml.get("FormaPago") == "03"
    relation = xml.find(f"{CFDI}CfdiRelacionados")
    assert relation.get("TipoRelacion") == "04" and relation.find(f"{CFDI}CfdiRelacionado").get("UUID") == original["uuid"]

    done = await wait_cancellation(client, emisor, invoice_id, {"completed"})
    assert done["substitution"] == {"invoice_id": substitute_id, "uuid": substitute["uuid"].upper()}
    await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
    assert (await client.invoice(emisor, substitute_id))["status"] == "emailed"
    info = await sandbox.info(original["uuid"])
    assert info["motivo"] == "01" and info["folio_sustitucion"].upper() == substitute["uuid"].upper() and info["solicitudes"] == 1
    await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
    completed = events.of(invoice_id, topics.CANCELLATION_COMPLETED)[0]
    assert completed["motive"] == "01" and completed["substitution_invoice_id"] == substitute_id
    assert events.of(invoice_id, topics.CANCELLATION_REQUESTED)[0]["substitution"].upper() == substitute["uuid"].upper()


async def test_motive_01_with_a_substitute_issued_first_by_uuid(client, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    await _acceptance_required(sandbox, rfc, receptor_answer="accept", answer_after_s=0)
    original = await stamped(client, emisor, invoice_body(rfc))
    substitute = await stamped(client, emisor, invoice_body(rfc, related=[{"relationship": "04", "uuids": [original["uuid"]]}]))

    response = await client.http.delete(f"/v1/invoices/{original['id']}", params={"motive": "01", "substitution": substitute["uuid"]}, headers=emisor.headers)
    assert response.status_code == 202, response.text
    done = await wait_cancellation(client, emisor, original["id"], {"completed"})
    assert done["motive"] == "01" and done["substitution"]["invoice_id"] == substitute["id"]
    await wait_invoice(client, emisor, original["id"], lambda s: s["status"] == "canceled")
    assert (await sandbox.info(original["uuid"]))["folio_sustitucion"].upper() == substitute["uuid"].upper()


# --------------------------------------------------------------------------- the command on Kafka


async def test_the_command_on_kafka_cancels_and_a_bad_one_is_answered_with_rejected(client, platform, emisor, sandbox, events) -> None:
    rfc = random_rfc()
    invoice = await stamped(client, emisor, invoice_body(rfc, expensive=False))
    invoice_id = invoice["id"]
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        bad = CancelInvoice(invoice_id=invoice_id, issuer_id=emisor.id, motive="07")
        await producer.send_and_wait(topics.CANCELLATION_REQUESTED, bad.model_dump_json().encode(), key=invoice_id.encode())
        rejected = (await events.wait(invoice_id, topics.CANCELLATION_REJECTED))[0]
        assert rejected["by"] == "timbra" and rejected["errors"][0]["code"] == "TIMBRA_CANCEL_MOTIVE_INVALID" and rejected["attempt"] == 0

        good = CancelInvoice(invoice_id=invoice_id, issuer_id=emisor.id, motive="02")
        await producer.send_and_wait(topics.CANCELLATION_REQUESTED, good.model_dump_json().encode(), key=invoice_id.encode())
        await producer.send_and_wait(topics.CANCELLATION_REQUESTED, good.model_dump_json().encode(), key=invoice_id.encode())  # redelivered
    finally:
        await producer.stop()
    await wait_cancellation(client, emisor, invoice_id, {"completed"})
    state = await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
    assert "cancellation_rejected" in [t["status"] for t in state["timeline"]]
    assert state["cancellation"]["status"] == "completed"  # the refused command never became the invoice's cancellation
    await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
    assert len(events.of(invoice_id, topics.CANCELLATION_COMPLETED)) == 1
    assert (await sandbox.info(invoice["uuid"]))["solicitudes"] == 1


# --------------------------------------------------------------------------- motive 04: the global invoice


async def _json(response, status: int) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.text
    return response.json()


async def _ticket_status(client, emisor, ticket_id: str, status: str) -> dict:  # noqa: ANN001
    for _ in range(100):
        ticket = await _json(await client.http.get(f"/v1/tickets/{ticket_id}", headers=emisor.headers), 200)
        if ticket["status"] == status:
            return ticket
        await asyncio.sleep(0.3)
    raise AssertionError(f"ticket {ticket_id} is {ticket['status']}, not {status}")


async def test_motive_04_cancels_the_global_invoice_so_a_customer_gets_a_nominative_one(client, emisor, events) -> None:
    """SAT: cancel the global invoice with 04, issue the customer's own invoice, re-issue the
    global one without that sale. The catalog gives the tickets back when the global is cancelled."""
    product = await _json(await client.http.post("/v1/products", headers=emisor.headers, json={
        "sku": "LIB-9", "description": "Libro de texto", "product_key": "55101500", "unit_key": "H87", "price": "116.00", "tax_included": True,
        "taxes": [{"type": "IVA", "rate": "0.16"}]}), 201)
    branch = await _json(await client.http.post("/v1/branches", headers=emisor.headers, json={"name": "Sucursal Centro", "zip": "42501"}), 201)
    now = datetime.now(ZoneInfo("America/Mexico_City"))
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=10, hour=12, minute=0, second=0, microsecond=0)
    tickets = [await _json(await client.http.post("/v1/tickets", headers=emisor.headers, json={
        "branch_id": branch["id"], "ticket_number": f"T-{n}-{random_rfc()}", "date": (last_month + timedelta(days=n)).replace(tzinfo=None).isoformat(),
        "total": "1160.00", "payment_form": "01", "items": [{"product_id": product["id"], "quantity": "10"}]}), 201) for n in range(2)]
    period = {"periodicity": "04", "months": f"{last_month.month:02d}", "year": last_month.year}
    issued = await _json(await client.http.post(f"/v1/branches/{branch['id']}/global-invoice", headers=emisor.headers, json=period), 202)
    global_id = issued["invoice_id"]
    for _ in range(100):
        if (await client.http.get(f"/v1/invoices/{global_id}", headers=emisor.headers)).status_code == 200:
            break
        await asyncio.sleep(0.3)
    assert (await client.wait_final(emisor, [global_id], timeout=90))[global_id]["status"] == "emailed"
    await _ticket_status(client, emisor, tickets[0]["id"], "invoiced")

    # the customer of the first ticket asks for an invoice of its own: cancel the global with 04
    response = await client.http.delete(f"/v1/invoices/{global_id}", params={"motive": "04"}, headers=emisor.headers)
    accepted = await _json(response, 202)
    assert accepted["expected"]["reason"] == "publico_en_general"  # $2,320.00: only the receptor makes it direct
    done = await wait_cancellation(client, emisor, global_id, {"completed"})
    assert done["acceptance"] == "sin_aceptacion" and done["motive"] == "04"
    await wait_invoice(client, emisor, global_id, lambda s: s["status"] == "canceled")
    assert (await events.wait(global_id, topics.CANCELLATION_COMPLETED))[0]["motive"] == "04"

    # the tickets are open again; the first one, although last month's, can be invoiced now
    first = await _ticket_status(client, emisor, tickets[0]["id"], "open")
    await _ticket_status(client, emisor, tickets[1]["id"], "open")
    assert first["invoice_id"] is None
    await asyncio.sleep(2)  # the builder's projection of catalog.tickets
    nominative = await stamped(client, emisor, {"customer": customer_of(random_rfc()), "ticket_id": tickets[0]["id"], "payment_method": "PUE"})
    await _ticket_status(client, emisor, tickets[0]["id"], "invoiced")

    # the global invoice again, without that sale (the reopened tickets are in their window again)
    again = await _json(await client.http.post(f"/v1/branches/{branch['id']}/global-invoice", headers=emisor.headers, json={**period, "include_open_window": True}), 202)
    assert again["ticket_ids"] == [tickets[1]["id"]]
    for _ in range(100):
        if (await client.http.get(f"/v1/invoices/{again['invoice_id']}", headers=emisor.headers)).status_code == 200:
            break
        await asyncio.sleep(0.3)
    assert (await client.wait_final(emisor, [again["invoice_id"]], timeout=90))[again["invoice_id"]]["status"] == "emailed"
    assert (await _ticket_status(client, emisor, tickets[0]["id"], "invoiced"))["invoice_id"] == nominative["id"]
    assert (await _ticket_status(client, emisor, tickets[1]["id"], "invoiced"))["invoice_id"] == again["invoice_id"]
