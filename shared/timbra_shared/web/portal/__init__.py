"""The self-invoicing portal (``/portal/{slug}``, seed 004) and the customer panel.

A backend-for-frontend over the catalog's public portal API (``/v1/portal/{slug}/...``, see
docs/portal.md): the pages hold no rules. The visitor's address goes with every call (with the
HMAC proof the ingress checks), so the catalog's lookup throttle counts per visitor, not per
ingress."""

from fastapi import FastAPI, Request
from fastapi.responses import Response

from timbra_shared.web.core import Web, install_error_pages
from timbra_shared.web.portal import pages
from timbra_shared.web.portal.common import LoginRequired, PasswordChangeRequired, customer


def create_portal_app(web: Web, secret: str) -> FastAPI:
    app = FastAPI(title="Timbra — portal de autofacturación", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.web = web
    app.state.secret = secret
    app.include_router(pages.router)

    def where(request: Request) -> dict[str, object]:
        slug = request.path_params.get("slug")
        return {"slug": slug, "me": customer(request, slug) if slug else None}

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        response = web.redirect(request, f"{web.prefix}/{exc.slug}/entrar")
        web.end_session(request, response)
        return response

    @app.exception_handler(PasswordChangeRequired)
    async def change_required(request: Request, exc: PasswordChangeRequired) -> Response:
        return web.redirect(request, f"{web.prefix}/{exc.slug}/contrasena")

    install_error_pages(app, web, "portal", where)

    return app
