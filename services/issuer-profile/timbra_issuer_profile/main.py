"""Wiring of issuer-profile (and nothing else)."""

from timbra_issuer_profile.adapters.repository import IssuerRepository
from timbra_issuer_profile.adapters.vault import Vault, parse_master_key
from timbra_issuer_profile.api import build_api
from timbra_issuer_profile.handlers import build_router
from timbra_issuer_profile.service import IssuerService
from timbra_shared.runtime import Runtime

SERVICE = "issuer-profile"


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    settings = runtime.settings
    repo = IssuerRepository(runtime.store.db)
    service = IssuerService(
        store=runtime.store,
        repo=repo,
        vault=Vault(parse_master_key(settings.master_key)),
        admin_key=settings.admin_key,
        internal_secret=settings.internal_secret,
    )
    runtime.on_startup(repo.ensure_indexes)
    runtime.include(build_router(service))
    return runtime, runtime.app([build_api(service, settings.internal_secret)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
