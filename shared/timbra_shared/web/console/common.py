"""Helpers every console page uses: the logged-in staff member's API, roles, CSRF on every POST."""

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from timbra_shared.web.core import CsrfRefused, checked_form, form_text  # noqa: F401 - re-exported for the pages
from timbra_shared.web.core import Api, Session, Web


class LoginRequired(Exception):
    pass


class RoleRequired(Exception):
    def __init__(self, role: str) -> None:
        super().__init__(role)
        self.role = role


ROLE_ES = {"operator": "operación", "billing": "cobranza"}


def web_of(request: Request) -> Web:
    return request.app.state.web


def session_of(request: Request, role: str | None = None) -> Session:
    """The staff session; with ``role``, refuse (403 page) a member without it. The API checks
    the role again on every call: this only spares a page full of errors."""
    session = web_of(request).session(request)
    if session is None:
        raise LoginRequired()
    if role and role not in (session.roles or []):
        raise RoleRequired(role)
    return session


def api_of(request: Request, role: str | None = None) -> Api:
    return web_of(request).api(request, session_of(request, role))


def page(request: Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200) -> Response:
    return web_of(request).render(request, template, context, status=status)


