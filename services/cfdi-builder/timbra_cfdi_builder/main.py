"""Wiring of the cfdi-builder (and nothing else)."""

import os

from timbra_cfdi_builder.adapters.operations import DeadLetterRepository, KafkaOffsets, PipelineQueries
from timbra_cfdi_builder.adapters.repository import CatalogProjection, FolioCounter, InvoiceRepository, IssuerDirectory
from timbra_cfdi_builder.api import build_api
from timbra_cfdi_builder.domain.comprobante import build_cfdi
from timbra_cfdi_builder.handlers import build_ops_router, build_router
from timbra_cfdi_builder.operations import OperationsService
from timbra_cfdi_builder.ops_api import build_ops_api
from timbra_cfdi_builder.service import InvoiceService
from timbra_shared import topics
from timbra_shared.events import RedriveInvoice
from timbra_shared.runtime import Runtime

SERVICE = "cfdi-builder"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    db = runtime.store.db
    invoices = InvoiceRepository(db)
    catalog = CatalogProjection(db)

    async def publish_redrive(command: RedriveInvoice) -> None:
        await runtime.broker.publish(command, topics.INVOICE_REDRIVE, key=command.invoice_id.encode())

    service = InvoiceService(
        store=runtime.store,
        invoices=invoices,
        issuers=IssuerDirectory(db),
        folios=FolioCounter(db),
        build_cfdi=build_cfdi,
        publish_redrive=publish_redrive,
        stuck_after=runtime.settings.stuck_after_s,
        sweep_interval=runtime.settings.sweep_interval_s,
        catalog=catalog,
    )
    runtime.on_startup(invoices.ensure_indexes)
    runtime.on_startup(catalog.ensure_indexes)
    runtime.include(build_router(service))
    runtime.background(service.sweep_forever)

    async def publish_raw(topic: str, payload: bytes, key: bytes | None, headers: dict[str, str]) -> None:
        await runtime.broker.publish(payload, topic, key=key, headers=headers)

    letters, queries = DeadLetterRepository(db), PipelineQueries(db)
    ops = OperationsService(
        letters=letters, queries=queries, offsets=KafkaOffsets(runtime.settings.kafka_bootstrap_servers), publish=publish_raw,
        stuck_after=runtime.settings.stuck_after_s, jaeger_url=os.environ.get("TIMBRA_JAEGER_URL"),
    )
    runtime.on_startup(letters.ensure_indexes)
    runtime.on_startup(queries.ensure_indexes)
    runtime.include(build_ops_router(ops))
    return runtime, runtime.app([build_api(service), build_ops_api(ops)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
