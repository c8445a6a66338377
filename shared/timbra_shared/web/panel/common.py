"""Helpers every panel page uses: the logged-in user's API, CSRF on every POST, and the page frame
(the seed's top bar: "Consultar Constancia de Pago | VERSION SAT 4.0 | Timbres disponibles")."""

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from timbra_shared.web.core import CsrfRefused, checked_form, form_text  # noqa: F401 - re-exported for the pages
from timbra_shared.web.core import Api, ApiFailure, Session, SessionExpired, Web, is_htmx


class LoginRequired(Exception):
    pass


def web_of(request: Request) -> Web:
    return request.app.state.web


def session_of(request: Request) -> Session:
    session = web_of(request).session(request)
    if session is None:
        raise LoginRequired()
    return session


def api_of(request: Request) -> Api:
    return web_of(request).api(request, session_of(request))


async def page(request: Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200) -> Response:
    web = web_of(request)
    ctx: dict[str, Any] = dict(context or {})
    if not is_htmx(request) and web.session(request) is not None and "balance" not in ctx:
        try:
            ctx["balance"] = await api_of(request).get("/v1/billing/balance")
        except SessionExpired:
            raise
        except ApiFailure:
            ctx["balance"] = None
    return web.render(request, template, ctx, status=status)


def fragment(request: Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200) -> Response:
    return web_of(request).render(request, template, context, status=status)


def optional(form: Mapping[str, Any], name: str) -> str | None:
    return form_text(form, name) or None
