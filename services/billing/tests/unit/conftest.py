"""Hand-written fakes of billing's ports, for unit tests of ``CreditGate``.

``FakeStore`` is the project's (``timbra_shared.testing``): it records emitted events and honours
``dedupe`` like the real store; here a unit of work that raises also leaves no trace (the fake
repository snapshots its state and restores it, as an aborted MongoDB transaction would).
``FakeCreditRepository`` keeps accounts, packages, the ledger and reservations in dicts; ``record``
applies the domain's ``effect`` to the package and the account (what ``$inc`` does in MongoDB)
with the same guards the real filters have.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest

from timbra_billing.adapters.repository import LedgerConflict
from timbra_billing.domain.ledger import BALANCE_FIELDS, Entry, effect, guard_for
from timbra_billing.service import CreditGate
from timbra_shared.ids import new_id, utcnow
from timbra_shared.testing import FakeStore as SharedFakeStore


class FakeStore(SharedFakeStore):
    """The project's fake store, plus what an aborted MongoDB transaction does to billing's fake
    repository (its state is restored) and the outbox's unique event ids (a repeat aborts)."""

    def __init__(self, repo: FakeCreditRepository | None = None) -> None:
        super().__init__()
        self.repo = repo

    async def transact(self, work, *, dedupe: str | None = None):
        return await self._atomically(super().transact(work, dedupe=dedupe))

    async def transact_many(self, units):
        return await self._atomically(super().transact_many(units))

    async def _atomically(self, call):
        snapshot = self.repo.snapshot() if self.repo else None
        before = len(self.emitted)
        try:
            result = await call
        except BaseException:
            if self.repo:
                self.repo.restore(snapshot)
            raise
        ids = [getattr(e, "event_id", None) for e in self.emitted[:before]]
        for event in self.emitted[before:]:
            assert getattr(event, "event_id", None) not in ids, f"duplicate event id {event.event_id}"
        return result


class FakeDirectory:
    def __init__(self, contacts: dict[str, dict[str, Any]] | None = None) -> None:
        self.contacts = contacts or {}

    async def contact(self, issuer_id: str) -> dict[str, Any] | None:
        return self.contacts.get(issuer_id)


class FakeCreditRepository:
    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.packages: dict[str, dict[str, Any]] = {}
        self.ledger: list[dict[str, Any]] = []
        self.reservations: dict[str, dict[str, Any]] = {}
        self.sessions_seen: list[Any] = []
        self.round_trips = 0  # of the batch methods, as the real repository would make them

    def snapshot(self) -> tuple:
        return copy.deepcopy((self.accounts, self.packages, self.ledger, self.reservations))

    def restore(self, state: tuple) -> None:
        self.accounts, self.packages, self.ledger, self.reservations = state

    async def balance(self, issuer_id: str, session=None) -> dict[str, int]:
        account = self.accounts.get(issuer_id, {})
        return {f: int(account.get(f, 0)) for f in BALANCE_FIELDS}

    async def account(self, issuer_id: str, session=None):
        doc = self.accounts.get(issuer_id)
        return copy.deepcopy(doc) if doc else None

    async def list_packages(self, issuer_id: str):
        return sorted((copy.deepcopy(p) for p in self.packages.values() if p["issuer_id"] == issuer_id), key=lambda p: (p["expires_at"], p["_id"]))

    async def package(self, package_id: str, session=None):
        doc = self.packages.get(package_id)
        return copy.deepcopy(doc) if doc else None

    async def first_package(self, issuer_id: str, now: datetime, session, field: str = "available"):
        self.sessions_seen.append(session)
        live = [p for p in self.packages.values() if p["issuer_id"] == issuer_id and p[field] >= 1 and p["expires_at"] > now]
        return copy.deepcopy(min(live, key=lambda p: (p["expires_at"], p["_id"]))) if live else None

    async def due_packages(self, now: datetime, limit: int = 500):
        return [{"_id": p["_id"], "issuer_id": p["issuer_id"]} for p in self.packages.values() if p["expires_at"] <= now and p["available"] > 0]

    async def insert_package(self, doc: dict[str, Any], session) -> None:
        self.sessions_seen.append(session)
        self.packages[doc["_id"]] = {**dict.fromkeys(BALANCE_FIELDS, 0), **copy.deepcopy(doc)}

    async def record(self, session, issuer_id, entry: Entry, quantity: int, *, package_id, reason, actor, invoice_id=None, ref=None, expires_at=None) -> dict[str, Any]:
        self.sessions_seen.append(session)
        guard = guard_for(entry, quantity)
        package = self.packages.get(package_id)
        if package is None or package["issuer_id"] != issuer_id or any(package.get(f, 0) < need for f, need in guard.items()):
            raise LedgerConflict(package_id)
        account = self.accounts.get(issuer_id)
        if account is None:
            if guard:
                raise LedgerConflict(issuer_id)
            account = self.accounts.setdefault(issuer_id, {"_id": issuer_id})
        if any(account.get(f, 0) < need for f, need in guard.items()):
            raise LedgerConflict(issuer_id)
        for field, delta in effect(entry, quantity).items():
            package[field] = package.get(field, 0) + delta
            account[field] = account.get(field, 0) + delta
        self.ledger.append({"_id": new_id("led_"), "issuer_id": issuer_id, "entry": entry.value, "quantity": quantity, "package_id": package_id, "reason": reason, "actor": actor, "invoice_id": invoice_id, "reference": ref, "expires_at": expires_at, "at": utcnow()})
        return copy.deepcopy(account)

    async def bump_generation(self, issuer_id: str, session) -> None:
        account = self.accounts[issuer_id]
        account["alert_generation"] = account.get("alert_generation", 0) + 1

    async def mark_alert(self, issuer_id: str, kind: str, generation: int, session) -> bool:
        alerted = self.accounts[issuer_id].setdefault("alerted", {})
        if alerted.get(kind) == generation:
            return False
        alerted[kind] = generation
        return True

    async def set_alerts(self, issuer_id: str, threshold: int, emails):
        account = self.accounts.setdefault(issuer_id, {"_id": issuer_id, **dict.fromkeys(BALANCE_FIELDS, 0)})
        account["alert_threshold"] = threshold
        if emails is not None:
            account["alert_emails"] = emails
        return copy.deepcopy(account)

    async def mark_package_expired(self, package_id: str, session) -> None:
        self.packages[package_id]["expired_at"] = utcnow()

    async def reservations_of(self, invoice_ids, session) -> set[str]:
        self.sessions_seen.append(session)
        self.round_trips += 1
        return {i for i in invoice_ids if i in self.reservations}

    async def insert_reservations(self, docs, session) -> None:
        self.sessions_seen.append(session)
        self.round_trips += 1
        for doc in docs:
            assert doc["_id"] not in self.reservations, "duplicate reservation"
            self.reservations[doc["_id"]] = copy.deepcopy(doc)

    async def usable_packages(self, issuer_ids, now: datetime, session):
        self.sessions_seen.append(session)
        self.round_trips += 1
        live = [p for p in self.packages.values() if p["issuer_id"] in issuer_ids and p["available"] >= 1 and p["expires_at"] > now]
        return [copy.deepcopy(p) for p in sorted(live, key=lambda p: (p["expires_at"], p["_id"]))]

    async def record_many(self, session, lines) -> dict[str, dict[str, Any]]:
        """One entry at a time through ``record``'s rules (the real one sums them per package and per
        account, with the same guards, and aborts as a whole)."""
        self.round_trips += 4
        accounts = {}
        for line in lines:
            accounts[line.issuer_id] = await self.record(
                session, line.issuer_id, line.entry, line.quantity, package_id=line.package_id, reason=line.reason,
                actor=line.actor, invoice_id=line.invoice_id, ref=line.reference, expires_at=line.expires_at,
            )
        return accounts

    async def settle_many(self, invoice_ids, state: str, session):
        self.round_trips += 2
        settled = []
        for invoice_id in invoice_ids:
            before = await self.settle(invoice_id, state, session)
            if before:
                settled.append(before)
        return settled

    async def settle(self, invoice_id: str, state: str, session):
        self.sessions_seen.append(session)
        doc = self.reservations.get(invoice_id)
        if doc is None or doc["state"] != "reserved":
            return None
        before = copy.deepcopy(doc)
        doc["state"] = state
        return before

    async def ledger_sums(self):
        out: dict[str, dict[str, int]] = {}
        for e in self.ledger:
            sums = out.setdefault(e["issuer_id"], {})
            sums[e["entry"]] = sums.get(e["entry"], 0) + e["quantity"]
        return out

    async def package_sums(self):
        out: dict[str, dict[str, int]] = {}
        for p in self.packages.values():
            sums = out.setdefault(p["issuer_id"], dict.fromkeys(BALANCE_FIELDS, 0))
            for f in BALANCE_FIELDS:
                sums[f] += p[f]
        return out

    async def all_accounts(self):
        return copy.deepcopy(list(self.accounts.values()))


@pytest.fixture
def repo() -> FakeCreditRepository:
    return FakeCreditRepository()


@pytest.fixture
def store(repo) -> FakeStore:
    return FakeStore(repo)


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory({"iss_1": {"email": "emisor@example.com"}})


@pytest.fixture
def gate(store, repo, directory) -> CreditGate:
    return CreditGate(store=store, repo=repo, directory=directory)


@pytest.fixture
def make_gate():
    """A factory for fresh (gate, store, repo) triples, for property tests that need one per example."""

    def make() -> tuple[CreditGate, FakeStore, FakeCreditRepository]:
        repo = FakeCreditRepository()
        store = FakeStore(repo)
        return CreditGate(store=store, repo=repo, directory=FakeDirectory()), store, repo

    return make
