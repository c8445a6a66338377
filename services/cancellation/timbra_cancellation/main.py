"""Wiring of the cancellation service (and nothing else)."""

from timbra_cancellation.adapters.repository import CancellationRepository, InvoiceProjection, IssuerDirectory
from timbra_cancellation.api import build_api
from timbra_cancellation.config import CancellationConfig
from timbra_cancellation.handlers import build_router
from timbra_cancellation.ops_api import build_ops_api
from timbra_cancellation.service import CancellationService
from timbra_shared.pac.registry import PacRegistry
from timbra_shared.runtime import Runtime

SERVICE = "cancellation"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    config = CancellationConfig()
    db = runtime.store.db
    invoices, cancellations, issuers = InvoiceProjection(db), CancellationRepository(db), IssuerDirectory(db)
    pacs = PacRegistry(config.model_copy(update={"pac_timeout_s": config.cancel_pac_timeout_s, "sw_timeout_s": config.cancel_pac_timeout_s}), max_connections=max(10, config.workers * 2))
    service = CancellationService(store=runtime.store, invoices=invoices, cancellations=cancellations, issuers=issuers, pacs=pacs, config=config, registry=runtime.registry)
    runtime.on_startup(invoices.ensure_indexes)
    runtime.on_startup(cancellations.ensure_indexes)
    runtime.include(build_router(service))
    runtime.background(service.run_scheduler)
    return runtime, runtime.app([build_api(service), build_ops_api(cancellations)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
