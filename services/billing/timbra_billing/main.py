"""Wiring of billing (and nothing else)."""

import asyncio

from timbra_billing.adapters.payments import PaymentRepository
from timbra_billing.adapters.repository import CreditRepository
from timbra_billing.adapters.sheet_pdf import SheetRenderer
from timbra_billing.api import build_api
from timbra_billing.handlers import build_router
from timbra_billing.payments import Payments
from timbra_billing.service import CreditGate
from timbra_billing.settings import BillingSettings
from timbra_shared.runtime import Runtime

SERVICE = "billing"


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
    return runtime, runtime.app([build_api(gate, payments)])


def main() -> None:
    runtime, app = create()
    runtime.serve(app)


if __name__ == "__main__":
    main()
