"""``SwSapienClient`` against a local fake of SW Sapien's published REST contract: a real HTTP
server on loopback (uvicorn), not a mock transport. The fake follows developers.sw.com.mx:
``POST /v2/security/authenticate`` (JSON user/password → ``data.token``, ``expires_in``),
``POST /v4/cfdi33/stamp/v4`` (multipart ``xml``, ``Authorization: Bearer``, ``customid``),
the envelope ``{status, message, messageDetail, data}``, 307 with the earlier stamp, coded errors."""

import asyncio
import hashlib
import secrets
import socket
import time
import uuid as uuidlib

import pytest
import uvicorn
from fastapi import FastAPI, Header, Request, UploadFile
from fastapi.responses import JSONResponse

from timbra_stamping.adapters.sw_sapien import SwSapienClient
from timbra_stamping.domain.pac import PacRejected, PacUnavailable

USER, PASSWORD = "integrador@example.com", "s3cret-Pa55"
XML = '<?xml version="1.0" encoding="UTF-8"?><cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Folio="{folio}" Sello="abc" Total="232.00"/>'


def envelope(status_code: int, status: str, message: str | None = None, detail: str | None = None, data: dict | None = None) -> JSONResponse:
    return JSONResponse({"data": data, "status": status, "message": message, "messageDetail": detail}, status_code=status_code)


class FakeSw:
    """SW Sapien's stamp API as documented, with knobs for the error paths."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.tokens: dict[str, float] = {}
        self.stamps: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.auth_calls: list[dict] = []
        self.next_error: tuple[int, str, str | None] | None = None
        self.sleep_s = 0.0
        app = self.app

        @app.post("/v2/security/authenticate")
        async def authenticate(request: Request) -> JSONResponse:
            body = await request.json()
            self.auth_calls.append({"content_type": request.headers.get("content-type"), **body})
            if body.get("user") != USER or body.get("password") != PASSWORD:
                return envelope(400, "error", "AU2000 - El usuario y/o contraseña son inválidos, no se puede autenticar el servicio.")
            token = secrets.token_urlsafe(24)
            self.tokens[token] = time.time() + 7200
            return envelope(200, "success", data={"token": token, "expires_in": int(time.time()) + 7200, "tokeny_type": "Bearer"})

        @app.post("/v4/cfdi33/stamp/v4")
        async def stamp(request: Request, xml: UploadFile, authorization: str | None = Header(None), customid: str | None = Header(None)) -> JSONResponse:
            raw = await xml.read()
            self.requests.append({"authorization": authorization, "customid": customid, "xml": raw, "filename": xml.filename,
                                  "content_type": request.headers.get("content-type")})
            token = (authorization or "").removeprefix("Bearer ").strip()
            if self.tokens.get(token, 0) < time.time() and token != "infinite-jwt":
                return envelope(401, "error", "AU4101 - El token proporcionado no es válido.")
            if self.sleep_s:
                await asyncio.sleep(self.sleep_s)
            if self.next_error is not None:
                status_code, message, detail = self.next_error
                self.next_error = None
                return envelope(status_code, "error", message, detail)
            digest = hashlib.sha256(raw).hexdigest()
            if digest in self.stamps:
                return envelope(200, "error", "307. El comprobante contiene un timbre previo.", None, self.stamps[digest])
            stamp_uuid = str(uuidlib.uuid4())
            cfdi = raw.decode().replace("/>", f'><cfdi:Complemento><tfd:TimbreFiscalDigital xmlns:tfd="http://www.sat.gob.mx/TimbreFiscalDigital" UUID="{stamp_uuid}"/></cfdi:Complemento></cfdi:Comprobante>')
            data = {
                "cadenaOriginalSAT": f"||1.1|{stamp_uuid}|2025-06-15T12:00:05|SPR190613I52|abc|30001000000400002495||",
                "noCertificadoSAT": "30001000000400002495", "noCertificadoCFDI": "30001000000400002434",
                "uuid": stamp_uuid, "selloSAT": "c2VsbG9TQVQ=", "selloCFDI": "abc", "fechaTimbrado": "2025-06-15T12:00:05",
                "qrCode": "iVBORw0KGgo=", "cfdi": cfdi,
            }
            self.stamps[digest] = data
            return envelope(200, "success", data=data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def sw():
    fake = FakeSw()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    server.should_exit = True
    await task


@pytest.fixture
async def client(sw):
    c = SwSapienClient(sw.url, user=USER, password=PASSWORD, timeout=2)
    yield c
    await c.aclose()


async def test_request_shape_and_authentication(client, sw):
    xml = XML.format(folio=1).encode()
    await client.stamp(xml, idempotency_id="inv_1")
    await client.stamp(XML.format(folio=2).encode(), idempotency_id="inv_2")
    assert sw.auth_calls == [{"content_type": "application/json", "user": USER, "password": PASSWORD}]  # one token, reused
    first = sw.requests[0]
    (token,) = sw.tokens
    assert first["authorization"] == f"Bearer {token}"
    assert first["customid"] == "inv_1"
    assert first["content_type"].startswith("multipart/form-data; boundary=")
    assert first["xml"] == xml  # the sealed XML, byte for byte
    assert [r["customid"] for r in sw.requests] == ["inv_1", "inv_2"]


async def test_success_returns_the_cfdi_as_sw_sent_it(client, sw):
    result = await client.stamp(XML.format(folio=3).encode(), idempotency_id="inv_3")
    (data,) = sw.stamps.values()
    assert result.uuid == data["uuid"] and result.fecha_timbrado == "2025-06-15T12:00:05"
    assert result.xml == data["cfdi"].encode() and result.previous is False


async def test_307_duplicate_returns_the_earlier_stamp(client, sw):
    xml = XML.format(folio=4).encode()
    first = await client.stamp(xml, idempotency_id="inv_4")
    again = await client.stamp(xml, idempotency_id="inv_4")
    assert again.previous is True
    assert (again.uuid, again.xml) == (first.uuid, first.xml)
    assert len(sw.stamps) == 1


@pytest.mark.parametrize(("status_code", "message", "detail", "code", "text"), [
    (400, "CFDI40108 - El campo SubTotal no es igual a la suma de los importes de los conceptos.", None, "CFDI40108",
     "El campo SubTotal no es igual a la suma de los importes de los conceptos."),
    (400, "CFDI40102 - El resultado de la digestión debe ser igual al resultado de la desencripción del sello.", "Sello inválido", "CFDI40102",
     "El resultado de la digestión debe ser igual al resultado de la desencripción del sello."),
    (400, "301 - La estructura del comprobante es incorrecta.", "Falta el atributo Moneda", "301", "La estructura del comprobante es incorrecta."),
    (400, "CFDI3307 - Timbre duplicado.", None, "CFDI3307", "Timbre duplicado."),
])
async def test_error_codes_are_permanent_rejections(client, sw, status_code, message, detail, code, text):
    sw.next_error = (status_code, message, detail)
    with pytest.raises(PacRejected) as info:
        await client.stamp(XML.format(folio=5).encode(), idempotency_id="inv_5")
    assert (info.value.code, info.value.message, info.value.detail) == (code, text, detail)


@pytest.mark.parametrize(("status_code", "message", "maybe_stamped"), [
    (500, "Error interno", True),
    (502, "Bad gateway", True),
    (503, "SAT no disponible", False),
])
async def test_server_errors_are_transient(client, sw, status_code, message, maybe_stamped):
    sw.next_error = (status_code, message, None)
    with pytest.raises(PacUnavailable) as info:
        await client.stamp(XML.format(folio=6).encode(), idempotency_id="inv_6")
    assert info.value.maybe_stamped is maybe_stamped


async def test_an_expired_token_is_renewed_once(client, sw):
    await client.stamp(XML.format(folio=7).encode(), idempotency_id="inv_7")
    sw.tokens.clear()  # SW revoked or expired it early
    result = await client.stamp(XML.format(folio=8).encode(), idempotency_id="inv_8")
    assert result.uuid and len(sw.auth_calls) == 2
    assert [r["customid"] for r in sw.requests] == ["inv_7", "inv_8", "inv_8"]


async def test_bad_credentials_are_transient_not_the_invoices_fault(sw):
    client = SwSapienClient(sw.url, user=USER, password="wrong", timeout=2)
    with pytest.raises(PacUnavailable, match="autenticación"):
        await client.stamp(XML.format(folio=9).encode(), idempotency_id="inv_9")
    assert sw.requests == []
    await client.aclose()


async def test_an_infinite_token_skips_authentication(sw):
    client = SwSapienClient(sw.url, token="infinite-jwt", timeout=2)
    await client.stamp(XML.format(folio=10).encode(), idempotency_id="inv_10")
    assert sw.auth_calls == [] and sw.requests[0]["authorization"] == "Bearer infinite-jwt"
    await client.aclose()


async def test_a_timeout_may_have_stamped_and_a_resend_recovers_it(client, sw):
    xml = XML.format(folio=11).encode()
    sw.sleep_s = 3  # longer than the client's 2 s: SW stamps, the answer never arrives
    with pytest.raises(PacUnavailable) as info:
        await client.stamp(xml, idempotency_id="inv_11")
    assert info.value.maybe_stamped is True
    await asyncio.sleep(1.2)
    sw.sleep_s = 0
    assert await client.lookup("inv_11") is None  # SW has no lookup by customid...
    again = await client.stamp(xml, idempotency_id="inv_11")  # ...re-sending is its recovery: 307
    assert again.previous is True and len(sw.stamps) == 1


def test_customid_is_limited_to_100_characters():
    client = SwSapienClient("http://127.0.0.1:9", token="t")
    with pytest.raises(ValueError):
        asyncio.run(client.stamp(b"<x/>", idempotency_id="x" * 101))
