"""Login (seed 000/001 "Iniciar sesión"), logout, and the main page with the seed's notices
("Aviso de sellos vencidos" comes back on every login while it applies)."""

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.web.core import ApiFailure, Session, SessionExpired, SESSION_TTL_S, safe_next
from timbra_shared.web.panel.common import api_of, checked_form, form_text, page, session_of, web_of

router = APIRouter()

WIZARD_ORDER = ("acceptances", "fiscal_data", "addresses", "user", "logo", "csd", "smtp", "document_types")


@router.get("/entrar")
async def login_form(request: Request, siguiente: str = "") -> Response:
    web = web_of(request)
    if web.session(request) is not None:
        return web.redirect(request, safe_next(siguiente, web.prefix))
    return web.render(request, "panel/login.html", {"next": siguiente, "username": ""})


@router.post("/entrar")
async def login(request: Request) -> Response:
    web = web_of(request)
    form = await checked_form(request)
    username, password = form_text(form, "username"), str(form.get("password") or "")
    target = safe_next(form_text(form, "next"), web.prefix)
    error = None
    if not username or not password:
        error = "Escribe tu usuario y tu contraseña."
    else:
        try:
            result = await web.anonymous_api().post("/v1/sessions", {"username": username, "password": password}, headers={"User-Agent": request.headers.get("user-agent", "")[:300]})
        except ApiFailure as exc:
            error = "Usuario o contraseña incorrectos." if exc.status in (401, 422) else exc.message
        else:
            user = result["user"]
            if user.get("role") in ("operator", "billing"):
                error = "Este usuario es del personal de Timbra: entra en la consola (/console), no en el panel de emisores."
            else:
                expires = _timestamp(result.get("expires_at")) or int(time.time()) + SESSION_TTL_S
                session = Session(token=result["token"], user_id=user["id"], username=user["username"], name=user.get("name") or user["username"], expires=min(expires, int(time.time()) + SESSION_TTL_S))
                web.session(request)  # cache "no session" before replacing it
                request.state.web_session = session
                profile = await web.api(request, session).get("/v1/issuers/me")
                if target == f"{web.prefix}/" and not _setup_done(profile):
                    target = f"{web.prefix}/configuracion"
                elif target == f"{web.prefix}/":
                    target = f"{web.prefix}/?bienvenida=1"
                response = web.redirect(request, target)
                web.start_session(request, response, session)
                return response
    return web.render(request, "panel/login.html", {"next": target, "username": username, "error": error}, status=401 if error else 200)


@router.post("/salir")
async def logout(request: Request) -> Response:
    web = web_of(request)
    await checked_form(request)
    if web.session(request) is not None:
        try:
            await api_of(request).delete("/v1/sessions/current")
        except (ApiFailure, SessionExpired):
            pass  # the cookie goes anyway
    response = web.redirect(request, f"{web.prefix}/entrar")
    web.end_session(request, response)
    return response


@router.get("/")
async def home(request: Request, bienvenida: str = "") -> Response:
    session_of(request)
    api = api_of(request)
    profile = await api.get("/v1/issuers/me")
    recent = await api.get("/v1/invoices", limit=5)
    return await page(request, "panel/home.html", {
        "profile": profile,
        "recent": recent.get("data", []),
        "welcome": bool(bienvenida),
        "setup_done": _setup_done(profile),
        "pending_steps": [s for s in WIZARD_ORDER if not profile.get("onboarding", {}).get(s)],
    })


def _setup_done(profile: dict[str, Any]) -> bool:
    steps = profile.get("onboarding") or {}
    # SMTP and logo can be skipped ("Omitir"); the rest is needed to invoice
    return all(steps.get(s) for s in ("acceptances", "fiscal_data", "addresses", "csd", "document_types"))


def _timestamp(text: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(text)).timestamp())
    except ValueError:
        return None
