"""Wiring of the catalog service (and nothing else)."""

import asyncio

from timbra_catalog.adapters.repository import CatalogRepositories
from timbra_catalog.api import PUBLIC_NAMES, build_api
from timbra_catalog.handlers import build_router
from timbra_catalog.service import CatalogService
from timbra_shared.runtime import Runtime

SERVICE = "catalog"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    repos = CatalogRepositories(runtime.store.db)
    service = CatalogService(store=runtime.store, repos=repos)

    async def warm_search_indexes() -> None:
        """Build the SAT catalogs' search indexes before the first request needs them."""
        for name in PUBLIC_NAMES.values():
            await asyncio.to_thread(service.catalog_search.warm, name)

    runtime.on_startup(repos.ensure_indexes)
    runtime.background(warm_search_indexes)
    runtime.include(build_router(service))
    return runtime, runtime.app([build_api(service)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
