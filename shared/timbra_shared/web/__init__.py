"""Timbra's web pages: server-rendered HTML (Jinja2) with htmx, no JavaScript build.

Areas (each its own small FastAPI app, mounted by the ingress on port 8080):
- ``/panel``: the issuer panel of the seed manuals (``timbra_shared.web.panel``);
- ``/static``: htmx, the stylesheet and a few lines of our own JavaScript;
- ``/portal/{slug}``: the self-invoicing portal and customer panel (``timbra_shared.web.portal``);
- ``/console``: the operator console and billing back-office (``timbra_shared.web.console``).
A new area is one more app in ``areas()``.

The areas are backends-for-frontends: they call the public ``/v1`` API with the user's session
token (``POST /v1/sessions``), in process through the ingress's own routing when mounted there,
or over HTTP to ``TIMBRA_WEB_API_URL`` when served on their own.
"""

import os

import httpx
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from timbra_shared.settings import Settings
from timbra_shared.web.core import STATIC, Sealer, Web


def api_client(ingress: ASGIApp | None) -> httpx.AsyncClient:
    """The client the areas use for ``/v1``: over HTTP when ``TIMBRA_WEB_API_URL`` is set,
    otherwise in process through ``ingress`` (same routing, authentication and tracing, no socket)."""
    url = os.environ.get("TIMBRA_WEB_API_URL")
    timeout = httpx.Timeout(45.0, connect=5.0)
    if url or ingress is None:
        return httpx.AsyncClient(base_url=url or "http://127.0.0.1:8080", timeout=timeout)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress), base_url="http://ingress.internal", timeout=timeout)


def areas(settings: Settings, http: httpx.AsyncClient) -> list[tuple[str, ASGIApp]]:
    from timbra_shared.web.console import create_console_app
    from timbra_shared.web.panel import create_panel_app
    from timbra_shared.web.portal import create_portal_app

    sealer = Sealer(settings.internal_secret)
    panel = Web(area="panel", prefix="/panel", cookie="timbra_panel", sealer=sealer, http=http)
    console = Web(area="console", prefix="/console", cookie="timbra_console", sealer=sealer, http=http)
    portal = Web(area="portal", prefix="/portal", cookie="timbra_portal", sealer=sealer, http=http)
    return [
        ("/static", StaticFiles(directory=str(STATIC))),
        ("/panel", create_panel_app(panel)),
        ("/console", create_console_app(console)),
        ("/portal", create_portal_app(portal, settings.internal_secret)),
    ]


def _slash(prefix: str):  # noqa: ANN202
    async def redirect() -> RedirectResponse:
        return RedirectResponse(prefix + "/", status_code=307)

    return redirect


def mount_web(app: FastAPI, settings: Settings) -> None:
    """Mount every web area on ``app`` (call it before the ingress's catch-all proxy route)."""
    http = api_client(app)
    for prefix, area in areas(settings, http):
        app.mount(prefix, area)
        if prefix != "/static":
            app.add_api_route(prefix, _slash(prefix), methods=["GET"], include_in_schema=False)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/panel/", status_code=307)

    @app.on_event("shutdown")
    async def _close_web_client() -> None:
        await http.aclose()
