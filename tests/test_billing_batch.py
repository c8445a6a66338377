"""Billing's batch reservation and commit against the platform's real mongod: the moves of a batch
are summed per package and per account under the same guards as one entry at a time, a guard
that does not hold aborts the whole batch, and two batches racing for the same credits never
overdraw them (MongoDB's write conflicts retry the loser's transaction)."""

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio

from timbra_billing.adapters.repository import CreditRepository, LedgerConflict, LedgerLine
from timbra_billing.domain.ledger import Entry
from timbra_billing.service import CreditGate
from timbra_shared.events import InvoiceSealed, InvoiceStamped, InvoiceSummary
from timbra_shared.ids import new_id
from timbra_shared.mongo import Store, make_client
from timbra_shared.outbox import Outbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SUMMARY = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="XAXX010101000", nombre_receptor="PUBLICO EN GENERAL", total=Decimal("1"))


@pytest_asyncio.fixture(loop_scope="session")
async def billing(platform) -> AsyncIterator[tuple[CreditGate, CreditRepository, list[dict]]]:
    client = make_client(platform.mongodb_url)
    published: list[dict] = []

    async def publish(topic: str, payload: bytes, key: bytes, headers: dict[str, str]) -> None:
        published.append({"topic": topic, "key": key.decode()})

    outbox = Outbox(None, publish)
    db_name = f"timbra_test_billing_{new_id().lower()}"
    store = Store(client, db_name, outbox)
    outbox.bind(store.db.outbox)
    await store.ensure_indexes()
    repo = CreditRepository(store.db)
    await repo.ensure_indexes()
    yield CreditGate(store=store, repo=repo), repo, published
    await client.drop_database(db_name)
    await client.close()


def sealed(invoice_id: str, issuer_id: str = "iss_1") -> InvoiceSealed:
    return InvoiceSealed(invoice_id=invoice_id, issuer_id=issuer_id, summary=SUMMARY, xml="<cfdi/>", no_certificado="30001000000500003416")


def stamped(invoice_id: str, issuer_id: str = "iss_1") -> InvoiceStamped:
    return InvoiceStamped(invoice_id=invoice_id, issuer_id=issuer_id, summary=SUMMARY, uuid="U", fecha_timbrado="2026-01-01T00:00:00", xml="<cfdi/>", pac="sandbox")


async def outbox_types(repo: CreditRepository) -> dict[str, str]:
    db = repo.accounts.database
    return {doc["invoice_id"]: doc["topic"] async for doc in db.outbox.find({"invoice_id": {"$ne": None}})}


async def test_a_batch_reserves_fifo_across_packages_and_commits_once(billing):
    gate, repo, _ = billing
    await gate.grant("iss_1", 2, 1, actor="admin")
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.grant("iss_2", 1, 12, actor="admin")
    soon, later = await repo.list_packages("iss_1")
    batch = [sealed(f"inv_{n}") for n in range(4)] + [sealed("inv_3"), sealed("inv_b1", "iss_2"), sealed("inv_b2", "iss_2")]
    await gate.reserve_many(batch)
    held = {r["_id"]: r["package_id"] async for r in repo.reservations.find({})}
    assert held == {"inv_0": soon["_id"], "inv_1": soon["_id"], "inv_2": later["_id"], "inv_3": later["_id"], "inv_b1": (await repo.list_packages("iss_2"))[0]["_id"]}
    assert await repo.balance("iss_1") == {"available": 1, "reserved": 4, "consumed": 0, "expired": 0, "granted": 5}
    assert [(p["available"], p["reserved"]) for p in await repo.list_packages("iss_1")] == [(0, 2), (1, 2)]
    types = await outbox_types(repo)
    assert [types[f"inv_{n}"] for n in range(4)] == ["invoice.funded"] * 4
    assert (types["inv_b1"], types["inv_b2"]) == ("invoice.funded", "invoice.rejected")

    await gate.reserve_many(batch)  # redelivered: nothing moves
    await gate.commit_many([stamped("inv_0"), stamped("inv_2"), stamped("inv_2"), stamped("inv_nope")])
    await gate.commit_many([stamped("inv_0")])
    assert await repo.balance("iss_1") == {"available": 1, "reserved": 2, "consumed": 2, "expired": 0, "granted": 5}
    assert sorted([e["invoice_id"], e["entry"]] for e in await repo.entries("iss_1") if e["entry"] != "grant") == [
        ["inv_0", "commit"], ["inv_0", "reserve"], ["inv_1", "reserve"], ["inv_2", "commit"], ["inv_2", "reserve"], ["inv_3", "reserve"],
    ]
    books = await gate.check_books()
    assert books["ok"], books


async def test_a_move_that_would_overdraw_aborts_the_whole_batch(billing):
    gate, repo, _ = billing
    await gate.grant("iss_x", 2, 12, actor="admin")
    (package,) = await repo.list_packages("iss_x")
    lines = [LedgerLine("iss_x", Entry.RESERVE, 1, package["_id"], "t", "test", f"inv_{n}") for n in range(3)]
    client = repo.accounts.database.client
    with pytest.raises(LedgerConflict):
        async with client.start_session() as session:
            await session.with_transaction(lambda s: repo.record_many(s, lines))
    assert await repo.balance("iss_x") == {"available": 2, "reserved": 0, "consumed": 0, "expired": 0, "granted": 2}
    assert [e["entry"] for e in await repo.entries("iss_x")] == ["grant"]
    async with client.start_session() as session:
        accounts = await session.with_transaction(lambda s: repo.record_many(s, lines[:2]))
    assert accounts["iss_x"]["available"] == 0 and accounts["iss_x"]["reserved"] == 2


async def test_batches_racing_for_the_same_credits_never_overdraw(billing):
    gate, repo, _ = billing
    await gate.grant("iss_r", 30, 12, actor="admin")
    batches = [[sealed(f"race_{b}_{n}", "iss_r") for n in range(10)] for b in range(6)]
    await asyncio.gather(*(gate.reserve_many(batch) for batch in batches))
    balance = await repo.balance("iss_r")
    assert balance == {"available": 0, "reserved": 30, "consumed": 0, "expired": 0, "granted": 30}
    types = await outbox_types(repo)
    assert sorted(types.values()).count("invoice.funded") == 30 and len([i for i in types if i.startswith("race_")]) == 60
    assert await repo.reservations.count_documents({"issuer_id": "iss_r"}) == 30
    books = await gate.check_books()
    assert books["ok"], books
