"""``CreditGate`` with a fake repository: reserve a credit when a sealed invoice arrives, commit
it when stamped, release it when stamping fails, and do each exactly once."""

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timbra_billing.domain.ledger import balanced
from timbra_shared.events import InvoiceFunded, InvoiceRejected, InvoiceSealed, InvoiceStamped, InvoiceStampFailed, InvoiceSummary, NotificationRequested

SUMMARY = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="U", total=Decimal("232.00"))


def sealed(invoice_id="inv_1", issuer_id="iss_1") -> InvoiceSealed:
    return InvoiceSealed(invoice_id=invoice_id, issuer_id=issuer_id, summary=SUMMARY, xml="<cfdi/>", no_certificado="30001000000500003416")


def stamped(invoice_id="inv_1", issuer_id="iss_1") -> InvoiceStamped:
    return InvoiceStamped(invoice_id=invoice_id, issuer_id=issuer_id, summary=SUMMARY, uuid="U-1", fecha_timbrado="2025-01-01T00:00:00", xml="<cfdi/>", pac="sandbox")


def pipeline(store) -> list:
    """What the gate emitted on the pipeline (alerts are tested on their own)."""
    return [e for e in store.emitted if not isinstance(e, NotificationRequested)]


def failed(invoice_id="inv_1", issuer_id="iss_1") -> InvoiceStampFailed:
    return InvoiceStampFailed(invoice_id=invoice_id, issuer_id=issuer_id, message="rechazado")


async def test_grant_adds_available_credits(gate, repo):
    balance = await gate.grant("iss_1", 100, 12, actor="key_admin")
    assert balance == {"available": 100, "reserved": 0, "consumed": 0, "expired": 0, "granted": 100}
    (entry,) = repo.ledger
    assert (entry["entry"], entry["quantity"], entry["actor"]) == ("grant", 100, "key_admin")
    assert entry["expires_at"] is not None and entry["package_id"] in repo.packages


async def test_reserve_when_available_emits_funded(gate, store, repo):
    await gate.grant("iss_1", 2, 12, actor="admin")
    event = sealed()
    await gate.reserve(event)

    (funded,) = pipeline(store)
    assert isinstance(funded, InvoiceFunded)
    assert (funded.invoice_id, funded.issuer_id, funded.xml, funded.summary) == ("inv_1", "iss_1", event.xml, event.summary)
    assert funded.reservation_id.startswith("res_")
    assert repo.reservations["inv_1"]["state"] == "reserved"
    assert repo.reservations["inv_1"]["reservation_id"] == funded.reservation_id
    assert await repo.balance("iss_1") == {"available": 1, "reserved": 1, "consumed": 0, "expired": 0, "granted": 2}


async def test_reserve_without_credits_rejects(gate, store, repo):
    await gate.grant("iss_1", 1, 12, actor="admin")
    await gate.reserve(sealed("inv_1"))
    await gate.reserve(sealed("inv_2"))

    funded, rejected = pipeline(store)
    assert isinstance(funded, InvoiceFunded) and funded.invoice_id == "inv_1"
    assert isinstance(rejected, InvoiceRejected)
    assert (rejected.invoice_id, rejected.stage, rejected.service) == ("inv_2", "sealed", "billing")
    assert rejected.message.startswith("Sin folios disponibles")
    assert [e.code for e in rejected.errors] == ["TIMBRA_NO_CREDITS"]
    assert "inv_2" not in repo.reservations
    assert await repo.balance("iss_1") == {"available": 0, "reserved": 1, "consumed": 0, "expired": 0, "granted": 1}


async def test_issuer_without_account_is_rejected_and_gets_no_account(gate, store, repo):
    await gate.reserve(sealed(issuer_id="iss_new"))
    (rejected,) = pipeline(store)
    assert isinstance(rejected, InvoiceRejected)
    assert "iss_new" not in repo.accounts
    assert repo.ledger == []


async def test_redelivered_sealed_event_reserves_once(gate, store, repo):
    await gate.grant("iss_1", 5, 12, actor="admin")
    event = sealed()
    await gate.reserve(event)
    await gate.reserve(event)
    await gate.reserve(sealed())  # same invoice, new event id (a re-publish)
    assert len(pipeline(store)) == 1
    assert (await repo.balance("iss_1"))["reserved"] == 1


async def test_commit_moves_the_reservation_to_consumed(gate, repo):
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.reserve(sealed())
    await gate.commit(stamped())
    assert repo.reservations["inv_1"]["state"] == "committed"
    assert await repo.balance("iss_1") == {"available": 2, "reserved": 0, "consumed": 1, "expired": 0, "granted": 3}


async def test_release_returns_the_credit(gate, repo):
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.reserve(sealed())
    await gate.release(failed())
    assert repo.reservations["inv_1"]["state"] == "released"
    assert await repo.balance("iss_1") == {"available": 3, "reserved": 0, "consumed": 0, "expired": 0, "granted": 3}


async def test_duplicate_commit_and_release_do_nothing(gate, repo):
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.reserve(sealed())
    await gate.commit(stamped())
    before = await repo.balance("iss_1")
    ledger = len(repo.ledger)
    await gate.commit(stamped())
    await gate.release(failed())  # a late failure after the stamp must not refund
    assert await repo.balance("iss_1") == before
    assert len(repo.ledger) == ledger


async def test_settling_without_a_reservation_does_nothing(gate, repo):
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.commit(stamped("inv_unknown"))
    await gate.release(failed("inv_other"))
    assert await repo.balance("iss_1") == {"available": 3, "reserved": 0, "consumed": 0, "expired": 0, "granted": 3}


async def test_every_write_happens_in_the_transaction(gate, store, repo):
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.reserve(sealed())
    await gate.commit(stamped())
    assert repo.sessions_seen and all(s in store.sessions for s in repo.sessions_seen)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["grant", "reserve", "commit", "release"]), st.integers(min_value=0, max_value=5)), max_size=40))
async def test_any_interleaving_keeps_the_books_balanced(make_gate, ops):
    gate, store, repo = make_gate()
    for op, n in ops:
        invoice_id = f"inv_{n}"
        if op == "grant":
            await gate.grant("iss_1", n + 1, 1, actor="admin")
        elif op == "reserve":
            await gate.reserve(sealed(invoice_id))
        elif op == "commit":
            await gate.commit(stamped(invoice_id))
        else:
            await gate.release(failed(invoice_id))
        balance = await repo.balance("iss_1")
        assert balanced(balance)
        assert all(v >= 0 for v in balance.values())
        states = [r["state"] for r in repo.reservations.values()]
        assert balance["reserved"] == states.count("reserved")
        assert balance["consumed"] == states.count("committed")
    funded = [e.invoice_id for e in store.emitted if isinstance(e, InvoiceFunded)]
    assert len(funded) == len(set(funded)) == len(repo.reservations)


# ---------------------------------------------------------------- a consumed batch at once

async def test_a_batch_reserves_across_issuers_and_packages_in_one_transaction(gate, store, repo):
    await gate.grant("iss_1", 2, 1, actor="admin")   # expires first: used first
    await gate.grant("iss_1", 3, 12, actor="admin")
    await gate.grant("iss_2", 1, 12, actor="admin")
    first, later = sorted((p for p in repo.packages.values() if p["issuer_id"] == "iss_1"), key=lambda p: p["expires_at"])
    repo.round_trips = 0
    batch = [sealed(f"inv_{n}") for n in range(4)] + [sealed("inv_b1", "iss_2"), sealed("inv_b2", "iss_2")]
    await gate.reserve_many(batch)
    assert store.groups[-1] == len(batch) + 1  # the events, then the write of their moves
    assert repo.round_trips == 2 + 4 + 1  # reads (reservations, packages), moves, reservations
    funded = [e.invoice_id for e in store.emitted if isinstance(e, InvoiceFunded)]
    rejected = [e.invoice_id for e in store.emitted if isinstance(e, InvoiceRejected)]
    assert funded == ["inv_0", "inv_1", "inv_2", "inv_3", "inv_b1"] and rejected == ["inv_b2"]
    assert [repo.reservations[f"inv_{n}"]["package_id"] for n in range(4)] == [first["_id"], first["_id"], later["_id"], later["_id"]]
    assert (first["available"], first["reserved"], later["available"], later["reserved"]) == (0, 2, 1, 2)
    assert await repo.balance("iss_1") == {"available": 1, "reserved": 4, "consumed": 0, "expired": 0, "granted": 5}
    assert await repo.balance("iss_2") == {"available": 0, "reserved": 1, "consumed": 0, "expired": 0, "granted": 1}
    reserve_entries = [e for e in repo.ledger if e["entry"] == "reserve"]
    assert sorted(e["invoice_id"] for e in reserve_entries) == sorted(funded) and all(e["quantity"] == 1 for e in reserve_entries)
    # each funded event carries its reservation
    assert {e.invoice_id: e.reservation_id for e in store.emitted if isinstance(e, InvoiceFunded)} == {i: repo.reservations[i]["reservation_id"] for i in funded}


async def test_a_batch_with_a_repeat_and_an_already_reserved_invoice_reserves_each_once(gate, store, repo):
    await gate.grant("iss_1", 5, 12, actor="admin")
    await gate.reserve(sealed("inv_1"))
    await gate.reserve_many([sealed("inv_1"), sealed("inv_2"), sealed("inv_2"), sealed("inv_3")])
    assert sorted(repo.reservations) == ["inv_1", "inv_2", "inv_3"]
    assert [e.invoice_id for e in pipeline(store)] == ["inv_1", "inv_2", "inv_3"]
    assert (await repo.balance("iss_1"))["reserved"] == 3


async def test_a_reservation_found_in_the_database_is_not_taken_again(gate, store, repo):
    """A sealed event whose reservation committed under another dedupe key (a redrive)."""
    await gate.grant("iss_1", 5, 12, actor="admin")
    await gate.reserve(sealed("inv_1"))
    store.processed.clear()
    await gate.reserve_many([sealed("inv_1"), sealed("inv_2")])
    assert sorted(repo.reservations) == ["inv_1", "inv_2"] and (await repo.balance("iss_1"))["reserved"] == 2


async def test_a_batch_that_fails_leaves_nothing(gate, store, repo, monkeypatch):
    await gate.grant("iss_1", 5, 12, actor="admin")

    async def broken(*args, **kwargs):
        raise ConnectionError("mongod went away")

    monkeypatch.setattr(repo, "insert_reservations", broken)
    try:
        await gate.reserve_many([sealed("inv_1"), sealed("inv_2")])
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failure was swallowed")
    assert repo.reservations == {} and (await repo.balance("iss_1"))["available"] == 5 and pipeline(store) == []
    monkeypatch.undo()
    await gate.reserve_many([sealed("inv_1"), sealed("inv_2")])  # the redelivery then takes effect
    assert sorted(repo.reservations) == ["inv_1", "inv_2"]


async def test_commit_many_settles_a_batch_once(gate, store, repo):
    await gate.grant("iss_1", 5, 12, actor="admin")
    await gate.reserve_many([sealed(f"inv_{n}") for n in range(3)])
    repo.round_trips = 0
    await gate.commit_many([stamped("inv_0"), stamped("inv_1"), stamped("inv_1"), stamped("inv_unknown")])
    assert repo.round_trips == 2 + 4
    await gate.commit_many([stamped("inv_0")])
    assert await repo.balance("iss_1") == {"available": 2, "reserved": 1, "consumed": 2, "expired": 0, "granted": 5}
    assert [r["state"] for _, r in sorted(repo.reservations.items())] == ["committed", "committed", "reserved"]
    assert sorted(e["invoice_id"] for e in repo.ledger if e["entry"] == "commit") == ["inv_0", "inv_1"]


_ops = st.lists(st.tuples(st.sampled_from(["grant", "reserve", "commit", "release"]), st.integers(min_value=0, max_value=7), st.sampled_from(["iss_1", "iss_2"])), max_size=40)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_ops, st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=10))
async def test_batches_end_where_the_same_events_one_by_one_end(make_gate, ops, sizes):
    """The same events, consumed in batches of any size or one at a time, leave the same books:
    the same invoices funded (from the same packages) and rejected, the same balances."""

    async def run(batch_sizes: list[int]):
        gate, store, repo = make_gate()
        pending: list[tuple[str, object]] = []
        size_at = iter(batch_sizes * 50)

        async def drain():
            # consecutive events of one kind form a batch, as a topic's consumer would see them
            while pending:
                kind = pending[0][0]
                n = next(size_at)
                batch = []
                while pending and pending[0][0] == kind and len(batch) < n:
                    batch.append(pending.pop(0)[1])
                if kind == "reserve":
                    await gate.reserve_many(batch)
                elif kind == "commit":
                    await gate.commit_many(batch)
                else:
                    for event in batch:
                        await gate.release(event)

        for op, n, issuer in ops:
            invoice_id = f"{issuer}_inv_{n}"
            if op == "grant":
                await drain()
                await gate.grant(issuer, n + 1, 1 + n % 3, actor="admin")
            else:
                pending.append((op, {"reserve": sealed, "commit": stamped, "release": failed}[op](invoice_id, issuer)))
        await drain()
        for issuer in ("iss_1", "iss_2"):
            balance = await repo.balance(issuer)
            assert balanced(balance) and all(v >= 0 for v in balance.values())
        books = await gate.check_books()
        assert books["ok"], books
        outcome = sorted((type(e).__name__, e.invoice_id) for e in store.emitted if isinstance(e, InvoiceFunded | InvoiceRejected))
        packages_by_grant = {p["_id"]: i for i, p in enumerate(sorted(repo.packages.values(), key=lambda p: p["granted_at"]))}
        held = sorted((i, packages_by_grant[r["package_id"]], r["state"]) for i, r in repo.reservations.items())
        return outcome, held, {i: await repo.balance(i) for i in ("iss_1", "iss_2")}

    assert await run(sizes) == await run([1])
