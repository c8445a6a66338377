"""Wiring of the catalog service (and nothing else)."""

from timbra_catalog.api import build_api
from timbra_catalog.handlers import build_router
from timbra_catalog.service import CatalogService
from timbra_shared.runtime import Runtime

SERVICE = "catalog"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    service = CatalogService(store=runtime.store)
    runtime.include(build_router(service))
    return runtime, runtime.app([build_api()])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
