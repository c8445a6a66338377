"""Helpers for the chaos and scaling tests: traffic that keeps flowing while something breaks,
and the exactly-once check that follows (one final state, one UUID, one stamp at the PAC and one
email per invoice; the credit ledger balances). Plain asserts, so they fail with a message."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from .scenario import FINAL, Issuer, TimbraClient, sample_invoice


async def pac_stamp_count(platform: Any) -> int:
    """CFDIs the sandbox PAC has stamped since it started (every issuer)."""
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(platform.url("sandbox-pac") + "/healthz")).json()["stamps"]


async def post_until_accepted(client: TimbraClient, issuer: Issuer, key: str, body: dict[str, Any], *, timeout: float = 300) -> str:
    """POST an invoice with an idempotency key, retrying (same key) through transport errors and
    5xx, as an integrator would during an outage; returns the one invoice id the key names."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = await client.create_invoice(issuer, {**body, "idempotency_key": key})
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code in (200, 202):
                return response.json()["id"]
            assert response.status_code >= 500 or response.status_code == 429, f"{response.status_code}: {response.text[:500]}"
            last = f"{response.status_code}: {response.text[:200]}"
        await asyncio.sleep(0.5)
    raise AssertionError(f"the invoice with key {key} was never accepted; last answer {last}")


class Traffic:
    """Posts invoices at about ``rate`` per second (each with its own idempotency key and customer
    email) until stopped; ``ids`` maps key -> invoice id. Requests stuck in an outage keep retrying
    while new ones start, so traffic flows before, during and after the fault."""

    def __init__(self, client: TimbraClient, issuer: Issuer, tag: str, *, rate: float = 4.0, concurrency: int = 20) -> None:
        self.client, self.issuer, self.tag, self.rate = client, issuer, tag, rate
        self.ids: dict[str, str] = {}
        self.started = 0
        self.started_at: list[float] = []  # time.monotonic() of each request's first attempt
        self._stop = asyncio.Event()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> Traffic:
        self._loop = asyncio.create_task(self._run())
        return self

    async def _one(self, n: int) -> None:
        async with self._semaphore:
            key = f"{self.tag}-{n}"
            self.ids[key] = await post_until_accepted(self.client, self.issuer, key, sample_invoice(email=f"{key}@example.com"))

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.started_at.append(time.monotonic())
            self._tasks.append(asyncio.create_task(self._one(self.started)))
            self.started += 1
            await asyncio.sleep(1 / self.rate)

    async def stop(self) -> list[str]:
        """Stop starting requests, wait for the ones under way; the invoice ids in request order."""
        self._stop.set()
        if self._loop is not None:
            await self._loop
        await asyncio.gather(*self._tasks)
        ids = [self.ids[f"{self.tag}-{n}"] for n in range(self.started)]
        assert len(set(ids)) == len(ids), "two idempotency keys named the same invoice"
        return ids


async def mails_per_invoice(platform: Any, ids: list[str]) -> dict[str, int]:
    """How many messages the SMTP sink received for each invoice (Message-ID <invoice_id@…>)."""
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:
        messages = (await sink.get("/api/messages")).json()
    wanted = set(ids)
    counts: Counter[str] = Counter()
    for message in messages:
        invoice_id = (message.get("message_id") or "").strip("<>").split("@")[0]
        if invoice_id in wanted:
            counts[invoice_id] += 1
    return {i: counts[i] for i in ids}


async def assert_exactly_once(client: TimbraClient, platform: Any, issuer: Issuer, ids: list[str], *, stamps_before: int, credits: int, timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Every invoice emailed once with its own UUID, the PAC stamped each once (no other issuer may
    stamp meanwhile), and the issuer's credits: one consumed per invoice, none reserved, the ledger
    adds up to what was granted."""
    states = await client.wait_final(issuer, ids, until=FINAL, timeout=timeout, interval=1.0, sample=50)
    statuses = Counter(s["status"] for s in states.values())
    assert statuses == {"emailed": len(ids)}, dict(statuses)
    uuids = {s["uuid"] for s in states.values()}
    assert len(uuids) == len(ids), "an invoice got more than one UUID, or two invoices share one"
    assert await pac_stamp_count(platform) - stamps_before == len(ids), "the PAC stamped more (or fewer) CFDIs than there are invoices"
    mails = await mails_per_invoice(platform, ids)
    assert set(mails.values()) == {1}, {k: v for k, v in mails.items() if v != 1}
    deadline = time.monotonic() + 60
    while True:  # billing commits on invoice.stamped, which may trail the read model a little
        balance = (await client.http.get("/v1/billing/balance", headers=issuer.headers)).json()
        if balance["consumed"] == len(ids) and balance["reserved"] == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert balance["consumed"] == len(ids) and balance["reserved"] == 0, balance
    assert balance["available"] + balance["reserved"] + balance["consumed"] + balance["expired"] == balance["granted"] == credits, balance
    ledger = (await client.http.get("/v1/billing/ledger", headers=issuer.headers, params={"limit": 1000})).json()["data"]
    commits = Counter(e.get("invoice_id") for e in ledger if e.get("entry") == "commit")
    assert all(commits[i] == 1 for i in ids) and sum(commits.values()) == len(ids), "a credit was committed twice, or never"
    books = (await client.http.get("/v1/billing/books/check", headers=client.admin)).json()
    assert books["ok"], books["mismatches"]
    return states
