"""Wiring of issuer-profile (and nothing else)."""

import asyncio
import os

from prometheus_client import Gauge
from datetime import timedelta

from timbra_issuer_profile.adapters.repository import IssuerRepository
from timbra_issuer_profile.adapters.vault import vault_from_env
from timbra_issuer_profile.api import build_api
from timbra_issuer_profile.domain.users import LOGIN_LOCK, LOGIN_MAX_FAILURES
from timbra_issuer_profile.handlers import build_router
from timbra_issuer_profile.service import IssuerService
from timbra_shared.ids import utcnow
from timbra_shared.runtime import Runtime

SERVICE = "issuer-profile"
#: how often the CSD-expiry check runs (seconds); notices are deduplicated, so any value is safe
CSD_CHECK_INTERVAL_S = float(os.environ.get("TIMBRA_CSD_CHECK_INTERVAL", 6 * 3600))
#: seconds between refreshes of the CSD-expiry gauge (one pass over the CSDs)
METRICS_INTERVAL_S = float(os.environ.get("TIMBRA_METRICS_INTERVAL", 60))


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    settings = runtime.settings
    repo = IssuerRepository(runtime.store.db)
    service = IssuerService(
        store=runtime.store,
        repo=repo,
        # TIMBRA_MASTER_KEY_PREVIOUS: older master keys still accepted while a rotation runs
        vault=vault_from_env(settings.master_key, os.environ.get("TIMBRA_MASTER_KEY_PREVIOUS")),
        admin_key=settings.admin_key,
        internal_secret=settings.internal_secret,
        login_max_failures=int(os.environ.get("TIMBRA_LOGIN_MAX_FAILURES", LOGIN_MAX_FAILURES)),
        login_lock=timedelta(seconds=float(os.environ.get("TIMBRA_LOGIN_LOCK_S", LOGIN_LOCK.total_seconds()))),
    )
    runtime.on_startup(repo.ensure_indexes)
    runtime.include(build_router(service))

    async def expiry_checks() -> None:
        await service.expiry_loop(CSD_CHECK_INTERVAL_S)

    runtime.background(expiry_checks)
    expiring = Gauge("timbra_csd_expiring", "Issuers whose CSD has expired or expires within 7 or 30 days", ["within"], registry=runtime.registry)

    async def csd_gauges() -> None:
        while True:
            for within, count in (await repo.csd_expiry_counts(utcnow())).items():
                expiring.labels(within).set(count)
            await asyncio.sleep(METRICS_INTERVAL_S)

    runtime.background(csd_gauges)
    return runtime, runtime.app([build_api(service, settings.internal_secret)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
