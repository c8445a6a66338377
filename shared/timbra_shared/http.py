"""The HTTP face every service shares: uniform errors, tracing, ``/healthz`` and ``/metrics``."""

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from timbra_shared.errors import ApiError
from timbra_shared.logging import get_logger
from timbra_shared.telemetry import extract, tracer

# uvicorn's event loop for every Timbra server: "auto" takes uvloop (and httptools for HTTP/1.1)
# when installed, which every service's aiokafka, MongoDB and HTTP traffic runs on;
# TIMBRA_EVENT_LOOP=asyncio gives the standard loop (for comparisons, bench/bench_pipeline.py).
EVENT_LOOP = os.environ.get("TIMBRA_EVENT_LOOP", "auto")

log = get_logger(__name__)

_MESSAGES = {
    "missing": "Campo obligatorio.",
    "extra_forbidden": "Campo no permitido.",
    "string_type": "Debe ser texto.",
    "string_too_short": "No puede estar vacío.",
    "string_too_long": "Es demasiado largo.",
    "string_pattern_mismatch": "No tiene el formato esperado.",
    "decimal_parsing": "Debe ser un número decimal.",
    "decimal_type": "Debe ser un número decimal.",
    "decimal_max_places": "Tiene demasiados decimales.",
    "greater_than": "Debe ser mayor que {gt}.",
    "greater_than_equal": "Debe ser mayor o igual que {ge}.",
    "less_than_equal": "Debe ser menor o igual que {le}.",
    "literal_error": "Valor no permitido; se espera {expected}.",
    "int_parsing": "Debe ser un número entero.",
    "bool_parsing": "Debe ser verdadero o falso.",
    "list_type": "Debe ser una lista.",
    "too_long": "Tiene demasiados elementos (máximo {max_length}).",
    "too_short": "Debe tener al menos {min_length} elemento(s).",
    "model_attributes_type": "Debe ser un objeto.",
    "dict_type": "Debe ser un objeto.",
    "json_invalid": "El cuerpo de la solicitud no es JSON válido.",
}


def _path(loc: Sequence[Any]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validation_problems(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    problems = []
    for err in errors:
        template = _MESSAGES.get(err.get("type", ""))
        try:
            message = template.format(**(err.get("ctx") or {})) if template else err.get("msg", "Valor inválido.")
        except (KeyError, IndexError):
            message = template or err.get("msg", "Valor inválido.")
        path = None if err.get("type") == "json_invalid" else _path(err.get("loc", ()))
        problems.append({"message": f"{path}: {message}" if path else message, "code": "TIMBRA_VALIDATION", "source": "timbra", "path": path or None})
    return problems


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if getattr(exc, "retry_after", None) else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_problems(exc.errors())
        is_json = any(e.get("type") == "json_invalid" for e in exc.errors())
        body = {
            "ok": False,
            "message": errors[0]["message"] if len(errors) == 1 else f"La solicitud tiene {len(errors)} errores.",
            "code": "invalid_json" if is_json else "invalid_request",
            "errors": errors,
        }
        return JSONResponse(body, status_code=400 if is_json else 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "Ruta no encontrada.", 405: "Método no permitido."}.get(exc.status_code, str(exc.detail))
        return JSONResponse({"ok": False, "message": message, "code": f"http_{exc.status_code}", "errors": []}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled", error=repr(exc))
        return JSONResponse({"ok": False, "message": "Error interno; intenta de nuevo.", "code": "internal_error", "errors": []}, status_code=500)


class TraceRequests:
    """A server span per request (continuing the caller's trace) and its id in ``x-trace-id``.
    Plain ASGI: Starlette's ``@app.middleware("http")`` costs a task and a stream per request."""

    def __init__(self, app: ASGIApp, *, service: str, tracer: trace.Tracer) -> None:
        self.app = app
        self.service = service
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in ("/healthz", "/metrics"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        with self.tracer.start_as_current_span(
            f"{method} {path}",
            context=extract(Headers(scope=scope)),
            kind=trace.SpanKind.SERVER,
            attributes={"http.method": method, "http.target": path, "service": self.service},
        ) as span:
            trace_id = format(span.get_span_context().trace_id, "032x").encode()

            async def send_with_trace_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.status_code", message["status"])
                    message = {**message, "headers": [*message.get("headers", ()), (b"x-trace-id", trace_id)]}
                await send(message)

            await self.app(scope, receive, send_with_trace_id)


def create_app(
    *,
    service: str,
    routers: Sequence[APIRouter],
    registry: CollectorRegistry,
    internal_secret: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    health: Callable[[], Any] | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    app = FastAPI(title=f"Timbra {service}", lifespan=lifespan, **fastapi_options)
    app.state.internal_secret = internal_secret
    app.state.ready = False
    install_error_handlers(app)
    http_tracer = tracer("timbra.http")

    app.add_middleware(TraceRequests, service=service, tracer=http_tracer)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        detail = (await health()) if health else {}
        ok = app.state.ready and all(v is True for v in detail.values())
        return JSONResponse({"ok": ok, "service": service, **detail}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app
