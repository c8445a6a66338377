"""``StampingService`` with a FakePac that records its calls."""

from decimal import Decimal

import pytest

from timbra_shared import topics
from timbra_shared.errors import RetryLater
from timbra_shared.events import InvoiceFunded, InvoiceStamped, InvoiceStampFailed, InvoiceSummary
from timbra_stamping.domain.pac import PacRejected, PacUnavailable, StampResult

SUMMARY = InvoiceSummary(type="I", serie="F", folio="9", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="U", total=Decimal("232.00"))
SEALED_XML = '<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Sello="abc" Total="232.00"/>'
STAMPED_XML = SEALED_XML.replace("/>", "><cfdi:Complemento/></cfdi:Comprobante>")


def funded(invoice_id: str = "inv_1") -> InvoiceFunded:
    return InvoiceFunded(invoice_id=invoice_id, issuer_id="iss_1", summary=SUMMARY, xml=SEALED_XML, reservation_id="res_1")


def result(previous: bool = False) -> StampResult:
    return StampResult(uuid="5FB2822E-396D-4725-8521-CDC4BDD20CCF", xml=STAMPED_XML.encode(), fecha_timbrado="2025-06-15T12:00:05", previous=previous)


def outcome(registry, name: str) -> float:
    return registry.get_sample_value("timbra_stamps_total", {"outcome": name}) or 0.0


async def test_stamps_and_records_once(stamping, store, repo, pac, registry):
    pac.script = [result()]
    event = funded()
    await stamping.stamp(event)
    await stamping.stamp(event)  # redelivery

    assert pac.calls == [(SEALED_XML.encode(), "inv_1")]
    ((doc, session),) = repo.inserts
    assert session is store.sessions[0]
    assert doc["_id"] == "inv_1" and doc["issuer_id"] == "iss_1"
    assert doc["uuid"] == "5FB2822E-396D-4725-8521-CDC4BDD20CCF"
    assert doc["xml"] == STAMPED_XML.encode()  # byte-exact as the PAC returned it
    assert doc["pac"] == "fake-pac" and doc["recovered_previous"] is False
    (stamped,) = store.emitted
    assert isinstance(stamped, InvoiceStamped)
    assert (stamped.invoice_id, stamped.uuid, stamped.fecha_timbrado, stamped.xml, stamped.pac) == ("inv_1", doc["uuid"], "2025-06-15T12:00:05", STAMPED_XML, "fake-pac")
    assert stamped.summary == SUMMARY
    assert store.processed == {f"{topics.INVOICE_FUNDED}:inv_1"}
    assert outcome(registry, "stamped") == 1


async def test_pac_unavailable_is_retried_later(stamping, store, repo, pac, registry):
    pac.script = [PacUnavailable("PAC respondió 503")]
    with pytest.raises(RetryLater, match="503"):
        await stamping.stamp(funded())
    assert store.emitted == [] and repo.inserts == [] and store.processed == set()
    assert outcome(registry, "retry") == 1

    await stamping.stamp(funded())  # the redelivery succeeds
    assert len(pac.calls) == 2
    assert [type(e) for e in store.emitted] == [InvoiceStamped]


async def test_pac_rejection_fails_the_stamp_with_source_pac(stamping, store, repo, pac, registry):
    pac.script = [PacRejected("CFDI40102", "El resultado de la digestión debe ser igual al resultado de la desencripción del sello.")]
    await stamping.stamp(funded())

    (failed,) = store.emitted
    assert isinstance(failed, InvoiceStampFailed)
    assert failed.invoice_id == "inv_1" and failed.issuer_id == "iss_1"
    assert failed.message == "El resultado de la digestión debe ser igual al resultado de la desencripción del sello."
    (error,) = failed.errors
    assert (error.code, error.source) == ("CFDI40102", "pac")
    assert error.message == failed.message
    assert repo.inserts == []
    assert outcome(registry, "rejected") == 1


async def test_timbre_previo_is_recorded_as_recovered(stamping, store, repo, pac, registry):
    pac.script = [result(previous=True)]
    await stamping.stamp(funded())
    assert repo.stamps["inv_1"]["recovered_previous"] is True
    assert isinstance(store.emitted[0], InvoiceStamped)
    assert outcome(registry, "recovered") == 1 and outcome(registry, "stamped") == 0


async def test_each_invoice_is_stamped_with_its_own_idempotency_id(stamping, store, pac):
    await stamping.stamp(funded("inv_a"))
    await stamping.stamp(funded("inv_b"))
    assert [c[1] for c in pac.calls] == ["inv_a", "inv_b"]
    assert [e.invoice_id for e in store.emitted] == ["inv_a", "inv_b"]


async def test_a_redelivery_after_a_rejection_does_not_call_the_pac_again(stamping, store, repo, pac):
    pac.script = [PacRejected("CFDI40101", "El campo Fecha excede las 72 horas previas a la certificación."), result()]
    await stamping.stamp(funded())
    await stamping.stamp(funded())  # e.g. the consumer crashed before committing the offset
    assert len(pac.calls) == 1
    assert [type(e) for e in store.emitted] == [InvoiceStampFailed]
