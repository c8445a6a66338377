"""The issuer panel (``/panel``), as the seed manuals describe it: login, the first-time setup
wizard (seed 001), catalogs with SAT-catalog autocomplete, the new invoice (seed 000), the payment
complement (Pagos 2.0), invoice records with downloads, resend and cancellation, and credits
(seed 002). See docs/panel.md."""

from fastapi import FastAPI

from timbra_shared.web.core import Web, install_error_pages, install_login_redirect
from timbra_shared.web.panel import auth, catalogs, credits, invoices, payments, setup
from timbra_shared.web.panel.common import LoginRequired


def create_panel_app(web: Web) -> FastAPI:
    app = FastAPI(title="Timbra — panel", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.web = web
    # catalogs last: its /{kind} routes would shadow the other sections
    for module in (auth, setup, invoices, payments, credits, catalogs):
        app.include_router(module.router)

    install_login_redirect(app, web, LoginRequired)
    install_error_pages(app, web, "panel")

    return app
