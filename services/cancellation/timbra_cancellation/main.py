"""Wiring of the cancellation service (and nothing else)."""

from timbra_cancellation.api import build_api
from timbra_cancellation.handlers import build_router
from timbra_cancellation.service import CancellationService
from timbra_shared.runtime import Runtime

SERVICE = "cancellation"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    service = CancellationService(store=runtime.store)
    runtime.include(build_router(service))
    return runtime, runtime.app([build_api()])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
