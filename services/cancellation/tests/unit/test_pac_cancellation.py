"""The PAC port's cancel and status operations (``timbra_shared.pac``) against the sandbox PAC's
SAT side, served in-process (ASGI): requests keyed by UUID, the signed acuse, SAT's status
service (SOAP), the acceptance rules, the receptor's answers, related documents, motive 01."""

import time

import httpx
import pytest
from lxml import etree

from timbra_shared.cfdi import build, load_csd, seal
from timbra_shared.cfdi.acuse import AcuseInvalid, verify_acuse
from timbra_shared.cfdi.fecha import fecha_local
from timbra_shared.cfdi.models import CfdiRelacionados
from timbra_shared.cfdi.testing import make_csd, sample_invoice
from timbra_shared.pac import PacRejected, PacUnavailable
from timbra_shared.pac.sandbox import SandboxPacClient
from timbra_shared.pac.sat_status import parse_response, request_envelope, response_envelope
from timbra_shared.pac.sw_sapien import SwSapienClient
from timbra_shared.sandbox_pac.app import create_app
from timbra_shared.testing import httpx_through

EMISOR, RECEPTOR = "EKU9003173C9", "URE180429TM6"
_folio = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def csd():
    cer, key = make_csd()
    return load_csd(cer, key, "12345678a")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    app = create_app(str(tmp_path), token="tok", validate_xsd=False)
    transport = httpx.ASGITransport(app=app)
    httpx_through(monkeypatch, transport)
    return app


@pytest.fixture
async def pac(sandbox):
    client = SandboxPacClient("http://sandbox", token="tok")
    yield client
    await client.aclose()


@pytest.fixture
async def admin(sandbox):
    async with httpx.AsyncClient(base_url="http://sandbox") as client:
        yield client


async def stamp(pac, csd, **overrides):  # noqa: ANN001, ANN201
    xml = seal(build(sample_invoice(Fecha=fecha_local("42501"), Folio=str(next(_folio)), **overrides)), csd)
    result = await pac.stamp(xml, idempotency_id=f"inv-{next(_folio)}")
    return result.uuid, etree.fromstring(result.xml).get("Total")


async def test_a_request_is_registered_once_per_uuid_and_the_acuse_is_signed(pac, admin, csd) -> None:
    uuid, total = await stamp(pac, csd)
    await admin.put("/admin/cancellation-rules", json={"key": RECEPTOR, "direct_window_s": 0, "receptor_answer": "none", "response_window_s": 600})
    assert (await pac.status(uuid, EMISOR, RECEPTOR, total)).es_cancelable == "Cancelable con aceptación"

    first = await pac.cancel(EMISOR, uuid, "02")
    again = await pac.cancel(EMISOR, uuid, "02")  # a retry after a lost answer
    assert (first.code, again.code) == ("201", "201") and first.acuse == again.acuse
    acuse = verify_acuse(first.acuse)
    assert acuse.folios == {uuid: "201"} and acuse.rfc_emisor == EMISOR
    with pytest.raises(AcuseInvalid):
        verify_acuse(first.acuse.replace(b">201<", b">202<"))

    status = await pac.status(uuid, EMISOR, RECEPTOR, total)
    assert (status.estado, status.estatus_cancelacion) == ("Vigente", "En proceso")
    info = (await admin.get(f"/admin/cancellations/{uuid}")).json()
    assert (info["calls"], info["solicitudes"], info["duplicates"], info["kind"]) == (2, 1, 1, "con_aceptacion")


async def test_direct_cancellation_and_202_afterwards(pac, csd) -> None:
    uuid, total = await stamp(pac, csd)  # a fresh invoice: within the day after issue
    assert (await pac.cancel(EMISOR, uuid, "03")).code == "201"
    status = await pac.status(uuid, EMISOR, RECEPTOR, total)
    assert (status.estado, status.estatus_cancelacion) == ("Cancelado", "Cancelado sin aceptación")
    assert (await pac.cancel(EMISOR, uuid, "03")).code == "202"


async def test_the_receptor_accepts_rejects_or_stays_silent(pac, admin, csd) -> None:
    await admin.put("/admin/cancellation-rules", json={"key": RECEPTOR, "direct_window_s": 0, "receptor_answer": "none", "response_window_s": 0.5})
    silent, total = await stamp(pac, csd)
    accepted, _ = await stamp(pac, csd)
    rejected, _ = await stamp(pac, csd)
    for uuid in (silent, accepted, rejected):
        await pac.cancel(EMISOR, uuid, "02")
    assert (await admin.post(f"/acceptreject/{RECEPTOR}/{accepted}/Aceptacion", headers={"Authorization": "Bearer tok"})).status_code == 200
    assert (await admin.post(f"/acceptreject/{RECEPTOR}/{rejected}/Rechazo", headers={"Authorization": "Bearer tok"})).status_code == 200
    assert (await admin.post(f"/acceptreject/{RECEPTOR}/{rejected}/Aceptacion", headers={"Authorization": "Bearer tok"})).status_code == 400  # answered already
    time.sleep(0.6)
    assert (await pac.status(silent, EMISOR, RECEPTOR, total)).estatus_cancelacion == "Plazo vencido"
    assert (await pac.status(accepted, EMISOR, RECEPTOR, total)).estatus_cancelacion == "Cancelado con aceptación"
    status = await pac.status(rejected, EMISOR, RECEPTOR, total)
    assert (status.estado, status.estatus_cancelacion) == ("Vigente", "Solicitud rechazada")
    assert (await pac.cancel(EMISOR, rejected, "02")).code == "201"  # a new request after a rejection
    assert (await admin.get(f"/admin/cancellations/{rejected}")).json()["solicitudes"] == 2


async def test_sat_refuses_with_codes(pac, csd) -> None:
    uuid, _ = await stamp(pac, csd)
    cases = [
        (dict(rfc_emisor=EMISOR, uuid="00000000-0000-4000-8000-000000000000", motivo="02"), "205"),
        (dict(rfc_emisor="AAA010101AAA", uuid=uuid, motivo="02"), "203"),
        (dict(rfc_emisor=EMISOR, uuid=uuid, motivo="09"), "207"),
        (dict(rfc_emisor=EMISOR, uuid=uuid, motivo="01"), "CA310"),
        (dict(rfc_emisor=EMISOR, uuid=uuid, motivo="02", folio_sustitucion=uuid), "CA310"),
    ]
    for kwargs, code in cases:
        with pytest.raises(PacRejected) as refused:
            await pac.cancel(**kwargs)
        assert refused.value.code == code and refused.value.message


async def test_related_documents_block_and_a_substitute_must_relate_with_04(pac, csd) -> None:
    original, _ = await stamp(pac, csd)
    await stamp(pac, csd, TipoDeComprobante="E", CfdiRelacionados=[CfdiRelacionados(TipoRelacion="01", UUIDs=[original])])
    with pytest.raises(PacRejected) as refused:
        await pac.cancel(EMISOR, original, "02")
    assert refused.value.code == "CA320" and "TipoRelacion 01" in refused.value.detail

    other, _ = await stamp(pac, csd)
    unrelated, _ = await stamp(pac, csd)
    with pytest.raises(PacRejected, match="TipoRelacion 04"):
        await pac.cancel(EMISOR, other, "01", unrelated)
    substitute, _ = await stamp(pac, csd, CfdiRelacionados=[CfdiRelacionados(TipoRelacion="04", UUIDs=[other])])
    assert (await pac.cancel(EMISOR, other, "01", substitute)).code == "201"  # the substitute (04) does not block


async def test_an_outage_is_transient(pac, admin, csd) -> None:
    uuid, total = await stamp(pac, csd)
    await admin.put("/admin/faults", json={"mode": "outage"})
    with pytest.raises(PacUnavailable):
        await pac.cancel(EMISOR, uuid, "02")
    with pytest.raises(PacUnavailable):
        await pac.status(uuid, EMISOR, RECEPTOR, total)
    await admin.put("/admin/faults", json={"mode": "none"})
    assert (await admin.get(f"/admin/cancellations/{uuid}")).json()["solicitudes"] == 0


async def test_sw_sapiens_client_speaks_the_same_cancellation_contract(sandbox, admin, csd) -> None:
    pac = SandboxPacClient("http://sandbox", token="tok")
    sw = SwSapienClient("http://sandbox", token="tok", status_url="http://sandbox/ConsultaCFDIService.svc", transport=httpx.ASGITransport(app=sandbox))
    try:
        uuid, total = await stamp(pac, csd)
        result = await sw.cancel(EMISOR, uuid, "02")
        assert result.code == "201" and verify_acuse(result.acuse).folios == {uuid: "201"}
        assert (await sw.status(uuid, EMISOR, RECEPTOR, total)).estado == "Cancelado"
    finally:
        await pac.aclose()
        await sw.aclose()


def test_the_status_service_envelopes() -> None:
    request = request_envelope("?re=A&rr=B&tt=1.00&id=X")
    assert b"<tem:expresionImpresa>?re=A&amp;rr=B&amp;tt=1.00&amp;id=X</tem:expresionImpresa>" in request
    answer = parse_response(response_envelope({"CodigoEstatus": "S - ok", "Estado": "Vigente", "EsCancelable": "Cancelable con aceptación", "EstatusCancelacion": "En proceso"}))
    assert (answer.estado, answer.es_cancelable, answer.estatus_cancelacion) == ("Vigente", "Cancelable con aceptación", "En proceso")
    with pytest.raises(PacUnavailable):
        parse_response(b"<html>bad gateway</html>")
    with pytest.raises(PacUnavailable):
        parse_response(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')
