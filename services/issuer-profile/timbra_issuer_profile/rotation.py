"""Master-key rotation: re-wrap every data key under the current master key, without downtime.

    TIMBRA_MASTER_KEY=<new> TIMBRA_MASTER_KEY_PREVIOUS=<old> timbra-vault rotate
    timbra-vault status          # how many secrets each master key still wraps

Only the data keys are re-wrapped (secrets are not re-encrypted). Each document is updated with a
compare-and-set on the blob it read, so a CSD or SMTP password replaced meanwhile is left alone
(it was sealed with the new key anyway). Services keep opening both generations while this runs,
because they are started with the old key in ``TIMBRA_MASTER_KEY_PREVIOUS``.
"""

import argparse
import asyncio
import os
import sys
from collections import Counter
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from timbra_issuer_profile.adapters.vault import Vault, blob_paths, vault_from_env

# Collections that hold sealed blobs (CSD keys and passwords; SMTP passwords inside issuers).
SEALED_COLLECTIONS = ("csds", "issuers")


async def rewrap_database(db: AsyncDatabase, vault: Vault, *, batch: int = 200) -> dict[str, int]:
    stats = Counter()
    for name in SEALED_COLLECTIONS:
        collection = db[name]
        async for doc in collection.find({}).batch_size(batch):
            for path, blob in blob_paths(doc):
                stats["seen"] += 1
                if blob["kek_id"] == vault.key_id:
                    stats["current"] += 1
                    continue
                fresh = vault.rewrap(blob)
                result = await collection.update_one(
                    {"_id": doc["_id"], f"{path}.wrapped_key": blob["wrapped_key"]},
                    {"$set": {f"{path}.wrapped_key": fresh["wrapped_key"], f"{path}.wrap_nonce": fresh["wrap_nonce"], f"{path}.kek_id": fresh["kek_id"]}},
                )
                stats["rewrapped" if result.modified_count else "changed_meanwhile"] += 1
    return dict(stats)


async def key_census(db: AsyncDatabase) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for name in SEALED_COLLECTIONS:
        async for doc in db[name].find({}):
            for _path, blob in blob_paths(doc):
                counts[blob["kek_id"]] += 1
    return dict(counts)


def _db(url: str, database: str) -> Any:
    from timbra_shared.mongo import make_client

    client = make_client(url)
    return client, client[database]


async def _run(args: argparse.Namespace) -> int:
    master = os.environ.get("TIMBRA_MASTER_KEY", "")
    if not master:
        print("TIMBRA_MASTER_KEY is not set", file=sys.stderr)
        return 2
    vault = vault_from_env(master, os.environ.get("TIMBRA_MASTER_KEY_PREVIOUS"))
    client, db = _db(args.mongodb_url, args.database)
    try:
        if args.command == "rotate":
            stats = await rewrap_database(db, vault)
            print(" ".join(f"{k}={v}" for k, v in sorted(stats.items())) or "seen=0")
        census = await key_census(db)
        for kek_id, count in sorted(census.items()):
            label = "current" if kek_id == vault.key_id else ("previous" if any(Vault(k).key_id == kek_id for k in vault.previous_keys) else "unknown")
            print(f"kek {kek_id} ({label}): {count} secrets")
        stale = sum(c for k, c in census.items() if k != vault.key_id)
        if args.command == "rotate" and stale:
            print(f"{stale} secrets still under an older key (changed meanwhile); run rotate again", file=sys.stderr)
            return 1
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timbra-vault", description="Timbra's secret vault: master-key rotation.")
    parser.add_argument("command", choices=["rotate", "status"])
    parser.add_argument("--mongodb-url", default=os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27018/?replicaSet=rs0"))
    parser.add_argument("--database", default=os.environ.get("TIMBRA_ISSUER_PROFILE_DB", "timbra_issuer_profile"))
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
