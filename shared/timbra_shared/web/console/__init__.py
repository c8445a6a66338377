"""The operator console and the billing back-office (``/console``), for Timbra's staff: the
pipeline (counts, consumer lag, error rate, retry queues, dead letters with replay), the
per-invoice timeline and cross-tenant search (role ``operator``); packages and prices, payment
references, statements, the exceptions queue, balances and the ledger (role ``billing``). The
admin key has both roles. See docs/console.md."""

from fastapi import FastAPI, Request
from fastapi.responses import Response

from timbra_shared.web.console import auth, billing, operations
from timbra_shared.web.console.common import ROLE_ES, LoginRequired, RoleRequired
from timbra_shared.web.core import Web, install_error_pages, install_login_redirect


def create_console_app(web: Web) -> FastAPI:
    app = FastAPI(title="Timbra — consola", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.web = web
    for module in (auth, operations, billing):
        app.include_router(module.router)

    install_login_redirect(app, web, LoginRequired)

    @app.exception_handler(RoleRequired)
    async def role_required(request: Request, exc: RoleRequired) -> Response:
        return web.render(request, "console/error.html", {"title": "Sin permiso", "message": f"Esta sección es del personal de {ROLE_ES.get(exc.role, exc.role)}; tu usuario no tiene ese rol."}, status=403)

    install_error_pages(app, web, "console")

    return app
