"""Hand-written fakes of billing's ports, for unit tests of ``CreditGate``.

``FakeStore.transact`` runs the work with a ``FakeTransaction`` that records emitted events and
honours ``dedupe`` like the real store. ``FakeCreditRepository`` keeps accounts, the ledger and
reservations in dicts; ``record`` applies the domain's ``effect`` (what ``$inc`` does in MongoDB)
and honours ``guard`` the way the real ``find_one_and_update`` filter does.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel

from timbra_billing.domain.ledger import BALANCE_FIELDS, Entry, effect
from timbra_billing.service import CreditGate
from timbra_shared.mongo import DUPLICATE


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


class FakeCreditRepository:
    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, int]] = {}
        self.ledger: list[dict[str, Any]] = []
        self.reservations: dict[str, dict[str, Any]] = {}
        self.sessions_seen: list[Any] = []

    async def balance(self, issuer_id: str) -> dict[str, int]:
        account = self.accounts.get(issuer_id, {})
        return {f: int(account.get(f, 0)) for f in BALANCE_FIELDS}

    async def record(self, session, issuer_id, entry: Entry, quantity: int, *, reason, actor, invoice_id=None, expires_at=None, guard=None) -> bool:
        self.sessions_seen.append(session)
        account = self.accounts.get(issuer_id)
        if account is None:
            if guard is not None:  # the real repository only upserts without a guard
                return False
            account = self.accounts.setdefault(issuer_id, {})
        for field, condition in (guard or {}).items():
            for op, value in condition.items():
                assert op == "$gte", op
                if not account.get(field, 0) >= value:
                    return False
        for field, delta in effect(entry, quantity).items():
            account[field] = account.get(field, 0) + delta
        self.ledger.append({"issuer_id": issuer_id, "entry": entry.value, "quantity": quantity, "reason": reason, "actor": actor, "invoice_id": invoice_id, "expires_at": expires_at})
        return True

    async def reservation(self, invoice_id: str, session=None):
        doc = self.reservations.get(invoice_id)
        return copy.deepcopy(doc) if doc else None

    async def insert_reservation(self, doc: dict[str, Any], session) -> None:
        self.sessions_seen.append(session)
        assert doc["_id"] not in self.reservations, "duplicate reservation"
        self.reservations[doc["_id"]] = copy.deepcopy(doc)

    async def settle(self, invoice_id: str, state: str, session):
        self.sessions_seen.append(session)
        doc = self.reservations.get(invoice_id)
        if doc is None or doc["state"] != "reserved":
            return None
        before = copy.deepcopy(doc)
        doc["state"] = state
        return before


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def repo() -> FakeCreditRepository:
    return FakeCreditRepository()


@pytest.fixture
def gate(store, repo) -> CreditGate:
    return CreditGate(store=store, repo=repo)


@pytest.fixture
def make_gate():
    """A factory for fresh (gate, store, repo) triples, for property tests that need one per example."""

    def make() -> tuple[CreditGate, FakeStore, FakeCreditRepository]:
        store, repo = FakeStore(), FakeCreditRepository()
        return CreditGate(store=store, repo=repo), store, repo

    return make
