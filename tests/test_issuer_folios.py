"""The builder's folio counter on a real mongod, hammered by two independent clients (as two
builder instances would be), each assignment inside its own transaction like the build step:
no serie+folio is ever handed out twice, and none is skipped when transactions commit."""

import asyncio

import pytest
from pymongo import AsyncMongoClient

from timbra_cfdi_builder.adapters.repository import FolioCounter

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_two_instances_in_parallel_never_share_a_folio(platform) -> None:
    clients = [AsyncMongoClient(platform.mongodb_url, tz_aware=True) for _ in range(2)]
    db_name = "timbra_folio_test"
    try:
        await clients[0].drop_database(db_name)
        counters = [FolioCounter(c[db_name]) for c in clients]

        async def worker(n: int) -> list[int]:
            """One consumer partition of one builder instance: sequential builds, each a transaction."""
            client, counter = clients[n % 2], counters[n % 2]
            got = []
            for _ in range(25):
                async with client.start_session() as session:
                    async def work(s):  # noqa: ANN001, ANN202
                        return await counter.next("iss_1", "A", session=s)
                    got.append(await session.with_transaction(work))
            return got

        # two instances x six partitions, all at once
        folios = [f for chunk in await asyncio.gather(*(worker(n) for n in range(12))) for f in chunk]
        assert sorted(folios) == list(range(1, 301))
        other = await asyncio.gather(*(counters[n % 2].next("iss_1", "B") for n in range(50)))
        assert sorted(other) == list(range(1, 51))  # each serie has its own sequence
    finally:
        await clients[0].drop_database(db_name)
        for c in clients:
            await c.close()
