"""Wiring of billing (and nothing else)."""

from timbra_billing.adapters.repository import CreditRepository
from timbra_billing.api import build_api
from timbra_billing.handlers import build_router
from timbra_billing.service import CreditGate
from timbra_shared.runtime import Runtime

SERVICE = "billing"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    repo = CreditRepository(runtime.store.db)
    gate = CreditGate(store=runtime.store, repo=repo)
    runtime.on_startup(repo.ensure_indexes)
    runtime.include(build_router(gate))
    return runtime, runtime.app([build_api(gate)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
