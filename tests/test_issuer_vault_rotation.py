"""Master-key rotation on a real mongod: ``timbra-vault rotate`` re-wraps every data key while
readers that accept both keys keep opening every secret (no downtime), and afterwards the new key
alone opens everything. Runs on a scratch database so the running platform keeps its own key."""

import asyncio
import base64
import os
import subprocess
import sys

import pytest
from pymongo import AsyncMongoClient

from timbra_issuer_profile.adapters.vault import Vault
from timbra_issuer_profile.rotation import key_census, rewrap_database

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

OLD, NEW = os.urandom(32), os.urandom(32)


async def _seed(db, count: int) -> dict[str, bytes]:  # noqa: ANN001
    old = Vault(OLD)
    expected = {}
    for n in range(count):
        key, password = os.urandom(1200), f"password-{n}".encode()
        context = f"csd:iss_{n}:serial"
        await db.csds.insert_one({"_id": f"csd_{n}", "issuer_id": f"iss_{n}", "key": old.seal(key, context=context + ":key"), "password": old.seal(password, context=context + ":password")})
        smtp = f"smtp-{n}".encode()
        await db.issuers.insert_one({"_id": f"iss_{n}", "smtp": {"host": "mail", "password": old.seal(smtp, context=f"smtp:iss_{n}:password")}, "logo": None})
        expected |= {f"csd_{n}.key": key, f"csd_{n}.password": password, f"iss_{n}.smtp": smtp}
    return expected


async def _open_all(db, vault: Vault) -> dict[str, bytes]:  # noqa: ANN001
    opened = {}
    async for doc in db.csds.find({}):
        opened[f"{doc['_id']}.key"] = vault.open(doc["key"])
        opened[f"{doc['_id']}.password"] = vault.open(doc["password"])
    async for doc in db.issuers.find({}):
        opened[f"{doc['_id']}.smtp"] = vault.open(doc["smtp"]["password"])
    return opened


async def test_rotation_rewraps_every_secret_without_interrupting_readers(platform) -> None:
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    db = mongo["timbra_rotation_test"]
    try:
        await mongo.drop_database(db.name)
        expected = await _seed(db, 60)
        during = Vault(NEW, previous_keys=(OLD,))  # how services run while rotating
        stop = asyncio.Event()
        reads = 0

        async def reader() -> None:
            nonlocal reads
            while not stop.is_set():
                assert await _open_all(db, during) == expected
                reads += 1

        task = asyncio.create_task(reader())
        stats = await rewrap_database(db, during, batch=7)
        stop.set()
        await task
        assert reads >= 1
        assert stats == {"seen": 180, "rewrapped": 180}
        assert await key_census(db) == {Vault(NEW).key_id: 180}
        assert await _open_all(db, Vault(NEW)) == expected  # the old key is no longer needed
        with pytest.raises(KeyError):
            await _open_all(db, Vault(OLD))
        assert await rewrap_database(db, during) == {"seen": 180, "current": 180}  # idempotent
    finally:
        await mongo.drop_database(db.name)
        await mongo.close()


async def test_the_console_script_rotates_and_reports(platform) -> None:
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    db = mongo["timbra_rotation_cli_test"]
    try:
        await mongo.drop_database(db.name)
        expected = await _seed(db, 3)
        env = {**os.environ, "MONGODB_URL": platform.mongodb_url, "TIMBRA_MASTER_KEY": base64.b64encode(NEW).decode(), "TIMBRA_MASTER_KEY_PREVIOUS": base64.b64encode(OLD).decode()}
        script = [sys.executable, "-m", "timbra_issuer_profile.rotation"]
        status = await asyncio.to_thread(subprocess.run, [*script, "status", "--database", db.name], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert f"kek {Vault(OLD).key_id} (previous): 9 secrets" in status.stdout
        rotated = await asyncio.to_thread(subprocess.run, [*script, "rotate", "--database", db.name], env=env, capture_output=True, text=True, timeout=60)
        assert rotated.returncode == 0, rotated.stderr
        assert "rewrapped=9" in rotated.stdout and f"kek {Vault(NEW).key_id} (current): 9 secrets" in rotated.stdout
        assert await _open_all(db, Vault(NEW)) == expected
        missing = await asyncio.to_thread(subprocess.run, [*script, "rotate", "--database", db.name], env={**env, "TIMBRA_MASTER_KEY": ""}, capture_output=True, text=True, timeout=60)
        assert missing.returncode == 2 and "TIMBRA_MASTER_KEY" in missing.stderr
    finally:
        await mongo.drop_database(db.name)
        await mongo.close()
