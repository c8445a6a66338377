"""Operator command for the stamping service's dead letters.

    timbra-stamping dlq list [--json]
    timbra-stamping dlq replay <invoice_id>... | --all
    timbra-stamping status <invoice_id>

It talks to the stamping service's MongoDB database (``MONGODB_URL``). A replay puts the job
back to ``pending`` with a fresh retry budget; a running stamping instance picks it up within
``TIMBRA_STAMP_POLL`` seconds. Replays keep the invoice's idempotency id, so a replay can never
produce a second UUID.
"""

import argparse
import asyncio
import json
import sys
from typing import Any

from timbra_shared.ids import utcnow
from timbra_shared.mongo import make_client
from timbra_shared.settings import Settings
from timbra_stamping.adapters.repository import JobRepository


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(doc, default=str))


async def _run(args: argparse.Namespace) -> int:
    settings = Settings(TIMBRA_SERVICE_NAME="stamping")
    client = make_client(args.mongodb_url or settings.mongodb_url)
    try:
        jobs = JobRepository(client[settings.database_name])
        if args.command == "dlq" and args.action == "list":
            dead = await jobs.list_dead()
            if args.json:
                print(json.dumps([_jsonable(d) for d in dead], indent=2, ensure_ascii=False))
            else:
                print(f"{len(dead)} dead letter(s)")
                for d in dead:
                    print(f"{d['_id']}  issuer={d['issuer_id']}  pac={d['pac']}  attempts={d.get('attempts')}  dead_at={d.get('dead_at')}  stamp_by={d.get('fail_at')}  error={d.get('last_error')}")
            return 0
        if args.command == "dlq" and args.action == "replay":
            if not args.all and not args.invoice_ids:
                print("replay: name invoice ids or pass --all", file=sys.stderr)
                return 2
            count = await jobs.replay(None if args.all else args.invoice_ids, utcnow())
            print(f"replayed {count} dead letter(s)")
            return 0 if count or args.all else 1
        if args.command == "status":
            doc = await jobs.get(args.invoice_id)
            if doc is None:
                print(f"no stamp job for {args.invoice_id}", file=sys.stderr)
                return 1
            doc.pop("event", None)
            print(json.dumps(_jsonable(doc), indent=2, ensure_ascii=False))
            return 0
    finally:
        await client.close()
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timbra-stamping", description="Stamping operations: dead letters and job status.")
    parser.add_argument("--mongodb-url", default=None, help="default: MONGODB_URL")
    sub = parser.add_subparsers(dest="command", required=True)
    dlq = sub.add_parser("dlq", help="stamps that exhausted their retries")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    listing = dlq_sub.add_parser("list", help="list dead letters")
    listing.add_argument("--json", action="store_true")
    replay = dlq_sub.add_parser("replay", help="retry dead letters now, with a fresh retry budget")
    replay.add_argument("invoice_ids", nargs="*")
    replay.add_argument("--all", action="store_true")
    status = sub.add_parser("status", help="a stamp job's state")
    status.add_argument("invoice_id")
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
