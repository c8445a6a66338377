"""Horizontal scale on consumer groups: two instances each of the stamping service and of the
cfdi-builder, against the real broker. Both instances of each do part of the work; when one of
each is killed (SIGKILL) with traffic flowing, the survivors take over their partitions and every
invoice is still built, stamped and emailed exactly once."""

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from aiokafka.protocol.group import MemberAssignment

from timbra_shared import topics
from timbra_shared.devstack import Platform, PlatformConfig
from timbra_shared.devstack.chaos import Traffic, assert_exactly_once, pac_stamp_count, post_until_accepted
from timbra_shared.devstack.scenario import TimbraClient, sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]

ENV = {"TIMBRA_STUCK_AFTER": "6", "TIMBRA_SWEEP_INTERVAL": "1", "TIMBRA_OUTBOX_POLL": "0.5"}
SCALED = ("cfdi-builder", "stamping")
# consumer group whose partitions the instances share -> the topic it consumes
GROUPS = {"cfdi-builder": ("cfdi-builder.build", topics.INVOICE_REQUESTED), "stamping": ("stamping.stamp", topics.INVOICE_FUNDED)}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    config = PlatformConfig.for_tests(tmp_path_factory.mktemp("scaling"), extra_env=ENV, instances={name: 2 for name in SCALED})
    async with Platform(config) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(platform: Platform) -> AsyncIterator[TimbraClient]:
    async with TimbraClient(platform.url("ingress"), platform.admin_key, timeout=30) as api:
        yield api


async def _metric(platform: Platform, instance: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` (with these labels) on one instance's /metrics."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(platform.url(instance) + "/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def _consumed(platform: Platform, instance: str) -> float:
    """Events the instance's hot-path consumer group handed to its handler."""
    group, _ = GROUPS[instance.split("#")[0]]
    return await _metric(platform, instance, "timbra_consumer_batch_size_sum", group=group)


async def _assignment(bootstrap: str, group: str) -> dict[str, set[int] | None] | None:
    """The members of a consumer group and their partitions (None when the broker does not
    report assignments: tansu lists the members with an empty assignment), or None when the
    broker cannot describe groups."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    except Exception:  # noqa: BLE001 - not every Kafka-protocol broker answers DescribeGroups
        return None
    finally:
        await admin.close()
    members: dict[str, set[int] | None] = {}
    for response in described:  # DescribeGroups responses: groups = (error, group, state, protocol_type, protocol, members)
        for _error, _group, _state, _ptype, _protocol, group_members in response.groups:
            for member_id, _client, _host, _metadata, assignment in group_members:
                decoded = MemberAssignment.decode(assignment) if assignment else None
                members[member_id] = {p for _, parts in decoded.assignment for p in parts} if decoded else None
    return members


def _partition(invoice_id: str, partitions: int) -> int:
    return (murmur2(invoice_id.encode()) & 0x7FFFFFFF) % partitions  # aiokafka's DefaultPartitioner


async def test_two_instances_share_the_work_and_a_survivor_takes_over(client, platform) -> None:
    for name in SCALED:
        assert platform.instances(name) == [name, f"{name}#2"]
        _, topic = GROUPS[name]
        assert platform.topics[topic] >= 2, f"{topic} has {platform.topics[topic]} partition(s): two instances could not share it"
    partitions = platform.topics[topics.INVOICE_REQUESTED]
    credits = 400
    issuer = await client.onboard(rfc="ESC010101AA1", legal_name="ESCALA HORIZONTAL", tax_regime="601", zip_code="06000", credits=credits)
    stamps_before = await pac_stamp_count(platform)

    # 1. both instances of each service take part
    tag = new_id()
    first = await asyncio.gather(*(post_until_accepted(client, issuer, f"{tag}-{n}", sample_invoice(email=f"{tag}-{n}@example.com")) for n in range(90)))
    await client.wait_final(issuer, first, until=frozenset({"stamped", "rendered", "emailed"}), timeout=300, interval=1.0, sample=50)
    split = {name: {i: await _consumed(platform, i) for i in platform.instances(name)} for name in SCALED}
    stamped = {i: await _metric(platform, i, "timbra_stamps_total", outcome="stamped") for i in platform.instances("stamping")}
    print("work split (events consumed per instance):", split, "stamps per instance:", stamped)
    for name, per_instance in split.items():
        assert all(v > 0 for v in per_instance.values()), f"an instance of {name} did no work: {per_instance}"
    assert sum(split["cfdi-builder"].values()) >= len(first)
    assert all(v > 0 for v in stamped.values()), stamped
    before_kill = {name: await _assignment(platform.kafka_bootstrap, GROUPS[name][0]) for name in SCALED}
    print("assignments before the kill:", before_kill)
    for members in before_kill.values():
        if members is not None:
            assert len(members) == 2, members  # both instances are members of the group
            assert all(p is None or p for p in members.values()), members

    # 2. kill one instance of each mid-flight; the survivors take their partitions over
    traffic = Traffic(client, issuer, new_id(), rate=3).start()
    await asyncio.sleep(6)
    survivors_before = {name: await _consumed(platform, name) for name in SCALED}
    for name in SCALED:
        await platform.kill_service(f"{name}#2", sig=signal.SIGKILL)
    killed_at = time.monotonic()
    await asyncio.sleep(25)
    second = await traffic.stop()
    after_kill = [i for i, t in zip(second, traffic.started_at, strict=True) if t > killed_at]

    ids = list(first) + second
    await assert_exactly_once(client, platform, issuer, ids, stamps_before=stamps_before, credits=credits)
    assert {_partition(i, partitions) for i in after_kill} == set(range(partitions)), "the traffic after the kill did not reach every partition"
    survivors_after = {name: await _consumed(platform, name) for name in SCALED}
    print("survivors consumed after the kill:", {n: survivors_after[n] - survivors_before[n] for n in SCALED}, "invoices posted after it:", len(after_kill))
    for name in SCALED:
        assert survivors_after[name] - survivors_before[name] >= len(after_kill), f"the surviving {name} did not take over every partition"
    after = {name: await _assignment(platform.kafka_bootstrap, GROUPS[name][0]) for name in SCALED}
    print("assignments after the kill:", after)
    for members in after.values():
        if members is not None:
            assert len(members) == 1, members  # the killed instance left the group
            assert next(iter(members.values())) in (None, set(range(partitions))), members
