"""Wiring of the catalog service (and nothing else)."""

import asyncio

from timbra_catalog.adapters.portal import PipelineClient, PortalRepositories
from timbra_catalog.adapters.repository import CatalogRepositories
from timbra_catalog.api import PUBLIC_NAMES, build_api
from timbra_catalog.handlers import build_router
from timbra_catalog.portal_api import build_portal_api
from timbra_catalog.portal_service import PortalService
from timbra_catalog.service import CatalogService
from timbra_shared.runtime import Runtime

SERVICE = "catalog"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    repos = CatalogRepositories(runtime.store.db)
    service = CatalogService(store=runtime.store, repos=repos)
    portal_repos = PortalRepositories(runtime.store.db)
    pipeline = PipelineClient(runtime.settings.service_urls, runtime.settings.internal_secret)
    portal = PortalService(store=runtime.store, repos=portal_repos, catalog_repos=repos, catalog=service, pipeline=pipeline, secret=runtime.settings.internal_secret)

    async def warm_search_indexes() -> None:
        """Build the SAT catalogs' search indexes before the first request needs them."""
        for name in PUBLIC_NAMES.values():
            await asyncio.to_thread(service.catalog_search.warm, name)

    runtime.on_startup(repos.ensure_indexes)
    runtime.on_startup(portal_repos.ensure_indexes)
    runtime.background(warm_search_indexes)
    runtime.include(build_router(service, portal))
    return runtime, runtime.app([build_api(service), build_portal_api(portal)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
