"""The HTTP edge: one public port in front of every service's own routes.

It routes by path to the service that owns the resource, authenticates the bearer key once
(exchanging it at issuer-profile for a short-lived signed principal, cached briefly), starts the
request's trace, and merges the services' OpenAPI documents. It holds no business logic.
"""

import asyncio
import hashlib
import hmac
import math
import os
import re
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from opentelemetry import trace

from timbra_shared.apidocs import asyncapi_document, merge_openapi, render_docs
from timbra_shared.auth import CLIENT_IP_HEADER, CLIENT_PROOF_HEADER, PRINCIPAL_HEADER, client_proof
from timbra_shared.http import EVENT_LOOP, install_error_handlers
from timbra_shared.logging import configure_logging, get_logger
from timbra_shared.settings import Settings
from timbra_shared.telemetry import carrier_from_current, setup_telemetry, tracer
from timbra_shared.web import mount_web

log = get_logger(__name__)

# (method or None for any, path pattern, owning service); first match wins.
ROUTES: list[tuple[str | None, re.Pattern[str], str]] = [
    (m, re.compile(p), s)
    for m, p, s in [
        ("GET", r"^/v1/invoices/[^/]+/xml$", "stamping"),
        ("GET", r"^/v1/invoices/[^/]+/stamping$", "stamping"),
        ("GET", r"^/v1/invoices/[^/]+/pdf$", "notifier"),
        ("GET", r"^/v1/invoices/[^/]+/zip$", "notifier"),
        ("POST", r"^/v1/invoices/[^/]+/email$", "notifier"),
        ("GET", r"^/v1/invoices/[^/]+/email$", "notifier"),
        ("POST", r"^/v1/invoices/preview/pdf$", "notifier"),
        ("POST", r"^/v1/invoices/preview/xml$", "notifier"),
        (None, r"^/v1/issuers/me/email-template$", "notifier"),
        (None, r"^/v1/webhooks(/|$)", "notifier"),
        ("DELETE", r"^/v1/invoices/[^/]+$", "cancellation"),
        (None, r"^/v1/invoices/[^/]+/cancellation", "cancellation"),
        (None, r"^/v1/ops/stamping(/|$)", "stamping"),
        (None, r"^/v1/ops/cancellations(/|$)", "cancellation"),
        (None, r"^/v1/ops(/|$)", "cfdi-builder"),
        (None, r"^/v1/invoices", "cfdi-builder"),
        (None, r"^/v1/issuers", "issuer-profile"),
        (None, r"^/v1/(sessions|staff)(/|$)", "issuer-profile"),
        (None, r"^/v1/billing", "billing"),
        (None, r"^/v1/(customers|products|catalogs|branches|tickets)", "catalog"),
        (None, r"^/v1/portal/", "catalog"),  # the self-invoicing portal's public API (docs/portal.md)
    ]
]

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-authorization", "host", "content-length"}
KEY_CACHE_TTL_S = 60.0  # a revoked key keeps working at most this long; TIMBRA_KEY_CACHE_TTL overrides it
# Per API key (or per client address without one), per ingress process: a token bucket refilled at
# TIMBRA_RATE_LIMIT requests per second holding up to TIMBRA_RATE_BURST; 0 turns it off.
RATE_LIMIT_PER_S = 1000.0
OPENAPI_CACHE_S = 30.0


class RateLimiter:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when the request may go on; otherwise the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            if len(self.buckets) > 100_000:
                self.buckets = {k: v for k, v in self.buckets.items() if v[0] + (now - v[1]) * self.rate < self.burst}
            self.buckets[key] = (tokens - 1, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


def route_for(method: str, path: str) -> str | None:
    for route_method, pattern, service in ROUTES:
        if (route_method is None or route_method == method) and pattern.search(path):
            return service
    return None


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "message": message, "code": code, "errors": []}, status_code=status)


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="Timbra API", openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    rate = float(os.environ.get("TIMBRA_RATE_LIMIT", RATE_LIMIT_PER_S))
    limiter = RateLimiter(rate, float(os.environ.get("TIMBRA_RATE_BURST", 2 * rate)))
    documents: dict[str, tuple[float, Any]] = {}
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

    async def merged_openapi() -> dict[str, Any]:
        cached = documents.get("openapi")
        if cached and cached[0] > time.monotonic():
            return cached[1]

        async def fetch(name: str, url: str) -> tuple[str, dict[str, Any] | None]:
            try:
                return name, (await client.get(f"{url}/openapi.json", timeout=5)).json()
            except (httpx.HTTPError, ValueError):
                return name, None

        docs = dict(await asyncio.gather(*(fetch(n, u) for n, u in urls.items())))
        merged = merge_openapi({n: d for n, d in docs.items() if d}, route_for)
        if all(docs.values()):  # a service that did not answer is asked again next time
            documents["openapi"] = (time.monotonic() + OPENAPI_CACHE_S, merged)
        return merged

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(await merged_openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(render_docs(await merged_openapi()))

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        if "asyncapi" not in documents:
            documents["asyncapi"] = (math.inf, await asyncio.to_thread(asyncapi_document))
        return JSONResponse(documents["asyncapi"][1])

    # the web pages (/panel, /portal, /console, /static) go before the catch-all proxy
    mount_web(app, settings)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def proxy(path: str, request: Request) -> Response:
        full_path = "/" + path
        service = route_for(request.method, full_path)
        if service is None or service not in urls:
            return error(404, "http_404", "Ruta no encontrada.")
        auth = request.headers.get("authorization", "")
        client_ip = request.client.host if request.client else "-"
        claimed, proof = request.headers.get(CLIENT_IP_HEADER), request.headers.get(CLIENT_PROOF_HEADER)
        if claimed and proof and settings.internal_secret and hmac.compare_digest(proof, client_proof(settings.internal_secret, claimed)):
            client_ip = claimed  # a web area passing on its visitor's address
        bucket = hashlib.sha256(auth[7:].strip().encode()).hexdigest() if auth.lower().startswith("bearer ") else f"ip:{client_ip}"
        wait_s = limiter.take(bucket)
        if wait_s:
            retry_after = max(1, math.ceil(wait_s))
            response = error(429, "rate_limited", f"Demasiadas solicitudes con esta llave de API (límite: {limiter.rate:g} por segundo); intenta de nuevo en {retry_after} s.")
            response.headers["Retry-After"] = str(retry_after)
            return response
        with http_tracer.start_as_current_span(f"{request.method} {full_path}", kind=trace.SpanKind.SERVER, attributes={"http.method": request.method, "http.target": full_path, "timbra.service": service}) as span:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS and k.lower() not in (PRINCIPAL_HEADER, "authorization", CLIENT_IP_HEADER, CLIENT_PROOF_HEADER)}
            headers[CLIENT_IP_HEADER] = client_ip
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
                # the path as the client encoded it: decoded, a stray %1E or %2F would change the URL
                raw_path = request.scope.get("raw_path") or full_path.encode()
                upstream = await client.request(request.method, f"{urls[service]}{raw_path.decode('latin-1')}", params=request.query_params, content=await request.body(), headers=headers)
            except httpx.InvalidURL:
                return error(400, "invalid_path", "La ruta de la solicitud contiene caracteres no válidos.")
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
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_level="warning", access_log=False, timeout_keep_alive=30, loop=EVENT_LOOP)


if __name__ == "__main__":
    main()
