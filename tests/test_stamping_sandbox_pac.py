"""The sandbox PAC as a real server (``python -m timbra_shared.sandbox_pac`` on loopback): what it
validates, what it signs, its 307, its lookups, its token endpoint and its injected faults."""

import asyncio
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta

import httpx
import pytest
import pytest_asyncio

from timbra_shared.cfdi import build, load_csd, parse_xml, seal, seal_xml, verify
from timbra_shared.cfdi.fecha import fecha_local, now_local
from timbra_shared.cfdi.testing import make_csd, sample_invoice
from timbra_shared.cfdi.tfd import find_tfd, verify_tfd
from timbra_shared.cfdi.xsd import xsd_errors
from timbra_shared.devstack.servers import free_port

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

TOKEN = "tok-sandbox-test"
UUID_V4 = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$")
_folio = iter(range(1, 1_000_000))


@pytest.fixture(scope="module")
def csd():
    cer, key = make_csd()
    return load_csd(cer, key, "12345678a")


def sealed(csd, **overrides) -> bytes:
    fields = {"Fecha": fecha_local("42501"), "Folio": str(next(_folio)), **overrides}
    return seal(build(sample_invoice(**fields)), csd)


def start_sandbox(folder, port: int, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "TIMBRA_DATA_DIR": str(folder), "TIMBRA_HTTP_PORT": str(port), "TIMBRA_PAC_TOKEN": TOKEN, **env}
    proc = subprocess.Popen([sys.executable, "-m", "timbra_shared.sandbox_pac"], env=environment)
    deadline = time.monotonic() + 120  # patient: a loaded 2-core machine starts Python slowly
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"sandbox PAC did not start (exit code {proc.poll()})")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    port = free_port()
    proc = start_sandbox(tmp_path_factory.mktemp("pac"), port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest_asyncio.fixture(loop_scope="module")
async def pac(sandbox):
    async with httpx.AsyncClient(base_url=sandbox, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client
        await client.put("/admin/faults", json={"mode": "none", "latency_ms": 0, "error_rate": 0.0, "timeout_s": 15.0})
        await client.put("/admin/config", json={"xsd": True, "rules": True})


async def post(pac, xml: bytes, customid: str | None = None, **kw) -> httpx.Response:
    return await pac.post("/cfdi33/stamp/v4", files={"xml": ("cfdi.xml", xml, "text/xml")}, headers={"customid": customid} if customid else {}, **kw)


async def test_stamps_a_valid_cfdi_with_a_signed_tfd_11(pac, csd):
    xml = sealed(csd)
    response = await post(pac, xml, "inv-ok")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", body
    data = body["data"]
    stamped = data["cfdi"].encode()
    tfd = find_tfd(stamped)
    certificate = (await pac.get("/certificate")).content
    assert UUID_V4.match(tfd.UUID) and data["uuid"] == tfd.UUID
    assert tfd.Version == "1.1" and tfd.RfcProvCertif == "SAT970701NN3"
    assert tfd.SelloCFD == parse_xml(xml).get("Sello") == data["selloCFDI"]
    assert tfd.NoCertificadoSAT == data["noCertificadoSAT"] and data["noCertificadoCFDI"] == csd.serial
    assert verify_tfd(tfd, certificate, sello_cfd=parse_xml(xml).get("Sello"))
    assert data["cadenaOriginalSAT"] == tfd.cadena
    fecha_timbrado = datetime.fromisoformat(tfd.FechaTimbrado)
    assert abs(fecha_timbrado - now_local("06000").replace(tzinfo=None)) < timedelta(minutes=2)
    assert xsd_errors(parse_xml(stamped)) == [] and verify(stamped).valid


async def test_same_cfdi_again_is_307_with_the_previous_stamp_and_lookups_find_it(pac, csd):
    xml = sealed(csd)
    first = (await post(pac, xml, "inv-dup")).json()["data"]
    again = await post(pac, xml, "inv-dup")
    body = again.json()
    assert body["status"] == "error" and body["message"].startswith("307.") and "timbre previo" in body["message"]
    assert body["data"]["uuid"] == first["uuid"] and body["data"]["cfdi"] == first["cfdi"]
    by_custom = (await pac.get("/cfdi33/stamp/status", params={"customid": "inv-dup"})).json()["data"]
    import hashlib

    by_hash = (await pac.get("/cfdi33/stamp/status", params={"hash": hashlib.sha256(xml).hexdigest()})).json()["data"]
    assert by_custom["uuid"] == by_hash["uuid"] == first["uuid"]
    missing = await pac.get("/cfdi33/stamp/status", params={"customid": "never-sent"})
    assert missing.status_code == 404


def _tamper(xml: bytes, old: bytes, new: bytes) -> bytes:
    assert old in xml
    return xml.replace(old, new, 1)


async def rejection(pac, xml: bytes) -> tuple[str, str]:
    response = await post(pac, xml)
    body = response.json()
    assert response.status_code == 400 and body["status"] == "error", body
    code, _, text = body["message"].partition(" - ")
    return code, text


async def test_rejections_carry_sats_code_and_message(pac, csd):
    good = sealed(csd)
    code, text = await rejection(pac, _tamper(good, b'Total="', b'Total="1'))
    assert code == "CFDI40102" and "sello" in text.lower()
    old = (now_local("42501") - timedelta(hours=73)).strftime("%Y-%m-%dT%H:%M:%S")
    code, text = await rejection(pac, sealed(csd, Fecha=old))
    assert code == "CFDI40101" and "72 horas" in text
    future = (now_local("42501") + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    code, text = await rejection(pac, sealed(csd, Fecha=future))
    assert code == "CFDI40101" and "posterior" in text
    # SubTotal that is not the sum of the Importes, sealed as such: the sello verifies, the rule does not
    bad_total = seal_xml(_tamper(good, b'SubTotal="', b'SubTotal="9'), csd)
    code, _ = await rejection(pac, bad_total)
    assert code.startswith("CFDI40") and code not in ("CFDI40101", "CFDI40102")
    expired_cer, expired_key = make_csd(rfc="EKU9003173C9", expired=True)
    from timbra_shared.cfdi.csd import load_certificate

    valid_once = load_certificate(expired_cer).not_valid_before_utc + timedelta(minutes=1)
    code, _ = await rejection(pac, sealed(load_csd(expired_cer, expired_key, "12345678a", at=valid_once)))
    assert code == "CFDI40106"


async def test_xsd_check_and_its_fast_mode_at_runtime(pac, csd):
    # An attribute the schema does not allow; the cadena ignores it, so the sello still verifies.
    xml = seal_xml(_tamper(sealed(csd), b"<cfdi:Emisor ", b'<cfdi:Emisor Apodo="X" '), csd)
    code, text = await rejection(pac, xml)
    assert code == "301" and "estructura" in text
    assert (await pac.put("/admin/config", json={"xsd": False})).json() == {"xsd": False, "rules": True}
    response = await post(pac, xml)
    assert response.json()["status"] == "success"
    assert (await pac.put("/admin/config", json={"xsd": "no"})).status_code == 400


async def test_fast_mode_from_the_environment(tmp_path):
    port = free_port()
    proc = start_sandbox(tmp_path, port, TIMBRA_PAC_FAST="1")
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/admin/config").json() == {"xsd": False, "rules": True}
    finally:
        proc.terminate()
        proc.wait(10)


async def test_token_endpoints_like_sws(pac, sandbox):
    async with httpx.AsyncClient(base_url=sandbox) as anonymous:
        assert (await post(anonymous, b"<x/>")).json()["message"].startswith("AU4101")
        bad = await anonymous.post("/security/authenticate", headers={"user": "demo", "password": "wrong"})
        assert bad.status_code == 401 and bad.json()["message"].startswith("AU2000")
        ok = (await anonymous.post("/security/authenticate", headers={"user": "demo", "password": "123456789"})).json()
        assert ok["status"] == "success" and ok["data"]["tokeny_type"] == "Bearer" and ok["data"]["expires_in"] > time.time()
        v2 = (await anonymous.post("/v2/security/authenticate", json={"user": "demo", "password": "123456789"})).json()
        for token in (ok["data"]["token"], v2["data"]["token"]):
            lookup = await anonymous.get("/cfdi33/stamp/status", params={"customid": "x"}, headers={"Authorization": f"Bearer {token}"})
            assert lookup.status_code == 404  # authenticated, just nothing there


async def test_outage_as_503_error_rate_and_latency(pac, csd):
    await pac.put("/admin/faults", json={"mode": "outage"})
    response = await post(pac, sealed(csd))
    assert response.status_code == 503 and response.json()["message"] == "SAT no disponible"
    assert (await pac.get("/cfdi33/stamp/status", params={"customid": "x"})).status_code == 503
    await pac.put("/admin/faults", json={"mode": "none", "error_rate": 1.0})
    assert (await post(pac, sealed(csd))).status_code in (500, 503)
    await pac.put("/admin/faults", json={"error_rate": 0.0, "latency_ms": 300})
    started = time.perf_counter()
    assert (await post(pac, sealed(csd))).json()["status"] == "success"
    assert time.perf_counter() - started >= 0.3
    assert (await pac.put("/admin/faults", json={"mode": "bogus"})).status_code == 400


async def test_timeout_after_stamp_stamps_then_never_answers_in_time(pac, csd):
    await pac.put("/admin/faults", json={"mode": "timeout_after_stamp", "timeout_s": 2})
    before = (await pac.get("/healthz")).json()["stamps"]
    with pytest.raises(httpx.ReadTimeout):
        await post(pac, sealed(csd), "inv-tas", timeout=0.5)
    assert (await pac.get("/healthz")).json()["stamps"] == before + 1
    found = await pac.get("/cfdi33/stamp/status", params={"customid": "inv-tas"})
    assert found.status_code == 200 and UUID_V4.match(found.json()["data"]["uuid"])


async def test_timeout_before_stamping_stamps_nothing(pac, csd):
    await pac.put("/admin/faults", json={"mode": "timeout", "timeout_s": 2})
    before = (await pac.get("/healthz")).json()["stamps"]
    with pytest.raises(httpx.ReadTimeout):
        await post(pac, sealed(csd), "inv-to", timeout=0.5)
    assert (await pac.get("/healthz")).json()["stamps"] == before
    assert (await pac.get("/cfdi33/stamp/status", params={"customid": "inv-to"})).status_code == 404


async def test_reject_mode_answers_a_sat_code(pac, csd):
    await pac.put("/admin/faults", json={"mode": "reject", "reject_code": "CFDI40139"})
    code, text = await rejection(pac, sealed(csd))
    assert code == "CFDI40139" and "Nombre del emisor" in text


async def test_outage_as_connection_refused_then_back(sandbox, csd):
    xml = sealed(csd)
    async with httpx.AsyncClient(base_url=sandbox, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as pac:
        assert (await pac.get("/healthz")).status_code == 200  # a kept-alive connection, to be dropped too
        # Long enough that both refused calls land inside it on a loaded CI machine.
        assert (await pac.put("/admin/faults", json={"mode": "refuse", "refuse_for_s": 6})).status_code == 200
        await asyncio.sleep(0.4)
        with pytest.raises(httpx.ConnectError):
            await post(pac, xml)
        async with httpx.AsyncClient(base_url=sandbox) as fresh:
            with pytest.raises(httpx.ConnectError):
                await fresh.get("/healthz")
        deadline = time.monotonic() + 20
        while True:
            try:
                health = (await pac.get("/healthz")).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the sandbox never listened again"
                await asyncio.sleep(0.2)
        assert health["faults"]["mode"] == "none"
        assert (await post(pac, xml)).json()["status"] == "success"


async def test_repeated_cfdi_gets_307_after_a_restart(tmp_path, csd):
    port = free_port()
    xml = sealed(csd)
    proc = start_sandbox(tmp_path, port)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    files = {"xml": ("cfdi.xml", xml, "text/xml")}
    try:
        first = httpx.post(f"http://127.0.0.1:{port}/cfdi33/stamp/v4", files=files, headers=headers).json()["data"]
    finally:
        proc.terminate()
        proc.wait(10)
    proc = start_sandbox(tmp_path, port)
    try:
        again = httpx.post(f"http://127.0.0.1:{port}/cfdi33/stamp/v4", files=files, headers=headers).json()
        assert again["message"].startswith("307.") and again["data"]["uuid"] == first["uuid"]
    finally:
        proc.terminate()
        proc.wait(10)
