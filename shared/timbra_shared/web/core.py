"""What every web area (panel, portal, console) shares: the templates, the session cookie and
CSRF tokens, and the backend-for-frontend client that calls the public ``/v1`` API with the
logged-in user's session token.

The web areas hold no business rules: every read and write goes through the public API, so the
panel can do exactly what an integrator's key can do, no more.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from timbra_shared.logging import get_logger

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
PRE_COOKIE = "timbra_pre"  # anonymous forms (login) get a double-submit token bound to this cookie
SESSION_TTL_S = 12 * 3600  # the API session (tk_sess_) lasts 12 h; the cookie never outlives it


class SessionExpired(Exception):
    """The API refused the session token (expired, logged out, or revoked)."""


class ApiFailure(Exception):
    """A coded error from the public API: ``{ok:false, message, code, errors:[{message, code, source, path}]}``."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> "ApiFailure":
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = body.get("message") or body.get("detail") or f"El servicio respondió {response.status_code}."
        return cls(response.status_code, str(body.get("code") or f"http_{response.status_code}"), str(message), body.get("errors") or [])


class Api:
    """The public API as one user sees it (the session token travels as the bearer key)."""

    def __init__(self, http: httpx.AsyncClient, token: str | None, user_agent: str | None = None) -> None:
        self.http, self.token, self.user_agent = http, token, user_agent

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.user_agent:
            headers["User-Agent"] = self.user_agent[:300]
        return headers | dict(extra or {})

    async def raw(self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, headers=self._headers(headers), **kwargs)
        except httpx.HTTPError as exc:
            raise ApiFailure(503, "unavailable", "El servicio no está disponible en este momento; intenta de nuevo en unos segundos.") from exc
        if response.status_code == 401 and self.token:
            raise SessionExpired()
        return response

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.raw(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiFailure.from_response(response)
        if not response.content:
            return None
        return response.json() if "json" in response.headers.get("content-type", "") else response.content

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return await self.call("POST", path, json=json, **kwargs)

    async def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return await self.call("PUT", path, json=json, **kwargs)

    async def patch(self, path: str, json: Any = None) -> Any:
        return await self.call("PATCH", path, json=json)

    async def delete(self, path: str, **kwargs: Any) -> Any:
        return await self.call("DELETE", path, **kwargs)


@dataclass
class Session:
    """What the session cookie carries (encrypted): the API session token and who logged in."""

    token: str
    user_id: str
    username: str
    name: str
    expires: int
    sid: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    roles: list[str] = field(default_factory=list)  # the console's staff roles (operator, billing)


class Sealer:
    """AES-GCM for cookies: the API token inside is neither readable nor forgeable by the browser."""

    def __init__(self, secret: str) -> None:
        seed = secret or secrets.token_hex(32)  # no shared secret: sessions last as long as the process
        self.aead = AESGCM(hashlib.sha256(b"timbra-web-cookie|" + seed.encode()).digest())
        self.mac_key = hashlib.sha256(b"timbra-web-csrf|" + seed.encode()).digest()

    def seal(self, data: dict[str, Any], context: str) -> str:
        nonce = os.urandom(12)
        blob = self.aead.encrypt(nonce, json.dumps(data, separators=(",", ":")).encode(), context.encode())
        return base64.urlsafe_b64encode(nonce + blob).decode().rstrip("=")

    def open(self, value: str, context: str) -> dict[str, Any] | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            data = json.loads(self.aead.decrypt(raw[:12], raw[12:], context.encode()))
        except Exception:  # noqa: BLE001 - any tampering or garbage means "no session"
            return None
        return data if isinstance(data, dict) else None

    def mac(self, *parts: str) -> str:
        return hmac.new(self.mac_key, "|".join(parts).encode(), hashlib.sha256).hexdigest()[:40]


class Web:
    """One web area (``/panel``, later ``/portal`` and ``/console``): its cookie, templates and API access."""

    def __init__(self, *, area: str, prefix: str, cookie: str, sealer: Sealer, http: httpx.AsyncClient) -> None:
        self.area, self.prefix, self.cookie, self.sealer, self.http = area, prefix, cookie, sealer, http
        self.env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(money=money, date=short_date, datetime=short_datetime, status_es=status_es, tojson_attr=lambda v: json.dumps(v, ensure_ascii=False))
        self.env.globals.update(STATUS_ES=STATUS_ES, static=lambda name: f"/static/{name}?v={ASSET_VERSION}")

    # ------------------------------------------------------------------ sessions

    def session(self, request: Request) -> Session | None:
        if "web_session" in request.state._state:
            return request.state.web_session
        raw = request.cookies.get(self.cookie)
        data = self.sealer.open(raw, self.cookie) if raw else None
        session = None
        if data and data.get("expires", 0) > time.time():
            try:
                session = Session(**data)
            except TypeError:
                session = None
        request.state.web_session = session
        return session

    def api(self, request: Request, session: Session | None = None) -> Api:
        session = session or self.session(request)
        return Api(self.http, session.token if session else None, request.headers.get("user-agent"))

    def anonymous_api(self) -> Api:
        return Api(self.http, None)

    def start_session(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            self.cookie, self.sealer.seal(session.__dict__, self.cookie), max_age=max(0, session.expires - int(time.time())),
            path=self.prefix, httponly=True, samesite="lax", secure=is_https(request),
        )
        request.state.web_session = session

    def end_session(self, request: Request, response: Response) -> None:
        response.delete_cookie(self.cookie, path=self.prefix, httponly=True, samesite="lax", secure=is_https(request))

    # ------------------------------------------------------------------ CSRF

    def csrf_token(self, request: Request) -> str:
        session = self.session(request)
        if session is not None:
            return self.sealer.mac("session", self.area, session.sid)
        pre = request.cookies.get(PRE_COOKIE) or getattr(request.state, "new_pre", None)
        if not pre:
            pre = secrets.token_urlsafe(16)
            request.state.new_pre = pre
        return self.sealer.mac("pre", self.area, pre)

    async def csrf_ok(self, request: Request) -> bool:
        sent = request.headers.get(CSRF_HEADER)
        if not sent and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            sent = (await request.form()).get(CSRF_FIELD)
        if not isinstance(sent, str) or not sent:
            return False
        if self.session(request) is None and not request.cookies.get(PRE_COOKIE):
            return False
        return hmac.compare_digest(sent, self.csrf_token(request))

    # ------------------------------------------------------------------ rendering

    def render(self, request: Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200, headers: Mapping[str, str] | None = None) -> HTMLResponse:
        ctx = {
            "request": request,
            "P": self.prefix,
            "csrf": self.csrf_token(request),
            "session": self.session(request),
            "htmx": is_htmx(request),
            **(context or {}),
        }
        html = self.env.get_template(template).render(ctx)
        response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
        response.headers["Cache-Control"] = "no-store"
        self.finish(request, response)
        return response

    def finish(self, request: Request, response: Response) -> Response:
        new_pre = getattr(request.state, "new_pre", None)
        if new_pre:
            response.set_cookie(PRE_COOKIE, new_pre, path=self.prefix, httponly=True, samesite="lax", secure=is_https(request), max_age=7200)
        return response

    def redirect(self, request: Request, path: str, status: int = 303) -> Response:
        url = path if path.startswith(("/", "http")) else f"{self.prefix}/{path}"
        if is_htmx(request):
            return self.finish(request, Response(status_code=204, headers={"HX-Redirect": url}))
        return self.finish(request, RedirectResponse(url, status_code=status))


def safe_next(target: str, prefix: str) -> str:
    """Where to go after logging in: only a path inside this area (never another site)."""
    return target if target.startswith(prefix + "/") and "//" not in target and "\\" not in target else f"{prefix}/"


class CsrfRefused(Exception):
    """A POST without this session's CSRF token: every area shows it as an expired form."""


def install_login_redirect(app: FastAPI, web: "Web", *exceptions: type[Exception]) -> None:
    """``exceptions`` (no session, an expired one) end the session and send the visitor to the
    area's login, coming back to the page they asked for (a GET that is not an htmx fragment)."""

    async def to_login(request: Request, _exc: Exception) -> Response:
        target = request.url.path if request.method == "GET" and not is_htmx(request) else f"{web.prefix}/"
        response = web.redirect(request, f"{web.prefix}/entrar?siguiente={quote(target)}")
        web.end_session(request, response)
        return response

    for exception in (*exceptions, SessionExpired):
        app.add_exception_handler(exception, to_login)


def install_error_pages(app: FastAPI, web: "Web", area: str, context: Callable[[Request], Mapping[str, Any]] = lambda _request: {}) -> None:
    """How every area shows an expired form and an API refusal: ``{area}/error.html`` with a
    Spanish title, the API's message and code; 404 and 403 keep their status, a 5xx is a 502 and
    the rest a 422. ``context`` adds what the area's layout needs (the portal: its branch)."""
    logger = get_logger(f"timbra_shared.web.{area}")

    def page(request: Request, title: str, message: str, status: int, code: str | None = None) -> Response:
        return web.render(request, f"{area}/error.html", {**context(request), "title": title, "message": message, "code": code}, status=status)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return page(request, "Formulario vencido", "El formulario venció o no vino de esta página. Recarga la página e intenta de nuevo.", 403)

    @app.exception_handler(ApiFailure)
    async def api_failure(request: Request, exc: ApiFailure) -> Response:
        if exc.status == 404:
            return page(request, "No encontrado", exc.message, 404)
        if exc.status == 403:
            return page(request, "Sin permiso", exc.message, 403, exc.code)
        logger.warning(f"{area}.api_failure", path=request.url.path, status=exc.status, code=exc.code)
        return page(request, "No se pudo completar", exc.message, 502 if exc.status >= 500 else 422, exc.code)


async def checked_form(request: Request) -> Mapping[str, Any]:
    """The POSTed form, after its CSRF token was checked."""
    if not await request.app.state.web.csrf_ok(request):
        raise CsrfRefused()
    return await request.form()


def form_text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"


ASSET_VERSION = "1"

STATUS_ES = {
    "requested": "Recibida",
    "built": "Generada",
    "sealed": "Sellada",
    "funded": "Con timbre reservado",
    "stamped": "Timbrada",
    "rendered": "Timbrada (PDF listo)",
    "emailed": "Timbrada y enviada",
    "rejected": "Rechazada",
    "stamp_failed": "No se pudo timbrar",
    "canceled": "Cancelada",
    "cancellation_pending": "Cancelación en proceso",
}


def status_es(status: str | None) -> str:
    return STATUS_ES.get(status or "", status or "")


def money(value: Any) -> str:
    if value in (None, ""):
        return ""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return f"${amount:,.2f}"


def short_date(value: Any) -> str:
    text = str(value or "")
    return text[:10]


def short_datetime(value: Any) -> str:
    text = str(value or "").replace("T", " ")
    return text[:16]


# ---------------------------------------------------------------------- errors next to the field at fault

_ITEM_API = re.compile(r"^items\[(\d+)\](?:\.product(?=\.|$))?\.?([a-z_]*)")
_CONCEPTO = re.compile(r"Concepto\[(\d+)\]")
_SAT_ATTR = {
    "FormaPago": "payment_form",
    "MetodoPago": "payment_method",
    "CondicionesDePago": "conditions",
    "UsoCFDI": "use",
    "Moneda": "currency",
    "TipoCambio": "exchange",
    "Exportacion": "general",
    "NumRegIdTrib": "tax_id",
    "ResidenciaFiscal": "tax_residence",
    "TipoRelacion": "related",
    "UUID": "related",
}
_SAT_ITEM_ATTR = {
    "ClaveProdServ": "product_key",
    "ClaveUnidad": "unit_key",
    "Unidad": "unit_name",
    "ValorUnitario": "price",
    "Cantidad": "quantity",
    "Descuento": "discount",
    "ObjetoImp": "taxability",
    "Descripcion": "description",
    "NoIdentificacion": "sku",
    "Importe": "price",
    "TasaOCuota": "taxes",
    "TipoFactor": "taxes",
    "Base": "taxes",
}
_API_ITEM_FIELD = {"product_id": "description", "product": "description", "rate": "taxes", "taxes": "taxes", "tax_included": "price"}


def field_key(path: str | None) -> str:
    """Where an API error belongs in a form: ``items[0].product.price`` and SAT's
    ``cfdi:Comprobante/cfdi:Conceptos/cfdi:Concepto[1]/@ValorUnitario`` both become ``items.0.price``;
    ``customer.rfc`` and ``.../cfdi:Receptor/@Rfc`` become ``customer``."""
    if not path:
        return "general"
    match = _ITEM_API.match(path)
    if match:
        name = match.group(2) or "description"
        if ".taxes" in path:
            name = "taxes"
        return f"items.{match.group(1)}.{_API_ITEM_FIELD.get(name, name)}"
    match = _CONCEPTO.search(path)
    attr = path.rsplit("@", 1)[-1] if "@" in path else path.rsplit("/", 1)[-1].split(":")[-1]
    if match:
        return f"items.{int(match.group(1)) - 1}.{_SAT_ITEM_ATTR.get(attr, 'description')}"
    if attr in _SAT_ATTR:
        return _SAT_ATTR[attr]
    if "Receptor" in path or path.startswith(("customer", "customer_id")):
        return "customer"
    if "CfdiRelacionado" in path or path.startswith("related"):
        return "related"
    head = re.split(r"[.\[/]", path, maxsplit=1)[0]
    return head or "general"


def errors_by_field(failure: ApiFailure | None = None, errors: list[dict[str, Any]] | None = None, message: str | None = None) -> dict[str, list[str]]:
    """``{field_key: [Spanish message (CODE)]}``; messages without a path go under ``general``."""
    out: dict[str, list[str]] = {}
    items = list(errors if errors is not None else (failure.errors if failure else []))
    for err in items:
        if not isinstance(err, dict):
            continue
        text = str(err.get("message") or "")
        code = err.get("code")
        if code and code not in text:
            text = f"{text} ({code})"
        out.setdefault(field_key(err.get("path")), []).append(text)
    headline = message or (failure.message if failure else None)
    if headline and not any(headline in m for msgs in out.values() for m in msgs):
        code = failure.code if failure else None
        out.setdefault("general", []).insert(0, f"{headline} ({code})" if code and code not in headline and not code.startswith("http_") else headline)
    return out
