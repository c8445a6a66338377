"""``StampingService`` with fakes of its ports: jobs, attempts, retries, breaker, deadline, dead letters."""

from datetime import timedelta
from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from timbra_shared import topics
from timbra_shared.events import DeadLetter, InvoiceFunded, InvoiceStamped, InvoiceStampFailed
from timbra_shared.messaging import BatchConsumer, DeadLetters
from timbra_stamping.adapters.repository import DEAD, FAILED, PENDING, STAMPED
from timbra_stamping.domain.pac import PacRejected, PacUnavailable, StampResult

from .conftest import SUMMARY, FakePac, FakePacs, funded, sealed_xml

UUID = "5FB2822E-396D-4725-8521-CDC4BDD20CCF"
STAMPED_XML = sealed_xml().replace("/>", "><cfdi:Complemento/></cfdi:Comprobante>").encode()


def result(previous: bool = False) -> StampResult:
    return StampResult(uuid=UUID, xml=STAMPED_XML, fecha_timbrado="2025-06-15T12:00:05", previous=previous)


async def dead_lettered(stamping, jobs, clock) -> None:  # noqa: ANN001
    """inv_1 funded, then every attempt fails until its retries run out (the PAC's script says how)."""
    await stamping.accept(funded())
    for _ in range(4):
        await stamping.schedule_due()
        await stamping.drain()
        clock.advance(120)
    assert jobs.jobs["inv_1"]["state"] == DEAD


def sample(registry, name: str, labels: dict) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_accept_records_a_job_and_a_redelivery_is_a_no_op(stamping, jobs, pac):
    await stamping.accept(funded())
    await stamping.accept(funded())
    assert list(jobs.jobs) == ["inv_1"]
    job = jobs.jobs["inv_1"]
    assert job["state"] == PENDING and job["attempts"] == 0 and job["pac"] == "sandbox"
    assert job["lease_owner"] == "me"  # leased to this instance: it goes to a local worker at once
    assert stamping.queue.qsize() == 1
    assert pac.calls == []  # the handler never calls the PAC: a slow PAC cannot block the partition


async def test_a_batch_of_funded_events_is_one_write_with_its_duplicates_ignored(stamping, jobs, pac):
    await stamping.accept(funded("inv_0"))  # delivered earlier
    await stamping.accept_many([funded("inv_0"), funded("inv_1"), funded("inv_2"), funded("inv_1")])
    assert sorted(jobs.jobs) == ["inv_0", "inv_1", "inv_2"]
    assert jobs.writes == 2  # one insert for the whole batch
    assert [stamping.queue.get_nowait()["_id"] for _ in range(stamping.queue.qsize())] == ["inv_0", "inv_1", "inv_2"]
    assert pac.calls == []


async def test_stamps_once_and_records_the_xml_byte_exact(stamping, store, repo, jobs, pac, registry):
    pac.script = [result()]
    await stamping.accept(funded())
    await stamping.drain()
    await stamping.accept(funded())  # redelivery after the stamp
    await stamping.drain()

    assert pac.calls == [("stamp", "inv_1")] and pac.xml == [sealed_xml().encode()]
    ((doc, session),) = repo.inserts
    assert session is store.sessions[0] and jobs.sessions == [session]  # stamp, job and event in one transaction
    assert doc["_id"] == "inv_1" and doc["issuer_id"] == "iss_1" and doc["uuid"] == UUID
    assert doc["xml"] == STAMPED_XML and doc["pac"] == "sandbox" and doc["recovered_previous"] is False
    (stamped,) = store.emitted
    assert isinstance(stamped, InvoiceStamped)
    assert (stamped.invoice_id, stamped.uuid, stamped.xml, stamped.pac) == ("inv_1", UUID, STAMPED_XML.decode(), "sandbox")
    assert stamped.summary.folio == SUMMARY.folio
    assert store.processed == {f"{topics.INVOICE_FUNDED}:inv_1"}
    assert jobs.jobs["inv_1"]["state"] == STAMPED and jobs.jobs["inv_1"]["uuid"] == UUID
    assert sample(registry, "timbra_stamps_total", {"outcome": "stamped"}) == 1


async def test_rejection_fails_the_stamp_with_sats_code(stamping, store, repo, jobs, pac, registry):
    message = "El resultado de la digestión debe ser igual al resultado de la desencripción del sello."
    pac.script = [PacRejected("CFDI40102", message)]
    await stamping.accept(funded())
    await stamping.drain()

    (failed,) = store.emitted
    assert isinstance(failed, InvoiceStampFailed) and failed.message == message
    (error,) = failed.errors
    assert (error.code, error.source, error.message) == ("CFDI40102", "sat", message)
    assert repo.inserts == [] and jobs.jobs["inv_1"]["state"] == FAILED
    assert jobs.jobs["inv_1"]["failure"]["code"] == "CFDI40102"
    assert sample(registry, "timbra_stamps_total", {"outcome": "rejected"}) == 1


async def test_transient_failure_is_rescheduled_with_backoff_and_acked(stamping, store, jobs, pac, clock, registry):
    pac.script = [PacUnavailable("PAC respondió 503")]
    await stamping.accept(funded())
    await stamping.drain()

    job = jobs.jobs["inv_1"]
    assert store.emitted == [] and job["state"] == PENDING
    assert job["attempts"] == 1 and job["last_error"] == "PAC respondió 503"
    assert job["next_attempt_at"] == clock.now + timedelta(seconds=1.5)  # base 2 s, rand 0.5 -> 1 + 0.5
    assert job["lease_owner"] is None  # released for whichever instance is free
    assert sample(registry, "timbra_stamp_retries_total", {"pac": "sandbox", "reason": "unavailable"}) == 1

    assert await stamping.schedule_due() == 0  # not due yet
    clock.advance(2)
    assert await stamping.schedule_due() == 1
    await stamping.drain()
    assert [type(e) for e in store.emitted] == [InvoiceStamped]
    assert [c[0] for c in pac.calls] == ["stamp", "stamp"]
    assert jobs.jobs["inv_1"]["state"] == STAMPED


async def test_after_a_timeout_the_pac_is_asked_for_the_earlier_stamp_first(stamping, store, repo, jobs, pac, clock, registry):
    pac.script = [PacUnavailable("ReadTimeout", maybe_stamped=True)]
    pac.lookups = [result(previous=True)]
    await stamping.accept(funded())
    await stamping.drain()
    assert jobs.jobs["inv_1"]["maybe_stamped"] is True
    clock.advance(60)
    await stamping.schedule_due()
    await stamping.drain()

    assert pac.calls == [("stamp", "inv_1"), ("lookup", "inv_1")]  # never a second stamp request
    assert repo.stamps["inv_1"]["uuid"] == UUID and repo.stamps["inv_1"]["recovered_previous"] is True
    assert sample(registry, "timbra_stamps_total", {"outcome": "recovered"}) == 1


async def test_lookup_without_a_stamp_sends_the_cfdi_again(stamping, store, pac, clock):
    pac.script = [PacUnavailable("ReadTimeout", maybe_stamped=True)]
    pac.lookups = [None]
    await stamping.accept(funded())
    await stamping.drain()
    clock.advance(60)
    await stamping.schedule_due()
    await stamping.drain()
    assert pac.calls == [("stamp", "inv_1"), ("lookup", "inv_1"), ("stamp", "inv_1")]
    assert [type(e) for e in store.emitted] == [InvoiceStamped]


async def test_breaker_opens_defers_without_calling_the_pac_and_a_probe_closes_it(stamping, store, jobs, pac, clock, registry):
    pac.script = [PacUnavailable("refused")] * 3
    for n in range(5):
        await stamping.accept(funded(f"inv_{n}"))
    await stamping.drain()

    assert len(pac.calls) == 3  # threshold 3: the last two never reached the PAC
    assert sample(registry, "timbra_pac_breaker_state", {"pac": "sandbox"}) == 2
    assert sample(registry, "timbra_stamp_retries_total", {"pac": "sandbox", "reason": "breaker_open"}) == 2
    deferred = [jobs.jobs[f"inv_{n}"] for n in (3, 4)]
    assert all(j["attempts"] == 0 and j["next_attempt_at"] == clock.now + timedelta(seconds=10.5) for j in deferred)

    clock.advance(11)
    await stamping.schedule_due()
    await stamping.drain()  # one probe succeeds, the breaker closes, the rest go through
    import asyncio

    await asyncio.sleep(0)  # the wake-up task
    await stamping.schedule_due()
    await stamping.drain()
    assert sample(registry, "timbra_pac_breaker_state", {"pac": "sandbox"}) == 0
    assert sorted(e.invoice_id for e in store.emitted) == [f"inv_{n}" for n in range(5)]


async def test_a_closing_breaker_makes_waiting_jobs_due_at_once(stamping, jobs, pac, clock):
    pac.script = [PacUnavailable("refused")] * 3 + [result()]
    for n in range(3):
        await stamping.accept(funded(f"inv_{n}"))
    await stamping.drain()
    await stamping.accept(funded("probe"))
    clock.advance(11)
    await stamping.drain()  # the probe succeeds
    import asyncio

    await asyncio.sleep(0)
    assert all(jobs.jobs[f"inv_{n}"]["next_attempt_at"] <= clock.now for n in range(3))


async def test_invoice_that_would_pass_the_72_hours_is_failed_before_the_pac_rejects_it(stamping, store, jobs, pac, clock):
    # Fecha 2025-06-12T12:30 in Mexico City: the window closes 2025-06-15T18:30Z, 30 minutes from now;
    # the 10-minute margin means Timbra gives up at 18:20Z.
    await stamping.accept(funded(fecha="2025-06-12T12:30:00"))
    status = await stamping.status("inv_1", "iss_1")
    assert status["seconds_left"] == 20 * 60 and status["deadline"] == "2025-06-15T18:30:00+00:00"
    jobs.jobs["inv_1"]["lease_owner"] = None
    stamping.queue.get_nowait()
    pac.script = [PacUnavailable("SAT no disponible")] * 10
    clock.advance(60)
    for _ in range(10):
        await stamping.schedule_due()
        await stamping.drain()
        job = jobs.jobs["inv_1"]
        assert job["state"] != PENDING or job["next_attempt_at"] <= job["fail_at"]  # never scheduled past the deadline
        clock.advance(600)
    (failed,) = store.emitted
    assert isinstance(failed, InvoiceStampFailed)
    assert failed.errors[0].code == "TIMBRA_STAMP_DEADLINE" and "72 horas" in failed.message
    assert len(pac.calls) < 10 and jobs.jobs["inv_1"]["state"] == FAILED


async def test_exhausted_retries_go_to_the_dead_letter_topic(stamping, store, jobs, pac, clock, registry):
    pac.script = [PacUnavailable("502", maybe_stamped=True)] * 4
    await stamping.accept(funded())
    for _ in range(4):
        await stamping.schedule_due()
        await stamping.drain()
        clock.advance(120)
    job = jobs.jobs["inv_1"]
    assert job["state"] == DEAD and job["attempts"] == 4
    (letter,) = store.emitted
    assert isinstance(letter, DeadLetter) and store.keys == ["inv_1"]
    assert letter.original_topic == topics.INVOICE_FUNDED and letter.key == "inv_1" and letter.service == "stamping"
    assert '"invoice_id":"inv_1"' in letter.payload and "4 intentos" in letter.reason
    assert sample(registry, "timbra_stamps_total", {"outcome": "dead_letter"}) == 1
    assert sample(registry, "timbra_stamp_retries_total", {"pac": "sandbox", "reason": "maybe_stamped"}) == 3


async def test_an_operators_replay_of_the_dead_letter_gives_the_job_a_fresh_budget(stamping, store, jobs, pac, clock):
    pac.script = [PacUnavailable("502")] * 4 + [result()]
    await dead_lettered(stamping, jobs, clock)
    (letter,) = store.emitted
    intake = BatchConsumer(stamping.accept_many, TypeAdapter(InvoiceFunded), "stamping.stamp", per_item=False)
    letters = DeadLetters("stamping", CollectorRegistry())

    def delivery(offset: int, headers: list[tuple[str, bytes]]) -> SimpleNamespace:
        record = SimpleNamespace(topic=letter.original_topic, partition=0, offset=offset, key=b"inv_1", value=letter.payload.encode(), headers=headers)
        return SimpleNamespace(raw_message=(record,), consumer=None, committed=None)

    await intake(delivery(7, [("pac", b"sandbox")]), letters)  # a plain redelivery (a redrive) leaves it to the operator
    assert jobs.jobs["inv_1"]["state"] == DEAD
    await intake(delivery(8, [("pac", b"sandbox"), (topics.REPLAY_OF_HEADER, letter.event_id.encode())]), letters)
    job = jobs.jobs["inv_1"]
    assert job["state"] == PENDING and job["attempts"] == 0 and job["replays"] == 1
    await stamping.schedule_due()
    await stamping.drain()
    assert jobs.jobs["inv_1"]["state"] == STAMPED
    assert [c for c in pac.calls if c[0] == "stamp"] == [("stamp", "inv_1")] * 5  # the same idempotency id throughout


async def test_a_dead_letter_whose_deadline_came_is_failed_and_its_credit_released(stamping, store, jobs, pac, clock):
    pac.script = [PacUnavailable("503")] * 4
    await dead_lettered(stamping, jobs, clock)
    await stamping.housekeeping()
    assert [type(e) for e in store.emitted] == [DeadLetter]
    clock.now = jobs.jobs["inv_1"]["fail_at"]
    await stamping.housekeeping()
    assert [type(e) for e in store.emitted] == [DeadLetter, InvoiceStampFailed]
    assert store.emitted[1].errors[0].code == "TIMBRA_STAMP_DEADLINE"


async def test_the_pac_is_chosen_per_issuer(store, repo, jobs, registry, config, clock):
    from timbra_stamping.service import StampingService

    sandbox, sw = FakePac("sandbox"), FakePac("sw")
    service = StampingService(store=store, repo=repo, jobs=jobs, pacs=FakePacs(sandbox, sw, by_issuer={"iss_sw": "sw"}), registry=registry, config=config, owner="me", clock=clock)
    await service.accept(funded("a", issuer_id="iss_1"))
    await service.accept(funded("b", issuer_id="iss_sw"))
    await service.drain()
    assert sandbox.calls == [("stamp", "a")] and sw.calls == [("stamp", "b")]
    assert {e.invoice_id: e.pac for e in store.emitted} == {"a": "sandbox", "b": "sw"}


async def test_status_shows_attempts_next_attempt_and_time_left(stamping, pac, clock):
    pac.script = [PacUnavailable("PAC respondió 503")]
    await stamping.accept(funded())
    await stamping.drain()
    status = await stamping.status("inv_1", "iss_1")
    assert status["state"] == "pending" and status["attempts"] == 1 and status["max_attempts"] == 4
    assert status["next_attempt_at"] == (clock.now + timedelta(seconds=1.5)).isoformat()
    assert status["last_error"] == "PAC respondió 503"
    # Fecha 11:00 Mexico City = 17:00Z on the 15th; deadline 17:00Z on the 18th; now 18:00Z on the 15th
    assert status["deadline"] == "2025-06-18T17:00:00+00:00"
    assert status["seconds_left"] == (71 * 3600) - 600
    assert [h["outcome"] for h in status["history"]] == ["unavailable"]
    assert await stamping.status("inv_1", "another_issuer") is None


async def test_a_full_local_queue_leaves_the_job_to_the_scheduler(stamping, jobs, pac):
    for n in range(stamping.queue.maxsize + 3):
        await stamping.accept(funded(f"inv_{n}"))
    assert stamping.queue.full()
    overflow = [j for j in jobs.jobs.values() if j["lease_owner"] is None]
    assert len(overflow) == 3  # not leased: any instance's scheduler takes them
    await stamping.drain()
    assert await stamping.schedule_due() == 3


async def test_a_job_claimed_while_the_intake_filled_the_queue_gives_its_lease_back(stamping, jobs):
    await stamping.accept_many([funded("inv_due")])
    stamping.queue.get_nowait()
    jobs.jobs["inv_due"].update(lease_owner=None, lease_until=None)
    claim = jobs.claim_due

    async def claim_while_the_intake_fills_the_queue(owner, now, lease_s):  # noqa: ANN001, ANN202
        job = await claim(owner, now, lease_s)
        while not stamping.queue.full():
            stamping.queue.put_nowait({"_id": "other"})
        return job

    jobs.claim_due = claim_while_the_intake_fills_the_queue
    jobs.claim_due_many = lambda owner, now, lease_s, limit: _claim_one(claim_while_the_intake_fills_the_queue, owner, now, lease_s)
    assert await stamping.schedule_due() == 0
    assert jobs.jobs["inv_due"]["lease_owner"] is None  # claimable again, by this or another instance


async def _claim_one(claim, owner, now, lease_s):  # noqa: ANN001, ANN202
    job = await claim(owner, now, lease_s)
    return [job] if job else []


async def test_jobs_leased_at_intake_while_the_scheduler_filled_the_queue_give_their_lease_back(stamping, jobs):
    create = jobs.create_many

    async def create_while_the_scheduler_fills_the_queue(docs):  # noqa: ANN001, ANN202
        created = await create(docs)
        while not stamping.queue.full():
            stamping.queue.put_nowait({"_id": "other"})
        return created

    jobs.create_many = create_while_the_scheduler_fills_the_queue
    await stamping.accept_many([funded("inv_a"), funded("inv_b")])
    assert [jobs.jobs[i]["lease_owner"] for i in ("inv_a", "inv_b")] == [None, None]  # not held until the lease ends
    while not stamping.queue.empty():
        stamping.queue.get_nowait()
    assert await stamping.schedule_due() == 2
