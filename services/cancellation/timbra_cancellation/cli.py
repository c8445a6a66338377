"""Operator command for cancellations SAT answered with an unknown state (or none in time).

    timbra-cancellation escalated list [--json]
    timbra-cancellation escalated resume <invoice_id>... | --all
    timbra-cancellation status <invoice_id>

It talks to the cancellation service's MongoDB database (``MONGODB_URL``). ``resume`` puts the
cancellation back to polling SAT's status; a running instance picks it up within
``TIMBRA_CANCEL_SCHEDULER_POLL`` seconds. Escalations are also published on
``cancellation.escalated`` and ``timbra.dead_letter``.
"""

import argparse
import asyncio
import json
import sys
from typing import Any

from timbra_cancellation.adapters.repository import CancellationRepository
from timbra_shared.ids import utcnow
from timbra_shared.mongo import make_client
from timbra_shared.settings import Settings


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in doc.items() if k != "acuse"}, default=str))


async def _run(args: argparse.Namespace) -> int:
    settings = Settings(TIMBRA_SERVICE_NAME="cancellation")
    client = make_client(args.mongodb_url or settings.mongodb_url)
    try:
        repo = CancellationRepository(client[settings.database_name])
        if args.command == "escalated" and args.action == "list":
            docs = await repo.escalated()
            if args.json:
                print(json.dumps([_jsonable(d) for d in docs], indent=2, ensure_ascii=False))
            else:
                print(f"{len(docs)} escalated cancellation(s)")
                for d in docs:
                    print(f"{d['_id']}  issuer={d['issuer_id']}  uuid={d['uuid']}  motive={d['motive']}  since={d.get('escalated_at')}  reason={d.get('message')}")
            return 0
        if args.command == "escalated" and args.action == "resume":
            if not args.all and not args.invoice_ids:
                print("resume: name invoice ids or pass --all", file=sys.stderr)
                return 2
            count = await repo.resume(None if args.all else args.invoice_ids, utcnow())
            print(f"resumed {count} cancellation(s)")
            return 0 if count or args.all else 1
        doc = await repo.get(args.invoice_id)
        if doc is None:
            print(f"no cancellation for {args.invoice_id}", file=sys.stderr)
            return 1
        print(json.dumps(_jsonable(doc), indent=2, ensure_ascii=False))
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timbra-cancellation", description="Cancellations that need an operator.")
    parser.add_argument("--mongodb-url", default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    escalated = commands.add_parser("escalated", help="cancellations SAT answered with an unknown state")
    actions = escalated.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list")
    listing.add_argument("--json", action="store_true")
    resume = actions.add_parser("resume")
    resume.add_argument("invoice_ids", nargs="*")
    resume.add_argument("--all", action="store_true")
    status = commands.add_parser("status", help="one invoice's cancellation document")
    status.add_argument("invoice_id")
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
