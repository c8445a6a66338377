"""Wiring of the stamping service (and nothing else)."""

from timbra_shared.runtime import Runtime
from timbra_stamping.adapters.pacs import PacRegistry
from timbra_stamping.adapters.repository import JobRepository, StampRepository
from timbra_stamping.api import build_api
from timbra_stamping.config import StampingConfig
from timbra_stamping.handlers import build_router
from timbra_stamping.ops_api import build_ops_api
from timbra_stamping.service import StampingService

SERVICE = "stamping"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    config = StampingConfig()
    repo = StampRepository(runtime.store.db)
    jobs = JobRepository(runtime.store.db)
    service = StampingService(store=runtime.store, repo=repo, jobs=jobs, pacs=PacRegistry(config), registry=runtime.registry, config=config)
    runtime.on_startup(repo.ensure_indexes)
    runtime.on_startup(jobs.ensure_indexes)
    runtime.include(build_router(service, consumers=config.consumers))
    runtime.background(service.run_workers)
    runtime.background(service.run_scheduler)
    return runtime, runtime.app([build_api(repo, service), build_ops_api(jobs)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
