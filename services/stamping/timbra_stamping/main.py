"""Wiring of the stamping service (and nothing else)."""

import os

from timbra_shared.runtime import Runtime
from timbra_stamping.adapters.repository import StampRepository
from timbra_stamping.adapters.sandbox_pac import SandboxPacClient
from timbra_stamping.api import build_api
from timbra_stamping.handlers import build_router
from timbra_stamping.service import StampingService

SERVICE = "stamping"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    repo = StampRepository(runtime.store.db)
    pac = SandboxPacClient(runtime.settings.pac_url, token=os.environ.get("TIMBRA_PAC_TOKEN", "sandbox-token"))
    service = StampingService(store=runtime.store, repo=repo, pac=pac, registry=runtime.registry)
    runtime.on_startup(repo.ensure_indexes)
    runtime.include(build_router(service))
    return runtime, runtime.app([build_api(repo)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
