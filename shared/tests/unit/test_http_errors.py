"""The uniform HTTP face of every service (``timbra_shared.http.create_app``): error format,
Spanish validation messages with field paths, authentication and ``/metrics``."""

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends
from prometheus_client import CollectorRegistry, Counter

from timbra_shared.auth import PRINCIPAL_HEADER, Principal, current_principal, issuer_principal, sign_token
from timbra_shared.errors import ApiError, Problem, not_found
from timbra_shared.events import InvoiceRequest
from timbra_shared.http import create_app, validation_problems

SECRET = "http-test-secret"
PRODUCT = {"description": "Servicio", "product_key": "01010101", "unit_key": "E48", "price": "100.00"}
CUSTOMER = {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991"}


def _router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/invoices")
    async def create(body: InvoiceRequest, principal: Annotated[Principal, Depends(current_principal)]) -> dict:
        return {"ok": True, "issuer_id": principal.issuer_id, "items": len(body.items), "global": body.global_info is not None}

    @router.get("/v1/invoices")
    async def page(principal: Annotated[Principal, Depends(issuer_principal)], limit: int = 10) -> dict:
        return {"limit": limit, "issuer_id": principal.issuer_id}

    @router.get("/v1/boom/api")
    async def api_error() -> dict:
        raise ApiError(409, "conflict", "Ya existe.", [Problem("TIMBRA_DUP", "Duplicado", path="idempotency_key")])

    @router.get("/v1/boom/missing")
    async def missing() -> dict:
        raise not_found("Factura")

    @router.get("/v1/boom/crash")
    async def crash() -> dict:
        raise RuntimeError("secret internals")

    return router


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(registry):
    app = create_app(service="unit", routers=[_router()], registry=registry, internal_secret=SECRET)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as c:
        yield c


def _auth(principal: Principal | None = None) -> dict[str, str]:
    return {PRINCIPAL_HEADER: sign_token(principal or Principal(kind="issuer", issuer_id="iss_1"), SECRET)}


def _assert_error_shape(body: dict) -> None:
    assert set(body) == {"ok", "message", "code", "errors"}
    assert body["ok"] is False
    assert isinstance(body["message"], str) and body["message"]


async def test_valid_request_passes(client):
    response = await client.post("/v1/invoices", json={"customer": CUSTOMER, "items": [{"product": PRODUCT}]}, headers=_auth())
    assert response.status_code == 200
    assert response.json() == {"ok": True, "issuer_id": "iss_1", "items": 1, "global": False}


async def test_global_alias_reaches_the_handler(client):
    body = {"global": {"periodicity": "01", "months": "01", "year": 2025}, "items": [{"product": PRODUCT}]}
    response = await client.post("/v1/invoices", json=body, headers=_auth())
    assert response.json()["global"] is True


async def test_invalid_json_is_400_invalid_json(client):
    response = await client.post("/v1/invoices", content=b'{"items": [', headers={**_auth(), "content-type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    _assert_error_shape(body)
    assert body["code"] == "invalid_json"
    assert "no es JSON válido" in body["message"]
    assert body["errors"][0]["code"] == "TIMBRA_VALIDATION"


async def test_invalid_json_does_not_pretend_to_have_a_field_path(client):
    response = await client.post("/v1/invoices", content=b'{"items": [', headers={**_auth(), "content-type": "application/json"})
    body = response.json()
    assert body["errors"][0]["path"] is None
    assert body["message"] == "El cuerpo de la solicitud no es JSON válido."


async def test_missing_field_is_422_with_spanish_message_and_path(client):
    response = await client.post("/v1/invoices", json={"customer": {k: v for k, v in CUSTOMER.items() if k != "zip"}, "items": [{"product": PRODUCT}]}, headers=_auth())
    assert response.status_code == 422
    body = response.json()
    _assert_error_shape(body)
    assert body["code"] == "invalid_request"
    assert body["errors"] == [{"message": "customer.zip: Campo obligatorio.", "code": "TIMBRA_VALIDATION", "source": "timbra", "path": "customer.zip"}]
    assert body["message"] == "customer.zip: Campo obligatorio."


async def test_nested_item_errors_have_indexed_paths(client):
    items = [{"product": PRODUCT}, {"product": {**PRODUCT, "price": "abc"}}]
    response = await client.post("/v1/invoices", json={"customer": CUSTOMER, "items": items}, headers=_auth())
    assert response.status_code == 422
    (problem,) = response.json()["errors"]
    assert problem["path"] == "items[1].product.price"
    assert problem["message"] == "items[1].product.price: Debe ser un número decimal."


async def test_several_errors_are_counted_in_the_message(client):
    items = [{"product": {**PRODUCT, "price": "abc", "product_key": "1"}}]
    response = await client.post("/v1/invoices", json={"customer": CUSTOMER, "items": items, "bogus": 1}, headers=_auth())
    body = response.json()
    assert response.status_code == 422
    assert body["message"] == "La solicitud tiene 3 errores."
    assert {p["path"] for p in body["errors"]} == {"items[0].product.price", "items[0].product.product_key", "bogus"}
    messages = {p["path"]: p["message"] for p in body["errors"]}
    assert messages["bogus"] == "bogus: Campo no permitido."
    assert messages["items[0].product.product_key"] == "items[0].product.product_key: No tiene el formato esperado."


async def test_too_many_emails_message_carries_the_limit(client):
    body = {"customer": CUSTOMER, "items": [{"product": PRODUCT}], "emails": [f"u{i}@x.mx" for i in range(11)]}
    problem = (await client.post("/v1/invoices", json=body, headers=_auth())).json()["errors"][0]
    assert problem == {"message": "emails: Tiene demasiados elementos (máximo 10).", "code": "TIMBRA_VALIDATION", "source": "timbra", "path": "emails"}


async def test_literal_error_lists_the_allowed_values(client):
    body = {"customer": CUSTOMER, "items": [{"product": PRODUCT}], "type": "X"}
    problem = (await client.post("/v1/invoices", json=body, headers=_auth())).json()["errors"][0]
    assert problem["path"] == "type"
    assert problem["message"].startswith("type: Valor no permitido; se espera ")
    assert "'I'" in problem["message"]


async def test_query_parameter_errors_have_the_parameter_as_path(client):
    response = await client.get("/v1/invoices", params={"limit": "many"}, headers=_auth())
    assert response.status_code == 422
    assert response.json()["errors"][0] == {"message": "limit: Debe ser un número entero.", "code": "TIMBRA_VALIDATION", "source": "timbra", "path": "limit"}


async def test_api_error_is_returned_as_its_body(client):
    response = await client.get("/v1/boom/api")
    assert response.status_code == 409
    assert response.json() == {
        "ok": False,
        "message": "Ya existe.",
        "code": "conflict",
        "errors": [{"message": "Duplicado", "code": "TIMBRA_DUP", "source": "timbra", "path": "idempotency_key"}],
    }


async def test_not_found_helper(client):
    response = await client.get("/v1/boom/missing")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "message": "Factura no encontrado.", "code": "not_found", "errors": []}


async def test_unknown_route_and_wrong_method_use_the_same_format(client):
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "message": "Ruta no encontrada.", "code": "http_404", "errors": []}
    response = await client.delete("/v1/invoices")
    assert response.status_code == 405
    assert response.json()["code"] == "http_405" and response.json()["message"] == "Método no permitido."


async def test_unexpected_exception_is_500_without_internals(client):
    response = await client.get("/v1/boom/crash")
    assert response.status_code == 500
    body = response.json()
    assert body == {"ok": False, "message": "Error interno; intenta de nuevo.", "code": "internal_error", "errors": []}
    assert "secret internals" not in response.text


async def test_missing_principal_header_is_401(client):
    response = await client.post("/v1/invoices", json={"customer": CUSTOMER, "items": [{"product": PRODUCT}]})
    assert response.status_code == 401
    body = response.json()
    _assert_error_shape(body)
    assert body["code"] == "unauthorized"
    assert "Authorization: Bearer" in body["message"]


async def test_principal_signed_with_another_secret_is_401(client):
    headers = {PRINCIPAL_HEADER: sign_token(Principal(kind="issuer", issuer_id="iss_1"), "not-the-secret")}
    response = await client.get("/v1/invoices", headers=headers)
    assert response.status_code == 401


async def test_issuer_only_route_refuses_staff_with_403(client):
    response = await client.get("/v1/invoices", headers=_auth(Principal(kind="staff", roles=("support",))))
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_responses_carry_a_trace_id(client):
    response = await client.get("/v1/invoices", headers=_auth())
    assert response.status_code == 200
    assert len(response.headers["x-trace-id"]) == 32


async def test_metrics_serves_prometheus_text(client, registry):
    Counter("timbra_unit_things_total", "Things counted by the unit test", ["kind"], registry=registry).labels("a").inc(3)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE timbra_unit_things_total counter" in response.text
    assert 'timbra_unit_things_total{kind="a"} 3.0' in response.text


async def test_healthz_is_503_until_ready(client):
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "service": "unit"}


def test_validation_problems_fall_back_to_pydantic_message_for_unknown_types():
    (problem,) = validation_problems([{"type": "weird_type", "loc": ("body", "a", 0), "msg": "Something odd"}])
    assert problem == {"message": "a[0]: Something odd", "code": "TIMBRA_VALIDATION", "source": "timbra", "path": "a[0]"}


def test_validation_problems_survive_templates_without_context():
    (problem,) = validation_problems([{"type": "greater_than", "loc": ("body", "quantity"), "msg": "x"}])
    assert problem["path"] == "quantity"
    assert problem["message"].startswith("quantity: Debe ser mayor que")


async def test_a_request_continues_the_callers_trace(client):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.get("/v1/invoices", headers={**_auth(), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == trace_id
