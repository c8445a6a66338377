"""The self-invoicing portal (``/portal/{slug}``, seed 004) and the customer panel.

A backend-for-frontend over the catalog's public portal API (``/v1/portal/{slug}/...``, see
docs/portal.md): the pages hold no rules. The visitor's address goes with every call (with the
HMAC proof the ingress checks), so the catalog's lookup throttle counts per visitor, not per
ingress."""

from fastapi import FastAPI, Request
from fastapi.responses import Response

from timbra_shared.logging import get_logger
from timbra_shared.web.core import ApiFailure, Web
from timbra_shared.web.portal import pages
from timbra_shared.web.portal.common import CsrfRefused, LoginRequired, PasswordChangeRequired, customer

log = get_logger(__name__)


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

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return web.render(request, "portal/error.html", {**where(request), "title": "Formulario vencido", "message": "El formulario venció o no vino de esta página. Recarga la página e intenta de nuevo."}, status=403)

    @app.exception_handler(ApiFailure)
    async def api_failure(request: Request, exc: ApiFailure) -> Response:
        if exc.status == 404:
            return web.render(request, "portal/error.html", {**where(request), "title": "No encontrado", "message": exc.message}, status=404)
        log.warning("portal.api_failure", path=request.url.path, status=exc.status, code=exc.code)
        return web.render(request, "portal/error.html", {**where(request), "title": "No se pudo completar", "message": exc.message, "code": exc.code}, status=502 if exc.status >= 500 else 422)

    return app
