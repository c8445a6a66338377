"""Hand-written fakes of the common ports, for services' unit tests."""

from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

from timbra_shared.mongo import DUPLICATE


class FakeSession:
    pass


class FakeTransaction:
    """Records what a unit of work emits, and with which Kafka key."""

    def __init__(self) -> None:
        self.session = FakeSession()
        self.staged: list[BaseModel] = []
        self.keys: list[str | None] = []

    def emit(self, event: BaseModel, *, key: str | None = None) -> None:
        self.staged.append(event)
        self.keys.append(key)


class _FakeProcessed:
    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    async def find_one(self, query: dict[str, Any], projection: Any = None) -> dict[str, Any] | None:
        return {"_id": query["_id"]} if query["_id"] in self.keys else None


class FakeStore:
    """A :class:`timbra_shared.mongo.Store` in memory: ``transact`` honours ``dedupe`` and records
    every emitted event (``emitted``, ``keys``) and every session it handed out."""

    def __init__(self) -> None:
        self.processed: set[str] = set()
        self.db = SimpleNamespace(processed=_FakeProcessed(self.processed))
        self.emitted: list[BaseModel] = []
        self.keys: list[str | None] = []
        self.sessions: list[FakeSession] = []
        self.groups: list[int] = []  # units per transact_many / transact_grouped call
        self.transactions: list[FakeTransaction] = []  # every transaction that committed
        self.dedupe_keys: list[str | None] = []  # every dedupe key asked for, in order
        self.fail_next: list[BaseException] = []  # raised (in order) by the next transactions, before any work

    async def was_processed(self, dedupe: str) -> bool:
        return dedupe in self.processed

    async def transact(self, work, *, dedupe: str | None = None):  # noqa: ANN001, ANN201
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.dedupe_keys.append(dedupe)
        if dedupe is not None and dedupe in self.processed:
            return DUPLICATE
        tx = FakeTransaction()
        self.sessions.append(tx.session)
        result = await work(tx)
        if dedupe is not None:
            self.processed.add(dedupe)
        self.transactions.append(tx)
        self.emitted.extend(tx.staged)
        self.keys.extend(tx.keys)
        return result

    async def transact_grouped(self, work, *, dedupe: str | None = None):  # noqa: ANN001, ANN201
        self.groups.append(1)
        return await self.transact(work, dedupe=dedupe)

    async def transact_many(self, units) -> list[Any]:  # noqa: ANN001
        """All the units in one transaction: if one raises, none of them takes effect."""
        self.groups.append(len(units))
        self.dedupe_keys.extend(u.dedupe for u in units)
        tx = FakeTransaction()
        self.sessions.append(tx.session)
        results: list[Any] = []
        seen = set(self.processed)
        for unit in units:
            if unit.dedupe is not None and unit.dedupe in seen:
                results.append(DUPLICATE)
                continue
            if unit.dedupe is not None:
                seen.add(unit.dedupe)
            results.append(await unit.work(tx))
        self.processed |= seen
        self.transactions.append(tx)
        self.emitted.extend(tx.staged)
        self.keys.extend(tx.keys)
        return results


def httpx_through(monkeypatch: Any, transport: Any) -> None:
    """Every ``httpx.AsyncClient`` created from now on sends through ``transport`` (an
    ``httpx.MockTransport`` or ``ASGITransport``), whatever transport its caller chose."""
    import httpx

    real = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda *args, **kwargs: real(*args, **{**kwargs, "transport": transport}))
