"""The public API's documents: the OpenAPI 3.1 document merged from every service's own, the
self-hosted reference page at ``/docs`` (no CDN, no JavaScript), and the AsyncAPI document of the
Kafka topics an issuer may produce to or read from."""

import copy
import html
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

METHODS = ("get", "put", "post", "delete", "patch")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error, from every service and from the ingress, has this shape; messages are in Spanish and codes are stable.",
    "required": ["ok", "message", "code", "errors"],
    "properties": {
        "ok": {"type": "boolean", "const": False},
        "message": {"type": "string", "description": "what went wrong, for a person"},
        "code": {"type": "string", "description": "stable code (SAT's code, e.g. CFDI40108, when SAT has one)"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
    },
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "required": ["message", "code", "source"],
    "properties": {
        "message": {"type": "string"},
        "code": {"type": "string"},
        "source": {"type": "string", "enum": ["timbra", "sat", "pac"]},
        "path": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "the field at fault, e.g. items[0].product.price"},
    },
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if headers:
        response["headers"] = headers
    return response


COMMON_RESPONSES: dict[str, dict[str, Any]] = {
    "401": _error("Falta la llave de API, o no es válida."),
    "429": _error("Demasiadas solicitudes con esta llave.", {"Retry-After": {"description": "segundos que conviene esperar", "schema": {"type": "integer"}}}),
}

DESCRIPTION = """\
The issuer REST API of Timbra. Every request carries `Authorization: Bearer <key>` (an issuer's
`tk_test_…`/`tk_live_…` key, a staff key or the platform admin key). Errors have one shape,
`{ok:false, message, code, errors:[{message, code, source, path}]}`, with Spanish messages.
`POST /v1/invoices` answers `202 {id, status}` at once; `?wait=true&timeout=N` waits up to N
seconds (at most 30) for a final status. An `idempotency_key` (body) or `Idempotency-Key`
(header) makes a retried POST return the same invoice. Lists page with `limit` and
`starting_after` (the last id of the previous page). Over the per-key rate limit the answer is
429 with `Retry-After`. The Kafka side (`invoice.requested` and the status topics) is described
by the AsyncAPI document at `/asyncapi.json`."""


def merge_openapi(docs: Mapping[str, dict[str, Any]], owner: Callable[[str, str], str | None], *, version: str = "1") -> dict[str, Any]:
    """One OpenAPI document from every service's own: only the public ``/v1`` operations that the
    ingress really routes to that service, the uniform error responses, and a bearer scheme.
    A schema name two services define differently is prefixed with the service's name."""
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Timbra API", "version": version, "description": DESCRIPTION},
        "paths": {},
        "components": {"schemas": {"Error": ERROR_SCHEMA, "Problem": PROBLEM_SCHEMA}, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "tk_test_…, tk_live_…, a staff key or the admin key"}}},
        "security": [{"bearer": []}],
        "tags": [],
    }
    schemas = merged["components"]["schemas"]
    for service, doc in sorted(docs.items()):
        doc = copy.deepcopy(doc)
        own = (doc.get("components") or {}).get("schemas") or {}
        renames = {}
        for name, schema in own.items():
            if name in ("HTTPValidationError", "ValidationError"):
                continue
            if name in schemas and schemas[name] != schema:
                renames[name] = _prefixed(service, name)
        if renames:
            doc = _rename_refs(doc, renames)
            own = doc.get("components", {}).get("schemas", {})
        for name, schema in own.items():
            if name not in ("HTTPValidationError", "ValidationError"):
                schemas.setdefault(name, schema)
        for path, item in (doc.get("paths") or {}).items():
            if not path.startswith("/v1/"):
                continue
            probe = re.sub(r"\{[^}]+\}", "x", path)
            for method, operation in item.items():
                if method not in METHODS or owner(method.upper(), probe) != service:
                    continue
                merged["paths"].setdefault(path, {})[method] = _operation(operation, service)
    used_tags = sorted({t for item in merged["paths"].values() for op in item.values() for t in op.get("tags", [])})
    merged["tags"] = [{"name": t} for t in used_tags]
    return merged


def _prefixed(service: str, name: str) -> str:
    return "".join(part.capitalize() for part in service.split("-")) + name


def _rename_refs(doc: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    text = json.dumps(doc)
    for old, new in renames.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    out = json.loads(text)
    schemas = out.get("components", {}).get("schemas", {})
    for old, new in renames.items():
        schemas[new] = schemas.pop(old)
    return out


def _operation(operation: dict[str, Any], service: str) -> dict[str, Any]:
    operation = dict(operation)
    responses = dict(operation.get("responses") or {})
    if "422" in responses:
        responses["422"] = _error("La solicitud no es válida: cada error nombra el campo (path).")
    for status, response in COMMON_RESPONSES.items():
        responses.setdefault(status, response)
    operation["responses"] = responses
    operation["x-timbra-service"] = service
    return operation


# --------------------------------------------------------------------------- /docs

_METHOD_COLORS = {"get": "#1d6f42", "post": "#1a5fb4", "put": "#9a6700", "patch": "#6f42c1", "delete": "#b42318"}


def _schema_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_name(s) or s.get("type", "") for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"[{_schema_name(schema.get('items'))}]"
    return str(schema.get("type", "object"))


def render_docs(doc: dict[str, Any]) -> str:
    """A plain HTML reference of the merged document: operations by tag, their parameters, bodies
    and responses, and every schema. Served by the ingress, it needs nothing from the internet."""
    e = html.escape
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in sorted(doc.get("paths", {}).items()):
        for method in METHODS:
            if method in item:
                op = item[method]
                by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method, path, op))
    out = [
        "<!doctype html><html lang='es'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(doc['info']['title'])}: referencia</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;margin:0;display:flex}nav{width:230px;padding:1rem;background:#f4f4f6;height:100vh;"
        "position:sticky;top:0;overflow:auto;flex:none}main{padding:1rem 2rem;max-width:1000px;min-width:0}code,pre{font:13px ui-monospace,monospace}"
        "pre{background:#f6f8fa;padding:.6rem;overflow:auto}.op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.4rem .8rem}"
        ".m{display:inline-block;min-width:4.2em;color:#fff;border-radius:4px;padding:0 .4em;text-align:center;font-weight:600;text-transform:uppercase}"
        "table{border-collapse:collapse;margin:.3rem 0}td,th{border:1px solid #ddd;padding:.15rem .5rem;text-align:left;vertical-align:top}"
        "@media(max-width:700px){body{display:block}nav{width:auto;height:auto;position:static}main{padding:1rem}}</style></head><body>",
        "<nav><strong>Timbra API</strong><ul>",
        *[f"<li><a href='#tag-{e(t)}'>{e(t)}</a></li>" for t in sorted(by_tag)],
        "<li><a href='#schemas'>schemas</a></li></ul>",
        "<p><a href='/openapi.json'>openapi.json</a><br><a href='/asyncapi.json'>asyncapi.json</a> (Kafka)</p></nav><main>",
        f"<h1>{e(doc['info']['title'])} <small>v{e(str(doc['info']['version']))}</small></h1>",
        f"<pre style='white-space:pre-wrap;background:none;padding:0'>{e(doc['info'].get('description', ''))}</pre>",
    ]
    for tag in sorted(by_tag):
        out.append(f"<h2 id='tag-{e(tag)}'>{e(tag)}</h2>")
        for method, path, op in by_tag[tag]:
            anchor = e(op.get("operationId", f"{method}-{path}"))
            out.append(f"<div class='op' id='{anchor}'><p><span class='m' style='background:{_METHOD_COLORS[method]}'>{method}</span> "
                       f"<code>{e(path)}</code> — {e(op.get('summary', ''))}</p>")
            if op.get("description"):
                out.append(f"<p>{e(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                out.append("<table><tr><th>parámetro</th><th>en</th><th>tipo</th><th>obligatorio</th></tr>")
                for p in params:
                    out.append(f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td><td>{e(_schema_name(p.get('schema')))}</td>"
                               f"<td>{'sí' if p.get('required') else 'no'}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody")
            if body:
                for media, content in body.get("content", {}).items():
                    name = _schema_name(content.get("schema"))
                    link = f"<a href='#schema-{e(name)}'>{e(name)}</a>" if name in doc["components"]["schemas"] else e(name)
                    out.append(f"<p>cuerpo <code>{e(media)}</code>: {link}</p>")
            out.append("<table><tr><th>respuesta</th><th>descripción</th></tr>")
            for status, response in sorted(op.get("responses", {}).items()):
                out.append(f"<tr><td>{e(status)}</td><td>{e(response.get('description', ''))}</td></tr>")
            out.append("</table></div>")
    out.append("<h2 id='schemas'>schemas</h2>")
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        out.append(f"<details id='schema-{e(name)}'><summary><code>{e(name)}</code></summary><pre>{e(json.dumps(schema, indent=2, ensure_ascii=False))}</pre></details>")
    out.append("</main></body></html>")
    return "\n".join(out)


# --------------------------------------------------------------------------- AsyncAPI

def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3 document (generated by FastStream) of the topics an issuer's own producers
    and consumers may use: ``invoice.requested`` in, the status events out."""
    from faststream.kafka import KafkaBroker
    from faststream.specification import AsyncAPI

    from timbra_shared import events, topics

    broker = KafkaBroker("kafka:9092")

    @broker.subscriber(
        topics.INVOICE_REQUESTED,
        title=f"{topics.INVOICE_REQUESTED}:receive",
        description="Produce an invoice request here (key: invoice_id). Same validation, idempotency and statuses as POST /v1/invoices; "
        "GET /v1/invoices/{invoice_id} answers its status. A request that fails validation becomes a rejected invoice with the same "
        "coded errors; a message without a usable envelope (invoice_id, issuer_id) goes to timbra.dead_letter.",
    )
    async def invoice_requested(event: events.InvoiceRequested) -> None: ...

    status_events = [
        events.InvoiceBuilt, events.InvoiceSealed, events.InvoiceFunded, events.InvoiceRejected, events.InvoiceStamped,
        events.InvoiceStampFailed, events.InvoiceRendered, events.InvoiceEmailed,
    ]
    for model in status_events:
        broker.publisher(model.topic, schema=model, title=f"{model.topic}:send", description=f"{model.__doc__ or model.__name__} (key: invoice_id)".strip())
    spec = AsyncAPI(broker, title="Timbra events", version="1", schema_version="3.0.0",
                    description="Kafka topics of the Timbra pipeline that issuers may produce to (invoice.requested) or read (status events).")
    return json.loads(spec.to_specification().to_json())
