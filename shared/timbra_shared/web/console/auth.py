"""Login for Timbra's staff: a staff user (username and password, role ``operator`` or
``billing``) or a staff key (``tk_staff_…``, or the platform admin key, which has both roles);
logout; the home page sends each member to their section."""

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import Api, ApiFailure, Session, SessionExpired, SESSION_TTL_S, safe_next
from timbra_shared.web.console.common import api_of, checked_form, form_text, page, session_of, web_of

router = APIRouter()
STAFF_ROLES = ("operator", "billing")


@router.get("/entrar")
async def login_form(request: Request, siguiente: str = "") -> Response:
    web = web_of(request)
    if web.session(request) is not None:
        return web.redirect(request, safe_next(siguiente, web.prefix))
    return page(request, "console/login.html", {"next": siguiente, "username": ""})


@router.post("/entrar")
async def login(request: Request) -> Response:
    web = web_of(request)
    form = await checked_form(request)
    target = safe_next(form_text(form, "next"), web.prefix)
    username = form_text(form, "username")
    key = form_text(form, "key")
    error, session = None, None
    if key:
        session, error = await _key_session(web.http, key)
    elif username and form.get("password"):
        session, error = await _user_session(web, request, username, str(form.get("password")))
    else:
        error = "Escribe tu usuario y contraseña, o pega tu llave de personal."
    if session is None:
        return page(request, "console/login.html", {"next": target, "username": username, "error": error}, status=401)
    if target == f"{web.prefix}/":
        target = f"{web.prefix}/operacion" if "operator" in session.roles else f"{web.prefix}/cobranza"
    response = web.redirect(request, target)
    web.start_session(request, response, session)
    return response


async def _user_session(web: Any, request: Request, username: str, password: str) -> tuple[Session | None, str | None]:
    try:
        result = await web.anonymous_api().post("/v1/sessions", {"username": username, "password": password}, headers={"User-Agent": request.headers.get("user-agent", "")[:300]})
    except ApiFailure as exc:
        return None, "Usuario o contraseña incorrectos." if exc.status in (401, 422) else exc.message
    user = result["user"]
    if user.get("role") not in STAFF_ROLES or user.get("issuer_id"):
        try:
            await Api(web.http, result["token"]).delete("/v1/sessions/current")
        except (ApiFailure, SessionExpired):
            pass
        return None, "Este usuario es de un emisor: entra en el panel (/panel), no en la consola del personal."
    expires = _timestamp(result.get("expires_at")) or int(time.time()) + SESSION_TTL_S
    return Session(token=result["token"], user_id=user["id"], username=user["username"], name=user.get("name") or user["username"],
                   expires=min(expires, int(time.time()) + SESSION_TTL_S), roles=[user["role"]]), None


async def _key_session(http: Any, key: str) -> tuple[Session | None, str | None]:
    """A staff or admin key: ask the API who it is. The key itself becomes the session's token
    (sealed in the cookie like a session token); an issuer key is refused."""
    try:
        who = await Api(http, key).get("/v1/ops/whoami")
    except SessionExpired:
        return None, "La llave no es válida o fue revocada."
    except ApiFailure as exc:
        if exc.status == 403:
            return None, "Es la llave de un emisor: úsala con la API o entra en el panel (/panel)."
        return None, exc.message
    roles = [r for r in who.get("roles") or [] if r in STAFF_ROLES]
    if not roles:
        return None, "La llave no tiene rol de operación ni de cobranza."
    name = "Administrador de la plataforma" if who.get("kind") == "admin" else f"Llave de personal ({', '.join(roles)})"
    return Session(token=key, user_id=who.get("key_id") or who.get("kind", "staff"), username=who.get("kind", "staff"), name=name,
                   expires=int(time.time()) + SESSION_TTL_S, roles=roles), None


@router.post("/salir")
async def logout(request: Request) -> Response:
    web = web_of(request)
    await checked_form(request)
    session = web.session(request)
    if session is not None and session.token.startswith("tk_sess_"):
        try:
            await api_of(request).delete("/v1/sessions/current")
        except (ApiFailure, SessionExpired):
            pass
    response = web.redirect(request, f"{web.prefix}/entrar")
    web.end_session(request, response)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    session = session_of(request)
    web = web_of(request)
    return web.redirect(request, f"{web.prefix}/operacion" if "operator" in session.roles else f"{web.prefix}/cobranza", status=303)


def _timestamp(text: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(text)).timestamp())
    except ValueError:
        return None
