"""HTTP clients for talking to a PAC at volume."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx


class ClientPool:
    """httpx clients of one keep-alive connection each, handed out most recently used first.

    httpcore's pool walks every connection (and polls each one's socket) whenever a request is
    assigned or finishes, so a single client serving 32 concurrent stamps spent about 18 % of the
    stamping service's CPU choosing a connection (py-spy during bench/bench_stamping.py). One
    connection per client keeps that walk at one; ``size`` bounds the connections as
    ``max_connections`` did."""

    def __init__(self, factory: Callable[[], httpx.AsyncClient], size: int) -> None:
        self._factory = factory
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        self._slots = asyncio.Semaphore(max(1, size))

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with self._slots:
            if self._idle:
                client = self._idle.pop()
            else:
                client = self._factory()
                self._all.append(client)
            try:
                yield client
            finally:
                self._idle.append(client)

    async def aclose(self) -> None:
        clients, self._all, self._idle = self._all, [], []
        for client in clients:
            await client.aclose()
