"""``SandboxPacClient``'s HTTP mapping, against an ``httpx.MockTransport`` (no server)."""

import json

import httpx
import pytest

from timbra_shared.testing import httpx_through
from timbra_stamping.adapters.sandbox_pac import SandboxPacClient
from timbra_stamping.domain.pac import PacRejected, PacUnavailable

XML = b'<?xml version="1.0" encoding="UTF-8"?><cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Total="232.00"/>'
STAMPED = '<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Total="232.00"><cfdi:Complemento/></cfdi:Comprobante>'
UUID = "5FB2822E-396D-4725-8521-CDC4BDD20CCF"
DATA = {"cfdi": STAMPED, "uuid": UUID, "fechaTimbrado": "2025-06-15T12:00:05", "noCertificadoSAT": "30001000000500003456", "selloSAT": "x", "selloCFDI": "y"}


def envelope(status: str, message: str = "", detail: str = "", data=None) -> dict:
    return {"status": status, "message": message, "messageDetail": detail, "data": data}


@pytest.fixture
def pac_server(monkeypatch):
    """Route the client's requests to a handler; collects the requests it got."""
    state = {"handler": None, "requests": []}

    def dispatch(request: httpx.Request) -> httpx.Response:
        state["requests"].append(request)
        return state["handler"](request)

    transport = httpx.MockTransport(dispatch)
    httpx_through(monkeypatch, transport)
    return state


@pytest.fixture
async def client(pac_server):
    c = SandboxPacClient("http://pac.test", token="tok-123", timeout=5)
    yield c
    await c.aclose()


def answer(status_code: int, body: dict | str) -> callable:
    def handler(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status_code, text=body)
        return httpx.Response(status_code, json=body)

    return handler


async def test_success(client, pac_server):
    pac_server["handler"] = answer(200, envelope("success", data=DATA))
    result = await client.stamp(XML, idempotency_id="inv_1")
    assert result.uuid == UUID
    assert result.xml == STAMPED.encode()
    assert result.fecha_timbrado == "2025-06-15T12:00:05"
    assert result.previous is False


async def test_request_shape(client, pac_server):
    pac_server["handler"] = answer(200, envelope("success", data=DATA))
    await client.stamp(XML, idempotency_id="inv_42")
    (request,) = pac_server["requests"]
    assert request.method == "POST"
    assert str(request.url) == "http://pac.test/cfdi33/stamp/v4"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["customid"] == "inv_42"
    assert request.headers["content-type"].startswith("multipart/form-data")
    body = request.read()
    assert b'name="xml"; filename="cfdi.xml"' in body
    assert XML in body


async def test_timbre_previo_returns_the_earlier_stamp(client, pac_server):
    pac_server["handler"] = answer(200, envelope("error", "307. El comprobante contiene un timbre previo.", data=DATA))
    result = await client.stamp(XML, idempotency_id="inv_1")
    assert result.previous is True
    assert result.uuid == UUID and result.xml == STAMPED.encode()


async def test_sat_rejection_carries_its_code(client, pac_server):
    detail = "El resultado de la digestión debe ser igual al resultado de la desencripción del sello."
    pac_server["handler"] = answer(400, envelope("error", "CFDI40102 - El resultado de la digestión debe ser igual al resultado de la desencripción del sello.", detail))
    with pytest.raises(PacRejected) as info:
        await client.stamp(XML, idempotency_id="inv_1")
    assert info.value.code == "CFDI40102"
    assert info.value.message == detail  # the text after the code
    assert info.value.detail == detail and info.value.source == "sat"


@pytest.mark.parametrize(
    ("message", "detail", "code", "text"),
    [
        ("301. XML mal formado: falta Emisor", "", "301", "XML mal formado: falta Emisor"),
        ("CFDI40101 - El campo Fecha excede las 72 horas previas a la certificación.", "", "CFDI40101", "El campo Fecha excede las 72 horas previas a la certificación."),
        ("", "", "PAC", "El PAC rechazó el comprobante."),
    ],
)
async def test_other_rejections(client, pac_server, message, detail, code, text):
    pac_server["handler"] = answer(400, envelope("error", message, detail))
    with pytest.raises(PacRejected) as info:
        await client.stamp(XML, idempotency_id="inv_1")
    assert (info.value.code, info.value.message) == (code, text)


@pytest.mark.parametrize("status_code", [500, 502, 503, 504])
async def test_server_errors_are_transient(client, pac_server, status_code):
    pac_server["handler"] = answer(status_code, envelope("error", "SAT no disponible", "El servicio del SAT no está disponible temporalmente."))
    with pytest.raises(PacUnavailable):
        await client.stamp(XML, idempotency_id="inv_1")


async def test_server_error_with_a_html_body_is_transient(client, pac_server):
    pac_server["handler"] = answer(502, "<html>Bad gateway</html>")
    with pytest.raises(PacUnavailable):
        await client.stamp(XML, idempotency_id="inv_1")


@pytest.mark.parametrize(("error", "maybe_stamped"), [
    (httpx.ConnectError("refused"), False),
    (httpx.ConnectTimeout("syn lost"), False),
    (httpx.ReadTimeout("slow"), True),
    (httpx.RemoteProtocolError("eof"), True),
], ids=lambda e: type(e).__name__ if isinstance(e, Exception) else str(e))
async def test_network_errors_are_transient_and_say_whether_the_pac_may_have_stamped(client, pac_server, error, maybe_stamped):
    def handler(request):
        raise error

    pac_server["handler"] = handler
    with pytest.raises(PacUnavailable) as info:
        await client.stamp(XML, idempotency_id="inv_1")
    assert isinstance(info.value.__cause__, httpx.HTTPError)
    assert info.value.maybe_stamped is maybe_stamped


async def test_sat_no_disponible_503_did_not_stamp(client, pac_server):
    pac_server["handler"] = answer(503, envelope("error", "SAT no disponible"))
    with pytest.raises(PacUnavailable) as info:
        await client.stamp(XML, idempotency_id="inv_1")
    assert info.value.maybe_stamped is False


async def test_a_sat_unavailable_message_on_a_4xx_is_still_transient(client, pac_server):
    pac_server["handler"] = answer(400, envelope("error", "CFDI40999 - El servicio del SAT no está disponible, intente más tarde."))
    with pytest.raises(PacUnavailable):
        await client.stamp(XML, idempotency_id="inv_1")


async def test_timbre_previo_without_data_is_fetched_by_custom_id(client, pac_server):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json=envelope("error", "307. El comprobante contiene un timbre previo."))
        assert request.url.path == "/cfdi33/stamp/status" and request.url.params["customid"] == "inv_1"
        return httpx.Response(200, json=envelope("success", data=DATA))

    pac_server["handler"] = handler
    result = await client.stamp(XML, idempotency_id="inv_1")
    assert result.previous is True and result.uuid == UUID


async def test_lookup_found_and_not_found(client, pac_server):
    pac_server["handler"] = answer(200, envelope("success", data=DATA))
    found = await client.lookup("inv_1")
    assert found is not None and found.previous and found.xml == STAMPED.encode()
    assert pac_server["requests"][0].headers["authorization"] == "Bearer tok-123"
    pac_server["handler"] = answer(404, envelope("error", "No se encontró un timbre previo."))
    assert await client.lookup("inv_2") is None
    pac_server["handler"] = answer(503, envelope("error", "SAT no disponible"))
    with pytest.raises(PacUnavailable):
        await client.lookup("inv_3")


@pytest.mark.parametrize("status_code", [401, 403])
async def test_authentication_failures_are_transient_not_the_invoices_fault(client, pac_server, status_code):
    pac_server["handler"] = answer(status_code, envelope("error", "AU4101 - El token proporcionado no es válido."))
    with pytest.raises(PacUnavailable):
        await client.stamp(XML, idempotency_id="inv_1")


async def test_a_non_json_answer_is_transient(client, pac_server):
    pac_server["handler"] = answer(200, "OK")
    with pytest.raises(PacUnavailable):
        await client.stamp(XML, idempotency_id="inv_1")


async def test_rate_limiting_is_transient(client, pac_server):
    pac_server["handler"] = answer(429, envelope("error", "Too many requests"))
    with pytest.raises(PacUnavailable):
        await client.stamp(XML, idempotency_id="inv_1")


async def test_the_response_json_is_parsed_not_guessed(client, pac_server):
    pac_server["handler"] = lambda _r: httpx.Response(200, content=json.dumps(envelope("success", data=DATA)).encode(), headers={"content-type": "text/plain"})
    assert (await client.stamp(XML, idempotency_id="inv_1")).uuid == UUID
