"""Wiring of billing (and nothing else)."""

import asyncio
import os

from prometheus_client import Gauge

from timbra_billing.adapters.payments import PaymentRepository
from timbra_billing.adapters.repository import CreditRepository
from timbra_billing.adapters.sheet_pdf import SheetRenderer
from timbra_billing.api import build_api
from timbra_billing.handlers import build_router
from timbra_billing.payments import Payments
from timbra_billing.service import DEFAULT_ALERT_THRESHOLD, CreditGate
from timbra_billing.settings import BillingSettings
from timbra_shared.runtime import Runtime

SERVICE = "billing"
#: seconds between refreshes of the credit gauges (one pass over the accounts)
METRICS_INTERVAL_S = float(os.environ.get("TIMBRA_METRICS_INTERVAL", 60))


def create():  # noqa: ANN201
    runtime = Runtime(SERVICE)
    settings = BillingSettings()
    repo = CreditRepository(runtime.store.db)
    payment_repo = PaymentRepository(runtime.store.db)
    gate = CreditGate(store=runtime.store, repo=repo, directory=payment_repo)
    payments = Payments(store=runtime.store, repo=payment_repo, gate=gate, settings=settings, renderer=SheetRenderer())
    runtime.on_startup(repo.ensure_indexes)
    runtime.on_startup(payment_repo.ensure_indexes)
    runtime.include(build_router(gate, payment_repo))

    async def expire_packages() -> None:
        while True:
            await gate.expire_due()
            await asyncio.sleep(settings.expiry_interval_s)

    runtime.background(expire_packages)
    levels = Gauge("timbra_credit_accounts", "Funded issuer accounts below their low-credit threshold (low) or at zero (empty)", ["level"], registry=runtime.registry)

    async def credit_gauges() -> None:
        while True:
            for level, count in (await repo.credit_levels(DEFAULT_ALERT_THRESHOLD)).items():
                levels.labels(level).set(count)
            await asyncio.sleep(METRICS_INTERVAL_S)

    runtime.background(credit_gauges)
    return runtime, runtime.app([build_api(gate, payments)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
