"""``pac.http.ClientPool``: one connection per client, reused most recently used first, never more
clients than its size, and all of them closed with it."""

import asyncio

import httpx

from timbra_shared.pac.http import ClientPool


def counting_factory(made: list[httpx.AsyncClient]):  # noqa: ANN201
    def factory() -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, json={"n": len(made)})))
        made.append(client)
        return client

    return factory


async def test_sequential_calls_reuse_one_client() -> None:
    made: list[httpx.AsyncClient] = []
    pool = ClientPool(counting_factory(made), size=8)
    for _ in range(5):
        async with pool.client() as client:
            assert (await client.get("http://pac.test/")).status_code == 200
    assert len(made) == 1
    await pool.aclose()
    assert made[0].is_closed


async def test_concurrent_calls_get_their_own_client_up_to_the_size() -> None:
    made: list[httpx.AsyncClient] = []
    pool = ClientPool(counting_factory(made), size=3)
    inside, peak = 0, 0
    release = asyncio.Event()

    async def call() -> None:
        nonlocal inside, peak
        async with pool.client() as client:
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            await client.get("http://pac.test/")
            inside -= 1

    tasks = [asyncio.create_task(call()) for _ in range(7)]
    await asyncio.sleep(0.05)
    assert inside == 3, "the fourth call waits for a free client"
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3 and len(made) == 3
    assert len({id(c) for c in made}) == 3
    await pool.aclose()
    assert all(c.is_closed for c in made)


async def test_a_failed_call_gives_its_client_back() -> None:
    made: list[httpx.AsyncClient] = []
    pool = ClientPool(counting_factory(made), size=1)
    try:
        async with pool.client():
            raise httpx.ConnectError("down")
    except httpx.ConnectError:
        pass
    async with asyncio.timeout(1):
        async with pool.client() as client:
            assert client is made[0]
    await pool.aclose()
