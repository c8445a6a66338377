"""The operator console (role ``operator``): the pipeline (counts per stage and status, error
rate, consumer lag, retry queues), the dead letters with replay, search and an invoice's
timeline. Every number comes from ``/v1/ops`` (cfdi-builder, stamping, cancellation)."""

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import ApiFailure, SessionExpired, errors_by_field
from timbra_shared.web.console.common import api_of, checked_form, form_text, page, web_of

router = APIRouter(prefix="/operacion")
OP = "operator"


@router.get("")
async def pipeline(request: Request, ventana: int = 60) -> Response:
    api = api_of(request, OP)
    window = ventana if ventana in (15, 60, 1440) else 60
    data = await api.get("/v1/ops/pipeline", window_minutes=window)
    template = "console/_pipeline.html" if request.headers.get("hx-request") == "true" else "console/pipeline.html"
    return page(request, template, {"section": "pipeline", "p": data, "window": window})


@router.get("/retraso")
async def lag(request: Request) -> Response:
    api = api_of(request, OP)
    try:
        data, error = await api.get("/v1/ops/lag"), None
    except ApiFailure as exc:
        data, error = None, exc.message
    return page(request, "console/_lag.html", {"lag": data, "error": error})


@router.get("/colas")
async def queues(request: Request) -> Response:
    api = api_of(request, OP)
    stamping = cancellations = None
    errors = []
    try:
        stamping = await api.get("/v1/ops/stamping/queue")
    except ApiFailure as exc:
        errors.append(f"Timbrado: {exc.message}")
    try:
        cancellations = await api.get("/v1/ops/cancellations/queue")
    except ApiFailure as exc:
        errors.append(f"Cancelación: {exc.message}")
    return page(request, "console/_queues.html", {"stamping": stamping, "cancellations": cancellations, "errors": errors})


@router.post("/colas/timbrado/{invoice_id}")
async def replay_stamp_job(request: Request, invoice_id: str) -> Response:
    await checked_form(request)
    await api_of(request, OP).post(f"/v1/ops/stamping/jobs/{quote(invoice_id, safe='')}/replay")
    return web_of(request).redirect(request, f"{web_of(request).prefix}/operacion?ok=timbrado#colas")


@router.post("/colas/cancelacion/{invoice_id}")
async def resume_cancellation(request: Request, invoice_id: str) -> Response:
    await checked_form(request)
    await api_of(request, OP).post(f"/v1/ops/cancellations/{quote(invoice_id, safe='')}/resume")
    return web_of(request).redirect(request, f"{web_of(request).prefix}/operacion?ok=cancelacion#colas")


# ---------------------------------------------------------------------- dead letters

@router.get("/mensajes")
async def letters(request: Request, estado: str = "open") -> Response:
    status = estado if estado in ("open", "replayed", "discarded", "todos") else "open"
    data = await api_of(request, OP).get("/v1/ops/dead-letters", status=None if status == "todos" else status)
    return page(request, "console/letters.html", {"section": "mensajes", "letters": data["data"], "status": status})


@router.get("/mensajes/{letter_id}")
async def letter(request: Request, letter_id: str) -> Response:
    doc = await api_of(request, OP).get(f"/v1/ops/dead-letters/{quote(letter_id, safe='')}")
    return page(request, "console/letter.html", {"section": "mensajes", "l": doc, "payload": _pretty(doc.get("payload") or ""), "errors": {}, "done": request.query_params.get("ok")})


@router.post("/mensajes/{letter_id}/reenviar")
async def replay(request: Request, letter_id: str) -> Response:
    form = await checked_form(request)
    api = api_of(request, OP)
    path = f"/v1/ops/dead-letters/{quote(letter_id, safe='')}"
    payload = str(form.get("payload") or "")
    body: dict[str, Any] = {"note": form_text(form, "note") or None}
    original = await api.get(path)
    if payload.strip() and _normal(payload) != _normal(original.get("payload") or ""):
        body["payload"] = payload.strip()
    try:
        await api.post(f"{path}/replay", body)
    except SessionExpired:
        raise
    except ApiFailure as exc:
        if exc.status == 404:
            raise
        return page(request, "console/letter.html", {"section": "mensajes", "l": original, "payload": payload, "errors": errors_by_field(exc), "note": body["note"]}, status=422)
    return web_of(request).redirect(request, f"{web_of(request).prefix}/operacion/mensajes/{quote(letter_id, safe='')}?ok=reenviado")


@router.post("/mensajes/{letter_id}/descartar")
async def discard(request: Request, letter_id: str) -> Response:
    form = await checked_form(request)
    api = api_of(request, OP)
    path = f"/v1/ops/dead-letters/{quote(letter_id, safe='')}"
    try:
        await api.post(f"{path}/discard", {"note": form_text(form, "note")})
    except ApiFailure as exc:
        if exc.status == 404:
            raise
        original = await api.get(path)
        return page(request, "console/letter.html", {"section": "mensajes", "l": original, "payload": _pretty(original.get("payload") or ""), "errors": errors_by_field(exc)}, status=422)
    return web_of(request).redirect(request, f"{web_of(request).prefix}/operacion/mensajes/{quote(letter_id, safe='')}?ok=descartado")


def _pretty(payload: str) -> str:
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except ValueError:
        return payload


def _normal(payload: str) -> str:
    try:
        return json.dumps(json.loads(payload), sort_keys=True)
    except ValueError:
        return payload.strip()


# ---------------------------------------------------------------------- search and timeline

@router.get("/buscar")
async def search(request: Request, q: str = "") -> Response:
    api = api_of(request, OP)
    found = await api.get("/v1/ops/search", q=q.strip()) if q.strip() else None
    if found and len(found["invoices"]) == 1 and found["kind"] in ("invoice_id", "uuid"):
        return web_of(request).redirect(request, f"{web_of(request).prefix}/operacion/facturas/{quote(found['invoices'][0]['id'], safe='')}")
    return page(request, "console/search.html", {"section": "buscar", "q": q, "found": found})


@router.get("/facturas/{invoice_id}")
async def invoice(request: Request, invoice_id: str) -> Response:
    doc = await api_of(request, OP).get(f"/v1/ops/invoices/{quote(invoice_id, safe='')}")
    return page(request, "console/invoice.html", {"section": "buscar", "inv": doc, "steps": _steps(doc)})


def _steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The timeline with the time each step took since the previous one."""
    out, previous = [], None
    for entry in doc.get("timeline") or []:
        at = _parse(entry.get("at"))
        out.append({**entry, "delta_ms": int((at - previous).total_seconds() * 1000) if at and previous else None})
        previous = at or previous
    return out


def _parse(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None
