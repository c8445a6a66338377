"""The ingress proxy with its upstreams (issuer-profile's key exchange and the services) replaced
by an ``httpx.MockTransport``."""

import functools
import json

import httpx
import pytest

from timbra_shared import ingress
from timbra_shared.auth import PRINCIPAL_HEADER
from timbra_shared.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ingress uses @app.on_event

REAL_ASYNC_CLIENT = httpx.AsyncClient
URLS = {"issuer-profile": "http://issuers.test", "cfdi-builder": "http://builder.test", "stamping": "http://stamping.test"}
SECRET = "ingress-secret"


class Upstreams:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.exchange_status = 200
        self.exchange_error: Exception | None = None
        self.service_error: Exception | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "issuers.test" and request.url.path == "/internal/v1/auth/exchange":
            if self.exchange_error:
                raise self.exchange_error
            if self.exchange_status != 200:
                return httpx.Response(self.exchange_status, json={"ok": False, "message": "x", "code": "x", "errors": []})
            key = json.loads(request.content)["key"]
            return httpx.Response(200, json={"token": f"token-for-{key}"})
        if self.service_error:
            raise self.service_error
        return httpx.Response(
            201,
            json={"path": request.url.path, "query": request.url.query.decode()},
            headers={"x-upstream": request.url.host, "connection": "keep-alive"},
        )

    def exchanges(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/internal/v1/auth/exchange"]

    def forwarded(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/internal/v1/auth/exchange"]


@pytest.fixture
def upstreams(monkeypatch) -> Upstreams:
    up = Upstreams()
    monkeypatch.setattr(ingress.httpx, "AsyncClient", functools.partial(REAL_ASYNC_CLIENT, transport=httpx.MockTransport(up)))
    return up


@pytest.fixture
async def client(upstreams):
    settings = Settings(TIMBRA_SERVICE_NAME="ingress", TIMBRA_SERVICE_URLS=json.dumps(URLS), TIMBRA_INTERNAL_SECRET=SECRET)
    app = ingress.create_app(settings)
    async with REAL_ASYNC_CLIENT(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        yield c


async def test_bearer_key_is_exchanged_for_a_principal_token(client, upstreams):
    response = await client.post("/v1/invoices", json={"items": []}, headers={"Authorization": "Bearer tk_live_abc"})
    assert response.status_code == 201
    (exchange,) = upstreams.exchanges()
    assert json.loads(exchange.content) == {"key": "tk_live_abc"}
    assert exchange.headers["x-timbra-internal"] == SECRET
    (forwarded,) = upstreams.forwarded()
    assert forwarded.url.host == "builder.test" and forwarded.method == "POST"
    assert forwarded.headers[PRINCIPAL_HEADER] == "token-for-tk_live_abc"
    assert "authorization" not in forwarded.headers
    assert json.loads(forwarded.content) == {"items": []}


async def test_a_client_cannot_send_its_own_principal(client, upstreams):
    await client.get("/v1/invoices", headers={PRINCIPAL_HEADER: "forged-admin-token"})
    (forwarded,) = upstreams.forwarded()
    assert PRINCIPAL_HEADER not in forwarded.headers
    await client.get("/v1/invoices", headers={PRINCIPAL_HEADER: "forged-admin-token", "Authorization": "Bearer tk_live_abc"})
    assert upstreams.forwarded()[-1].headers[PRINCIPAL_HEADER] == "token-for-tk_live_abc"


async def test_tokens_are_cached_per_key(client, upstreams):
    for _ in range(3):
        await client.get("/v1/invoices", headers={"Authorization": "Bearer tk_live_abc"})
    await client.get("/v1/invoices", headers={"Authorization": "Bearer tk_live_other"})
    assert [json.loads(r.content)["key"] for r in upstreams.exchanges()] == ["tk_live_abc", "tk_live_other"]


async def test_an_invalid_key_is_401_and_nothing_is_forwarded(client, upstreams):
    upstreams.exchange_status = 401
    response = await client.get("/v1/invoices", headers={"Authorization": "Bearer tk_live_revoked"})
    assert response.status_code == 401
    assert response.json() == {"ok": False, "message": "La llave de API no es válida o fue revocada.", "code": "unauthorized", "errors": []}
    assert upstreams.forwarded() == []


async def test_auth_service_down_is_503(client, upstreams):
    upstreams.exchange_error = httpx.ConnectError("refused")
    response = await client.get("/v1/invoices", headers={"Authorization": "Bearer tk_live_abc"})
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert upstreams.forwarded() == []


async def test_auth_service_error_is_503_not_401(client, upstreams):
    upstreams.exchange_status = 503
    response = await client.get("/v1/invoices", headers={"Authorization": "Bearer tk_live_abc"})
    assert response.status_code == 503


async def test_upstream_down_is_503_naming_the_service(client, upstreams):
    upstreams.service_error = httpx.ConnectError("refused")
    response = await client.get("/v1/invoices/inv_1/xml")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "unavailable" and "stamping" in body["message"]


async def test_unknown_route_is_404(client, upstreams):
    response = await client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "message": "Ruta no encontrada.", "code": "http_404", "errors": []}
    assert upstreams.requests == []


async def test_route_to_a_service_without_url_is_404(client, upstreams):
    response = await client.get("/v1/billing/balance")
    assert response.status_code == 404
    assert upstreams.requests == []


async def test_response_status_body_and_headers_are_relayed(client, upstreams):
    response = await client.get("/v1/invoices/inv_1/xml", params={"download": "1"})
    assert response.status_code == 201
    assert response.json() == {"path": "/v1/invoices/inv_1/xml", "query": "download=1"}
    assert response.headers["x-upstream"] == "stamping.test"
