"""Hand-written fakes of the stamping service's ports (they record their calls)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from timbra_shared.events import InvoiceFunded, InvoiceSummary
from timbra_shared.mongo import DUPLICATE
from timbra_stamping.adapters.repository import DEAD, PENDING
from timbra_stamping.config import StampingConfig
from timbra_stamping.domain.pac import StampResult
from timbra_stamping.service import StampingService

NOW = datetime(2025, 6, 15, 18, 0, 0, tzinfo=UTC)  # 12:00 in Mexico City
SUMMARY = InvoiceSummary(type="I", serie="F", folio="9", fecha="2025-06-15T11:00:00", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="U", total=Decimal("232.00"))


def sealed_xml(fecha: str = "2025-06-15T11:00:00", lugar: str = "06000") -> str:
    return f'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Fecha="{fecha}" LugarExpedicion="{lugar}" Sello="abc" Total="232.00"/>'


def funded(invoice_id: str = "inv_1", *, fecha: str = "2025-06-15T11:00:00", issuer_id: str = "iss_1") -> InvoiceFunded:
    return InvoiceFunded(invoice_id=invoice_id, issuer_id=issuer_id, summary=SUMMARY.model_copy(update={"fecha": fecha}), xml=sealed_xml(fecha), reservation_id="res_1")


from timbra_shared.testing import FakeSession, FakeStore, FakeTransaction  # noqa: E402,F401


class FakeStampRepository:
    def __init__(self) -> None:
        self.stamps: dict[str, dict[str, Any]] = {}
        self.inserts: list[tuple[dict[str, Any], Any]] = []

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        doc = self.stamps.get(invoice_id)
        return copy.deepcopy(doc) if doc else None

    def add(self, doc: dict[str, Any], tx: Any) -> None:
        assert doc["_id"] not in self.stamps, "duplicate stamp"
        self.inserts.append((copy.deepcopy(doc), tx.session))
        self.stamps[doc["_id"]] = copy.deepcopy(doc)


class FakeJobRepository:
    """Same contract as JobRepository, in memory."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.sessions: list[Any] = []

    async def create(self, doc: dict[str, Any]) -> bool:
        if doc["_id"] in self.jobs:
            return False
        self.jobs[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def create_many(self, docs: list[dict[str, Any]]) -> set[str]:
        self.writes = getattr(self, "writes", 0) + 1
        return {d["_id"] for d in docs if await self.create(d)}

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        doc = self.jobs.get(invoice_id)
        if doc is None or (issuer_id is not None and doc["issuer_id"] != issuer_id):
            return None
        return copy.deepcopy(doc)

    async def claim_due(self, owner: str, now: datetime, lease_s: float) -> dict[str, Any] | None:
        due = [j for j in self.jobs.values() if j["state"] == PENDING and j["next_attempt_at"] <= now and (j.get("lease_until") is None or j["lease_until"] <= now)]
        if not due:
            return None
        job = min(due, key=lambda j: j["next_attempt_at"])
        job.update(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
        return copy.deepcopy(job)

    async def claim_due_many(self, owner: str, now: datetime, lease_s: float, limit: int) -> list[dict[str, Any]]:
        claimed = []
        while len(claimed) < limit and (job := await self.claim_due(owner, now, lease_s)) is not None:
            claimed.append(job)
        return claimed

    async def release(self, invoice_ids: list[str], owner: str) -> None:
        for invoice_id in invoice_ids:
            job = self.jobs[invoice_id]
            if job["state"] == PENDING and job.get("lease_owner") == owner:
                job.update(lease_owner=None, lease_until=None)

    async def replay(self, invoice_ids: list[str] | None, now: datetime) -> int:
        replayed = 0
        for job in self.jobs.values():
            if job["state"] == DEAD and (invoice_ids is None or job["_id"] in invoice_ids):
                job.update(state=PENDING, attempts=0, next_attempt_at=now, lease_owner=None, lease_until=None, updated_at=now, replays=job.get("replays", 0) + 1)
                self._history(job, {"at": now, "outcome": "replayed"})
                replayed += 1
        return replayed

    def _history(self, job: dict[str, Any], history: dict[str, Any] | None) -> None:
        if history is not None:
            job.setdefault("history", []).append(copy.deepcopy(history))

    async def reschedule(self, invoice_id: str, owner: str, changes: dict[str, Any], history: dict[str, Any] | None = None) -> None:
        job = self.jobs[invoice_id]
        if job["state"] != PENDING or job.get("lease_owner") != owner:
            return
        job.update(copy.deepcopy(changes), lease_owner=None, lease_until=None)
        self._history(job, history)

    def finish(self, invoice_id: str, state: str, changes: dict[str, Any], history: dict[str, Any] | None, tx: Any) -> None:
        self.sessions.append(tx.session)
        job = self.jobs[invoice_id]
        job.update(copy.deepcopy(changes), state=state, lease_owner=None, lease_until=None)
        self._history(job, history)

    async def wake(self, pac: str, now: datetime) -> int:
        woken = 0
        for job in self.jobs.values():
            if job["state"] == PENDING and job["pac"] == pac and job["next_attempt_at"] > now:
                job["next_attempt_at"] = now
                woken += 1
        return woken

    async def expired_dead(self, before: datetime, limit: int = 100) -> list[dict[str, Any]]:
        return [copy.deepcopy(j) for j in self.jobs.values() if j["state"] == DEAD and j["fail_at"] <= before][:limit]

    async def count_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job["state"]] = counts.get(job["state"], 0) + 1
        return counts


class FakePac:
    """Answers from scripts: each call pops the next StampResult/None or raises the next exception."""

    def __init__(self, name: str = "sandbox") -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []  # ("stamp"|"lookup", idempotency id)
        self.xml: list[bytes] = []
        self.script: list[StampResult | BaseException] = []
        self.lookups: list[StampResult | None | BaseException] = []

    async def stamp(self, xml: bytes, *, idempotency_id: str) -> StampResult:
        self.calls.append(("stamp", idempotency_id))
        self.xml.append(xml)
        outcome = self.script.pop(0) if self.script else StampResult(uuid=f"UUID-{idempotency_id}", xml=xml + b"<!--tfd-->", fecha_timbrado="2025-06-15T12:00:05")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def lookup(self, idempotency_id: str) -> StampResult | None:
        self.calls.append(("lookup", idempotency_id))
        outcome = self.lookups.pop(0) if self.lookups else None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        pass


class FakePacs:
    def __init__(self, *pacs: FakePac, by_issuer: dict[str, str] | None = None) -> None:
        self.pacs = {p.name: p for p in pacs}
        self.default = pacs[0].name
        self.by_issuer = by_issuer or {}

    def name_for(self, issuer_id: str) -> str:
        return self.by_issuer.get(issuer_id, self.default)

    def get(self, name: str) -> FakePac:
        return self.pacs[name]


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def repo() -> FakeStampRepository:
    return FakeStampRepository()


@pytest.fixture
def jobs() -> FakeJobRepository:
    return FakeJobRepository()


@pytest.fixture
def pac() -> FakePac:
    return FakePac()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config() -> StampingConfig:
    return StampingConfig(TIMBRA_STAMP_WORKERS=4, TIMBRA_STAMP_BACKOFF_BASE=2, TIMBRA_STAMP_BACKOFF_MAX=60, TIMBRA_STAMP_MAX_ATTEMPTS=4,
                          TIMBRA_PAC_BREAKER_THRESHOLD=3, TIMBRA_PAC_BREAKER_OPEN=10, TIMBRA_STAMP_DEADLINE_MARGIN=600)


@pytest.fixture
def stamping(store, repo, jobs, pac, registry, config, clock) -> StampingService:
    return StampingService(store=store, repo=repo, jobs=jobs, pacs=FakePacs(pac), registry=registry, config=config, owner="me", clock=clock, rand=lambda: 0.5)
