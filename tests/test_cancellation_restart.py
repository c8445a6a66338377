"""The cancellation service dies while it polls SAT for the receptor's answer: the poll state is
in MongoDB, so a new instance takes the job over when the dead one's lease expires and finishes
it, with each event published once and one request at SAT."""

import asyncio

import pytest
import pytest_asyncio

from timbra_shared import topics
from timbra_shared.devstack.cancellation import Events, Sandbox, invoice_body, random_rfc, stamped, wait_cancellation, wait_invoice

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def events(platform):  # noqa: ANN001, ANN201
    collector = await Events(platform.kafka_bootstrap).start()
    yield collector
    await collector.stop()


async def test_a_restart_mid_poll_finishes_the_cancellation_once(client, platform, events) -> None:
    emisor = await client.onboard(rfc=random_rfc(), legal_name="REINICIOS DE PRUEBA", tax_regime="601", zip_code="42501", credits=10)
    rfc = random_rfc()
    sandbox = Sandbox(platform)
    try:
        await sandbox.rule(rfc, direct_window_s=0, receptor_answer="accept", answer_after_s=15)
        invoice = await stamped(client, emisor, invoice_body(rfc))
        invoice_id = invoice["id"]
        assert (await client.http.delete(f"/v1/invoices/{invoice_id}", params={"motive": "02"}, headers=emisor.headers)).status_code == 202
        pending = await wait_cancellation(client, emisor, invoice_id, {"pending"})
        polls_before = len([h for h in pending["history"] if h["event"] == "pending"])

        await platform.kill_service("cancellation")
        await asyncio.sleep(1)
        await platform.restart_service("cancellation")

        done = await wait_cancellation(client, emisor, invoice_id, {"completed"}, timeout=90)
        assert done["acceptance"] == "con_aceptacion" and done["attempt"] == 1
        assert len([h for h in done["history"] if h["event"] == "pending"]) == polls_before == 1
        await wait_invoice(client, emisor, invoice_id, lambda s: s["status"] == "canceled")
        await events.wait(invoice_id, topics.CANCELLATION_COMPLETED)
        await asyncio.sleep(2)  # anything published twice would be on the topics by now
        assert events.kinds(invoice_id) == ["pending", "accepted", "completed"], events.kinds(invoice_id)
        assert (await sandbox.info(invoice["uuid"]))["solicitudes"] == 1
    finally:
        await sandbox.aclose()
