"""The HTTP edge: one public port in front of every service's own routes.

It routes by path to the service that owns the resource, authenticates the bearer key once
(exchanging it at issuer-profile for a short-lived signed principal, cached briefly), starts the
request's trace, and merges the services' OpenAPI documents. It holds no business logic.
"""

import asyncio
import hashlib
import os
import re
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace

from timbra_shared.auth import PRINCIPAL_HEADER
from timbra_shared.logging import configure_logging, get_logger
from timbra_shared.settings import Settings
from timbra_shared.telemetry import carrier_from_current, setup_telemetry, tracer

log = get_logger(__name__)

# (method or None for any, path pattern, owning service); first match wins.
ROUTES: list[tuple[str | None, re.Pattern[str], str]] = [
    (m, re.compile(p), s)
    for m, p, s in [
        ("GET", r"^/v1/invoices/[^/]+/xml$", "stamping"),
        ("GET", r"^/v1/invoices/[^/]+/stamping$", "stamping"),
        ("GET", r"^/v1/invoices/[^/]+/pdf$", "notifier"),
        ("POST", r"^/v1/invoices/[^/]+/email$", "notifier"),
        ("GET", r"^/v1/invoices/[^/]+/email$", "notifier"),
        ("POST", r"^/v1/invoices/preview/pdf$", "notifier"),
        (None, r"^/v1/issuers/me/email-template$", "notifier"),
        (None, r"^/v1/webhooks(/|$)", "notifier"),
        ("DELETE", r"^/v1/invoices/[^/]+$", "cancellation"),
        (None, r"^/v1/invoices/[^/]+/cancellation", "cancellation"),
        (None, r"^/v1/invoices", "cfdi-builder"),
        (None, r"^/v1/issuers", "issuer-profile"),
        (None, r"^/v1/(sessions|staff)(/|$)", "issuer-profile"),
        (None, r"^/v1/billing", "billing"),
        (None, r"^/v1/(customers|products|catalogs|branches|tickets)", "catalog"),
    ]
]

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-authorization", "host", "content-length"}
KEY_CACHE_TTL_S = 60.0  # a revoked key keeps working at most this long; TIMBRA_KEY_CACHE_TTL overrides it


def route_for(method: str, path: str) -> str | None:
    for route_method, pattern, service in ROUTES:
        if (route_method is None or route_method == method) and pattern.search(path):
            return service
    return None


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "message": message, "code": code, "errors": []}, status_code=status)


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="Timbra API", openapi_url=None, docs_url=None, redoc_url=None)
    urls = settings.service_urls
    client = httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=4.0))
    tokens: dict[str, tuple[float, str]] = {}
    cache_ttl = float(os.environ.get("TIMBRA_KEY_CACHE_TTL", KEY_CACHE_TTL_S))
    http_tracer = tracer("timbra.ingress")

    async def principal_token(key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        cached = tokens.get(digest)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        response = await client.post(
            f"{urls['issuer-profile']}/internal/v1/auth/exchange",
            json={"key": key},
            headers={"x-timbra-internal": settings.internal_secret},
        )
        if response.status_code in (401, 403):
            return None
        if response.status_code != 200:
            raise httpx.HTTPStatusError(f"key exchange answered {response.status_code}", request=response.request, response=response)
        token = response.json()["token"]
        if len(tokens) > 50_000:
            tokens.clear()
        tokens[digest] = (time.monotonic() + cache_ttl, token)
        return token

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        async def probe(name: str, url: str) -> tuple[str, bool]:
            try:
                return name, (await client.get(f"{url}/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return name, False

        results = dict(await asyncio.gather(*(probe(n, u) for n, u in urls.items())))
        ok = all(results.values())
        return JSONResponse({"ok": ok, "services": results}, status_code=200 if ok else 503)

    @app.get("/openapi.json")
    async def openapi() -> JSONResponse:
        merged: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": "Timbra API", "version": "1"}, "paths": {}, "components": {"schemas": {}}}
        for url in urls.values():
            try:
                doc = (await client.get(f"{url}/openapi.json", timeout=5)).json()
            except (httpx.HTTPError, ValueError):
                continue
            for path, item in doc.get("paths", {}).items():
                if path.startswith("/v1/"):
                    merged["paths"].setdefault(path, {}).update(item)
            merged["components"]["schemas"].update(doc.get("components", {}).get("schemas", {}))
        merged["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        merged["security"] = [{"bearer": []}]
        return JSONResponse(merged)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def proxy(path: str, request: Request) -> Response:
        full_path = "/" + path
        service = route_for(request.method, full_path)
        if service is None or service not in urls:
            return error(404, "http_404", "Ruta no encontrada.")
        with http_tracer.start_as_current_span(f"{request.method} {full_path}", kind=trace.SpanKind.SERVER, attributes={"http.method": request.method, "http.target": full_path, "timbra.service": service}) as span:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS and k.lower() != PRINCIPAL_HEADER and k.lower() != "authorization"}
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                try:
                    token = await principal_token(auth[7:].strip())
                except httpx.HTTPError:
                    return error(503, "unavailable", "El servicio de autenticación no está disponible; intenta de nuevo.")
                if token is None:
                    return error(401, "unauthorized", "La llave de API no es válida o fue revocada.")
                headers[PRINCIPAL_HEADER] = token
            headers.update(carrier_from_current())
            try:
                upstream = await client.request(request.method, f"{urls[service]}{full_path}", params=request.query_params, content=await request.body(), headers=headers)
            except httpx.HTTPError as exc:
                log.warning("ingress.upstream_failed", service=service, error=repr(exc))
                return error(503, "unavailable", f"El servicio {service} no está disponible; intenta de nuevo en unos segundos.")
            span.set_attribute("http.status_code", upstream.status_code)
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS and k.lower() != "content-encoding"}
            return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)

    @app.on_event("shutdown")
    async def _close() -> None:
        await client.aclose()

    return app


def main() -> None:
    settings = Settings(TIMBRA_SERVICE_NAME="ingress")
    configure_logging("ingress", settings.log_level)
    setup_telemetry("ingress", settings.trace_dir, settings.otlp_endpoint)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_level="warning", access_log=False, timeout_keep_alive=30)


if __name__ == "__main__":
    main()
