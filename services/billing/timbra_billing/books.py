"""Operator command: recompute every balance from billing's ledger and report mismatches.

    MONGODB_URL=... python -m timbra_billing.books      # exit code 1 when the books disagree

The same check is served at ``GET /v1/billing/books/check`` (admin / billing staff)."""

import asyncio
import json
import sys

from timbra_billing.adapters.repository import CreditRepository
from timbra_billing.service import CreditGate
from timbra_shared.mongo import make_client
from timbra_shared.settings import Settings


async def run() -> dict:
    settings = Settings(TIMBRA_SERVICE_NAME="billing")
    client = make_client(settings.mongodb_url)
    try:
        gate = CreditGate(store=None, repo=CreditRepository(client[settings.database_name]))  # type: ignore[arg-type]
        return await gate.check_books()
    finally:
        await client.close()


def main() -> None:
    report = asyncio.run(run())
    print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
