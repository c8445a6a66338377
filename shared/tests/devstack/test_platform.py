"""Platform: config/env, secrets, and a real (reduced) platform under chaos."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from timbra_shared.devstack.platform import (
    PROCESSES,
    SERVICES,
    Platform,
    PlatformConfig,
    PlatformError,
    load_topics,
)
from timbra_shared.devstack.testing import running_platform, wait_gone

REQUIRED_ENV = {
    "MONGODB_URL", "KAFKA_BOOTSTRAP_SERVERS", "TIMBRA_HTTP_PORT", "TIMBRA_DATA_DIR", "TIMBRA_ADMIN_KEY",
    "TIMBRA_MASTER_KEY", "TIMBRA_INTERNAL_SECRET", "TIMBRA_PAC_URL", "TIMBRA_SMTP_HOST", "TIMBRA_SMTP_PORT",
    "TIMBRA_TRACE_DIR", "TIMBRA_SERVICE_URLS", "TIMBRA_PARTITIONS", "TIMBRA_SERVICE_NAME",
}
CLEAN_ENV = {"TIMBRA_DATA_DIR": "", "MONGODB_URL": "", "KAFKA_BOOTSTRAP_SERVERS": "", "TIMBRA_ADMIN_KEY": ""}


def test_defaults_match_the_contract(tmp_path: Path):
    cfg = PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path)})
    assert cfg.mongo_port == 27018 and cfg.kafka_port == 19092 and cfg.smtp_port == 1025
    assert {p.name: p.port for p in PROCESSES} == {
        "smtp-sink": 8025, "sandbox-pac": 8090, "issuer-profile": 8101, "catalog": 8102, "cfdi-builder": 8103,
        "stamping": 8104, "cancellation": 8105, "billing": 8106, "notifier": 8107, "ingress": 8080,
    }
    assert cfg.embedded_mongo and cfg.embedded_kafka
    assert cfg.effective_mongodb_url == "mongodb://127.0.0.1:27018/?replicaSet=rs0"
    assert cfg.effective_kafka_bootstrap == "127.0.0.1:19092"


def test_env_for_every_process(tmp_path: Path):
    cfg = PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path)})
    for spec in PROCESSES:
        env = cfg.env_for(spec.name)
        assert REQUIRED_ENV <= set(env), REQUIRED_ENV - set(env)
        assert env["TIMBRA_SERVICE_NAME"] == spec.name
        assert env["TIMBRA_HTTP_PORT"] == str(spec.port)
        assert env["TIMBRA_PAC_URL"] == "http://127.0.0.1:8090"
        assert env["TIMBRA_SMTP_HOST"] == "127.0.0.1" and env["TIMBRA_SMTP_PORT"] == "1025"
        assert env["TIMBRA_TRACE_DIR"] == str(tmp_path.resolve() / "traces")
        urls = json.loads(env["TIMBRA_SERVICE_URLS"])
        assert set(urls) == set(SERVICES)
        assert urls["stamping"] == "http://127.0.0.1:8104"
    assert cfg.argv_for("ingress")[1:] == ["-m", "timbra_shared.ingress"]
    with pytest.raises(PlatformError):
        cfg.env_for("nope")


def test_secrets_generated_once_and_reused(tmp_path: Path):
    cfg = PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path)})
    env = cfg.env_for("ingress")
    key = env["TIMBRA_ADMIN_KEY"]
    assert key.startswith("ta_") and len(key) > 40
    import base64

    assert len(base64.b64decode(env["TIMBRA_MASTER_KEY"])) == 32
    for name in ("admin_key", "master_key", "internal_secret"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    again = PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path)}).env_for("catalog")
    assert (again["TIMBRA_ADMIN_KEY"], again["TIMBRA_MASTER_KEY"], again["TIMBRA_INTERNAL_SECRET"]) == (
        key, env["TIMBRA_MASTER_KEY"], env["TIMBRA_INTERNAL_SECRET"])
    forced = PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path), "TIMBRA_ADMIN_KEY": "ta_mine"})
    assert forced.env_for("catalog")["TIMBRA_ADMIN_KEY"] == "ta_mine"


def test_env_overrides_and_external_servers(tmp_path: Path):
    cfg = PlatformConfig.from_env({
        "TIMBRA_DATA_DIR": str(tmp_path), "MONGODB_URL": "mongodb://db.example:27017/?replicaSet=x",
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "TIMBRA_PARTITIONS": "12", "TIMBRA_PORT_INGRESS": "9999",
        "TIMBRA_SMTP_WEB_PORT": "9025",
    })
    assert not cfg.embedded_mongo and not cfg.embedded_kafka
    env = cfg.env_for("stamping")
    assert env["MONGODB_URL"] == "mongodb://db.example:27017/?replicaSet=x"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "k1:9092,k2:9092"
    assert env["TIMBRA_PARTITIONS"] == "12"
    assert cfg.env_for("ingress")["TIMBRA_HTTP_PORT"] == "9999"
    assert cfg.env_for("smtp-sink")["TIMBRA_HTTP_PORT"] == "9025"


def test_pipeline_processes_run_at_the_background_priority(tmp_path: Path):
    assert {p.name for p in PROCESSES if not p.background} == {"ingress", "catalog"}
    assert PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path)}).background_nice == 10
    assert PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path), "TIMBRA_BACKGROUND_NICE": "0"}).background_nice == 0
    assert PlatformConfig.from_env({"TIMBRA_DATA_DIR": str(tmp_path), "TIMBRA_BACKGROUND_NICE": "40"}).background_nice == 19


def test_unknown_or_missing_processes_fail_early(tmp_path: Path):
    with pytest.raises(PlatformError, match="unknown"):
        PlatformConfig.for_tests(tmp_path, processes=["nope"]).selected()


def test_load_topics_from_the_shared_module(tmp_path: Path):
    pytest.importorskip("timbra_shared.topics")
    topics = load_topics(PlatformConfig.for_tests(tmp_path, partitions=4))
    assert topics and all(isinstance(n, int) and n >= 1 for n in topics.values())
    assert "invoice.requested" in topics


@pytest.mark.integration
async def test_missing_module_is_reported_before_anything_starts(tmp_path: Path):
    platform = Platform(PlatformConfig.for_tests(tmp_path, processes=["smtp-sink"], topics={}))
    platform.config.python = "/bin/false"  # any interpreter; the check is find_spec in this one
    from timbra_shared.devstack import platform as platform_module

    spec = platform_module.ProcessSpec("smtp-sink", "timbra_not_a_module.main", 1)
    with pytest.raises(PlatformError, match="not importable"):
        platform._check_modules([spec])
    platform.config.skip_missing = True
    assert platform._check_modules([spec]) == []


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.chaos
async def test_platform_lifecycle_and_chaos_controls(tmp_path: Path):
    topics = {"devstack.test": 3, "devstack.other": 1}
    async with running_platform(tmp_path, processes=["smtp-sink"], topics=topics) as p:
        cfg = p.config
        assert p.mongodb_url == f"mongodb://127.0.0.1:{cfg.mongo_port}/?replicaSet=rs0"
        assert p.kafka_bootstrap == f"127.0.0.1:{cfg.kafka_port}"
        assert p.env_for("smtp-sink")["TIMBRA_HTTP_PORT"] == str(cfg.ports["smtp-sink"])
        sink = p.url("smtp-sink")
        async with httpx.AsyncClient() as http:
            assert (await http.get(sink + "/healthz")).status_code == 200
        assert (cfg.data_dir / "traces").is_dir()
        pids = {n: p.supervisor[n].pid for n in ("mongod", "tansu", "smtp-sink")}
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pids["smtp-sink"]) == min(19, base + cfg.background_nice)
        assert os.getpriority(os.PRIO_PROCESS, pids["mongod"]) == base
        state = json.loads(cfg.state_file.read_text())
        assert {k: v["pid"] for k, v in state["processes"].items()} == pids

        # data written before a mongod stop/start survives it
        client = AsyncMongoClient(p.mongodb_url)
        await client.t.c.insert_one({"_id": 1})
        await client.close()
        await p.stop_mongo()
        assert wait_gone(pids["mongod"])
        await p.start_mongo()
        client = AsyncMongoClient(p.mongodb_url)
        assert await client.t.c.count_documents({}) == 1
        await client.close()
        # and a crash (SIGKILL) too
        await p.stop_mongo(signal.SIGKILL)
        await p.start_mongo()
        client = AsyncMongoClient(p.mongodb_url)
        assert await client.t.c.count_documents({}) == 1
        await client.close()

        # the broker comes back empty, with the topics recreated
        producer = AIOKafkaProducer(bootstrap_servers=p.kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        await producer.send_and_wait("devstack.test", b"x", key=b"inv-1")
        await producer.stop()
        assert sum((await _end_offsets(p.kafka_bootstrap, "devstack.test", 3)).values()) == 1
        old_broker = p.supervisor["tansu"].pid
        await p.restart_broker()
        assert wait_gone(old_broker)
        assert p.supervisor["tansu"].pid != old_broker
        assert sum((await _end_offsets(p.kafka_bootstrap, "devstack.test", 3)).values()) == 0
        producer = AIOKafkaProducer(bootstrap_servers=p.kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        assert await producer.partitions_for("devstack.test") == {0, 1, 2}
        await producer.stop()

        # kill / restart a service
        await p.kill_service("smtp-sink")
        with pytest.raises(ProcessLookupError):
            os.kill(pids["smtp-sink"], 0)
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(sink + "/healthz")
        await p.restart_service("smtp-sink")
        assert p.pid("smtp-sink") not in (None, pids["smtp-sink"])
        async with httpx.AsyncClient() as http:
            assert (await http.get(sink + "/healthz")).status_code == 200

        live = [p.supervisor[n].pid for n in p.supervisor.names]
    for pid in live:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    await p.stop()  # idempotent


@pytest.mark.integration
async def test_start_failure_stops_what_was_started(tmp_path: Path):
    cfg = PlatformConfig.for_tests(tmp_path, processes=["smtp-sink"], topics={"x": 1}, health_timeout=5)
    cfg.smtp_port = cfg.mongo_port  # the sink's SMTP port collides with mongod's
    platform = Platform(cfg)
    with pytest.raises(PlatformError, match="configured for both"):
        await platform.start()
    # nothing was started because the port check runs first
    assert platform.supervisor.names == []

    cfg2 = PlatformConfig.for_tests(tmp_path / "b", processes=["smtp-sink"], topics={"x": 1}, health_timeout=10)
    cfg2.extra_env["TIMBRA_SMTP_WEB_PORT"] = "not-a-port"  # the sink crashes on start
    platform = Platform(cfg2)
    with pytest.raises(Exception, match="smtp-sink"):
        await platform.start()
    started = {n: platform.supervisor[n].pid for n in platform.supervisor.names}
    assert {"mongod", "tansu", "smtp-sink"} <= set(started)
    for pid in started.values():
        assert wait_gone(pid)


@pytest.mark.integration
@pytest.mark.chaos
async def test_autorestart_revives_a_crashed_process(tmp_path: Path):
    import asyncio

    async with running_platform(tmp_path, processes=["smtp-sink"], topics={"x": 1}, autorestart=True) as p:
        old = p.pid("smtp-sink")
        p.supervisor["smtp-sink"].send_signal(signal.SIGKILL)  # a crash, not a kill_service()
        for _ in range(150):
            await asyncio.sleep(0.1)
            new = p.pid("smtp-sink")
            if new and new != old:
                break
        await p.supervisor.wait_healthy("smtp-sink", 30)
        assert p.pid("smtp-sink") not in (None, old)
        # kill_service() is deliberate: the watchdog leaves it down
        await p.kill_service("smtp-sink")
        await asyncio.sleep(3.5)
        assert p.pid("smtp-sink") is None


@pytest.mark.integration
async def test_external_servers_are_used_not_started(tmp_path: Path):
    import asyncio

    from timbra_shared.devstack.servers import create_topics, free_port, mongo_url, start_broker, start_mongo

    mongo = await start_mongo(tmp_path / "ext-mongo", free_port(), log_path=tmp_path / "ext-mongod.log")
    broker = start_broker(free_port(), log_path=tmp_path / "ext-tansu.log")
    try:
        bootstrap = f"127.0.0.1:{broker.port}"
        async with running_platform(tmp_path / "p", processes=["smtp-sink"], topics={"ext.topic": 2},
                                    mongodb_url=mongo_url(mongo.port), kafka_bootstrap=bootstrap) as p:
            assert p.supervisor.names == ["smtp-sink"]
            assert p.env_for("smtp-sink")["MONGODB_URL"] == mongo_url(mongo.port)
            assert p.env_for("smtp-sink")["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
            with pytest.raises(PlatformError, match="external"):
                await p.restart_broker()
            with pytest.raises(PlatformError):
                await p.stop_mongo()
            await create_topics(bootstrap, {"ext.topic": 2})  # already there: fine
        assert mongo.running and broker.running  # not ours to stop
    finally:
        broker.stop(5)
        await asyncio.to_thread(mongo.stop, 30)
