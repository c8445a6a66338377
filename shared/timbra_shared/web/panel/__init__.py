"""The issuer panel (``/panel``), as the seed manuals describe it: login, the first-time setup
wizard (seed 001), catalogs with SAT-catalog autocomplete, the new invoice (seed 000), the payment
complement (Pagos 2.0), invoice records with downloads, resend and cancellation, and credits
(seed 002). See docs/panel.md."""

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response

from timbra_shared.logging import get_logger
from timbra_shared.web.core import ApiFailure, SessionExpired, Web, is_htmx
from timbra_shared.web.panel import auth, catalogs, credits, invoices, payments, setup
from timbra_shared.web.panel.common import CsrfRefused, LoginRequired

log = get_logger(__name__)


def create_panel_app(web: Web) -> FastAPI:
    app = FastAPI(title="Timbra — panel", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.web = web
    # catalogs last: its /{kind} routes would shadow the other sections
    for module in (auth, setup, invoices, payments, credits, catalogs):
        app.include_router(module.router)

    def to_login(request: Request) -> Response:
        target = request.url.path if request.method == "GET" and not is_htmx(request) else f"{web.prefix}/"
        response = web.redirect(request, f"{web.prefix}/entrar?siguiente={quote(target)}")
        web.end_session(request, response)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        return to_login(request)

    @app.exception_handler(SessionExpired)
    async def session_expired(request: Request, _exc: SessionExpired) -> Response:
        return to_login(request)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return web.render(request, "panel/error.html", {"title": "Formulario vencido", "message": "El formulario venció o no vino de esta página. Recarga la página e intenta de nuevo."}, status=403)

    @app.exception_handler(ApiFailure)
    async def api_failure(request: Request, exc: ApiFailure) -> Response:
        if exc.status == 404:
            return web.render(request, "panel/error.html", {"title": "No encontrado", "message": exc.message}, status=404)
        log.warning("panel.api_failure", path=request.url.path, status=exc.status, code=exc.code)
        return web.render(request, "panel/error.html", {"title": "No se pudo completar", "message": exc.message, "code": exc.code}, status=502 if exc.status >= 500 else 422)

    return app
