"""Hand-written fakes of the stamping service's ports."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from timbra_shared.mongo import DUPLICATE
from timbra_stamping.domain.pac import StampResult
from timbra_stamping.service import StampingService


class FakeSession:
    pass


class FakeTransaction:
    def __init__(self) -> None:
        self.session = FakeSession()
        self.staged: list[BaseModel] = []

    def emit(self, event: BaseModel, *, key: str | None = None) -> None:
        self.staged.append(event)


class FakeStore:
    def __init__(self) -> None:
        self.processed: set[str] = set()
        self.emitted: list[BaseModel] = []
        self.sessions: list[FakeSession] = []

    async def was_processed(self, dedupe: str) -> bool:
        return dedupe in self.processed

    async def transact(self, work, *, dedupe: str | None = None):
        if dedupe is not None and dedupe in self.processed:
            return DUPLICATE
        tx = FakeTransaction()
        self.sessions.append(tx.session)
        result = await work(tx)
        if dedupe is not None:
            self.processed.add(dedupe)
        self.emitted.extend(tx.staged)
        return result


class FakeStampRepository:
    def __init__(self) -> None:
        self.stamps: dict[str, dict[str, Any]] = {}
        self.inserts: list[tuple[dict[str, Any], Any]] = []

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        doc = self.stamps.get(invoice_id)
        return copy.deepcopy(doc) if doc else None

    async def insert(self, doc: dict[str, Any], session: Any) -> None:
        assert doc["_id"] not in self.stamps, "duplicate stamp"
        self.inserts.append((copy.deepcopy(doc), session))
        self.stamps[doc["_id"]] = copy.deepcopy(doc)


class FakePac:
    """Answers from a script: each call pops the next StampResult or raises the next exception."""

    name = "fake-pac"

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str]] = []
        self.script: list[StampResult | BaseException] = []

    async def stamp(self, xml: bytes, *, idempotency_id: str) -> StampResult:
        self.calls.append((xml, idempotency_id))
        outcome = self.script.pop(0) if self.script else StampResult(uuid="UUID-DEFAULT", xml=xml + b"<!--tfd-->", fecha_timbrado="2025-06-15T12:00:00")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def repo() -> FakeStampRepository:
    return FakeStampRepository()


@pytest.fixture
def pac() -> FakePac:
    return FakePac()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def stamping(store, repo, pac, registry) -> StampingService:
    return StampingService(store=store, repo=repo, pac=pac, registry=registry)
