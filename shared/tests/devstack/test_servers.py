"""The embedded servers: mongod as a replica set, and the tansu broker."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from timbra_shared.devstack.servers import (
    ServerError,
    create_topics,
    find_mongod,
    find_tansu,
    free_port,
    mongo_url,
    start_broker,
    start_mongo,
)
from timbra_shared.devstack.testing import wait_gone

pytestmark = pytest.mark.integration


def test_binaries_found_and_executable():
    for path in (find_mongod(), find_tansu()):
        assert path.is_file() and os.access(path, os.X_OK)


def test_free_port_never_repeats():
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20


@pytest.fixture
async def mongo(tmp_path: Path):
    started = []

    async def start(port: int | None = None):
        mp = await start_mongo(tmp_path / "mongo", port or free_port(), log_path=tmp_path / "mongod.log")
        started.append(mp)
        return mp

    yield start
    for mp in started:
        await asyncio.to_thread(mp.stop, 30)
        assert wait_gone(mp.pid)


async def test_mongo_replica_set_transactions_and_restart(mongo):
    mp = await mongo()
    url = mongo_url(mp.port)
    client = AsyncMongoClient(url)
    try:
        hello = await client.admin.command("hello")
        assert hello["setName"] == "rs0" and hello["isWritablePrimary"]
        coll = client.devstack_test.invoices
        async with client.start_session() as session:
            async with await session.start_transaction():
                await coll.insert_one({"_id": "inv-1", "status": "requested"}, session=session)
                await client.devstack_test.outbox.insert_one({"invoice_id": "inv-1"}, session=session)
        with pytest.raises(RuntimeError):
            async with client.start_session() as session:
                async with await session.start_transaction():
                    await coll.insert_one({"_id": "inv-2"}, session=session)
                    raise RuntimeError("abort")
        assert await coll.count_documents({}) == 1
    finally:
        await client.close()

    await asyncio.to_thread(mp.stop, 30)
    assert wait_gone(mp.pid)

    # same dbpath, same port: the replica set comes back with the data
    mp2 = await mongo(mp.port)
    client = AsyncMongoClient(url)
    try:
        assert await client.devstack_test.invoices.find_one({"_id": "inv-1"}) == {"_id": "inv-1", "status": "requested"}
        assert await client.devstack_test.outbox.count_documents({}) == 1
    finally:
        await client.close()

    # after a crash (SIGKILL) and on another port it still comes back
    mp2.kill()
    mp3 = await mongo()
    client = AsyncMongoClient(mongo_url(mp3.port))
    try:
        assert await client.devstack_test.invoices.count_documents({}) == 1
        async with client.start_session() as session:
            async with await session.start_transaction():
                await client.devstack_test.invoices.insert_one({"_id": "inv-3"}, session=session)
        assert await client.devstack_test.invoices.count_documents({}) == 2
    finally:
        await client.close()


async def test_mongo_port_in_use_is_a_clear_error(mongo, tmp_path: Path):
    mp = await mongo()
    with pytest.raises(ServerError, match="already in use"):
        await start_mongo(tmp_path / "other", mp.port)


@pytest.fixture
def broker(tmp_path: Path):
    started = []

    def start(port: int | None = None):
        mp = start_broker(port or free_port(), log_path=tmp_path / "tansu.log")
        started.append(mp)
        return mp

    yield start
    for mp in started:
        mp.stop(5)
        assert wait_gone(mp.pid)


async def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0, group: str = "g1") -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=True
    )
    await consumer.start()
    got = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got


async def test_broker_topics_produce_consume(broker):
    mp = broker()
    bootstrap = f"127.0.0.1:{mp.port}"
    topics = {"invoice.requested": 6, "invoice.built": 3, "timbra.dead_letter": 1}
    await create_topics(bootstrap, topics)
    await create_topics(bootstrap, {**topics, "invoice.sealed": 2})  # idempotent, adds the new one

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        assert await producer.partitions_for("invoice.requested") == set(range(6))
        assert await producer.partitions_for("invoice.sealed") == set(range(2))
        for i in range(60):
            await producer.send_and_wait("invoice.requested", f"payload-{i}".encode(), key=f"inv-{i % 10}".encode())
    finally:
        await producer.stop()

    got = await _consume_all(bootstrap, "invoice.requested", 60)
    assert sorted(r.value for r in got) == sorted(f"payload-{i}".encode() for i in range(60))
    # one key always lands on one partition
    by_key: dict[bytes, set[int]] = {}
    for r in got:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


async def test_broker_restart_comes_back_empty(broker):
    mp = broker()
    port, bootstrap = mp.port, f"127.0.0.1:{mp.port}"
    await create_topics(bootstrap, {"t": 2})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    await producer.send_and_wait("t", b"before", key=b"k")
    await producer.stop()

    mp.stop(5)
    assert wait_gone(mp.pid)
    broker(port)
    await create_topics(bootstrap, {"t": 2})
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition("t", p) for p in range(2)]
        ends = await consumer.end_offsets(tps)
        assert all(v == 0 for v in ends.values())
    finally:
        await consumer.stop()
