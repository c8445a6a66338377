"""The operator console and the billing back-office (``/console``), for Timbra's staff: the
pipeline (counts, consumer lag, error rate, retry queues, dead letters with replay), the
per-invoice timeline and cross-tenant search (role ``operator``); packages and prices, payment
references, statements, the exceptions queue, balances and the ledger (role ``billing``). The
admin key has both roles. See docs/console.md."""

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response

from timbra_shared.logging import get_logger
from timbra_shared.web.console import auth, billing, operations
from timbra_shared.web.console.common import ROLE_ES, CsrfRefused, LoginRequired, RoleRequired
from timbra_shared.web.core import ApiFailure, SessionExpired, Web, is_htmx

log = get_logger(__name__)


def create_console_app(web: Web) -> FastAPI:
    app = FastAPI(title="Timbra — consola", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.web = web
    for module in (auth, operations, billing):
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

    @app.exception_handler(RoleRequired)
    async def role_required(request: Request, exc: RoleRequired) -> Response:
        return web.render(request, "console/error.html", {"title": "Sin permiso", "message": f"Esta sección es del personal de {ROLE_ES.get(exc.role, exc.role)}; tu usuario no tiene ese rol."}, status=403)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return web.render(request, "console/error.html", {"title": "Formulario vencido", "message": "El formulario venció o no vino de esta página. Recarga la página e intenta de nuevo."}, status=403)

    @app.exception_handler(ApiFailure)
    async def api_failure(request: Request, exc: ApiFailure) -> Response:
        if exc.status == 404:
            return web.render(request, "console/error.html", {"title": "No encontrado", "message": exc.message}, status=404)
        if exc.status == 403:
            return web.render(request, "console/error.html", {"title": "Sin permiso", "message": exc.message, "code": exc.code}, status=403)
        log.warning("console.api_failure", path=request.url.path, status=exc.status, code=exc.code)
        return web.render(request, "console/error.html", {"title": "No se pudo completar", "message": exc.message, "code": exc.code}, status=502 if exc.status >= 500 else 422)

    return app
