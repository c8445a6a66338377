"""The service layer with hand-written fakes of its ports (projection, cancellations, issuers,
PAC): what it writes, which events it emits, and when it calls the PAC."""

import asyncio
import copy
from datetime import datetime, timedelta
from typing import Any

import pytest

from timbra_cancellation.config import CancellationConfig
from timbra_cancellation.service import CancellationRefused, CancellationService
from timbra_shared.cfdi.acuse import build_acuse
from timbra_shared.cfdi.testing import make_csd
from timbra_shared.cfdi import load_csd
from timbra_shared.events import (
    CancelInvoice,
    CancellationAccepted,
    CancellationCompleted,
    CancellationEscalated,
    CancellationPending,
    CancellationRejected,
    DeadLetter,
    InvoiceRequest,
    InvoiceRequested,
    InvoiceStamped,
    InvoiceSummary,
    NotificationRequested,
)
from timbra_shared.ids import utcnow
from timbra_shared.pac import CancelResult, PacRejected, PacUnavailable, SatStatus
from timbra_shared.testing import FakeStore

UUID = "11111111-2222-4333-8444-555555555555"
SIGNER = load_csd(*make_csd(rfc="SAT970701NN3", name="SAT"), "12345678a")


class FakeInvoices:
    def __init__(self, *docs: dict[str, Any]) -> None:
        self.docs = {d["_id"]: d for d in docs}

    async def get(self, invoice_id, issuer_id=None, session=None):  # noqa: ANN001, ANN201
        doc = self.docs.get(invoice_id)
        return doc if doc and (issuer_id is None or doc["issuer_id"] == issuer_id) else None

    async def find(self, issuer_id, ref):  # noqa: ANN001, ANN201
        return next((d for d in self.docs.values() if d["issuer_id"] == issuer_id and ref in (d["_id"], d.get("uuid"))), None)

    async def related_in_force(self, issuer_id, uuid):  # noqa: ANN001, ANN201
        return []

    async def set_status(self, invoice_id, status, session=None):  # noqa: ANN001, ANN201
        self.docs[invoice_id]["status"] = status

    async def save_stamped(self, invoice_id, fields, session=None):  # noqa: ANN001, ANN201
        self.saved = getattr(self, "saved", []) + [(invoice_id, session)]
        self.docs.setdefault(invoice_id, {"_id": invoice_id}).update(fields, status="vigente")

    async def save_requests(self, requests):  # noqa: ANN001, ANN201
        for invoice_id, issuer_id, request in requests:
            self.docs.setdefault(invoice_id, {"_id": invoice_id, "issuer_id": issuer_id, "status": None})["request"] = request


class FakeCancellations:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def get(self, invoice_id, issuer_id=None, session=None):  # noqa: ANN001, ANN201
        doc = self.docs.get(invoice_id)
        return copy.deepcopy(doc) if doc and (issuer_id is None or doc["issuer_id"] == issuer_id) else None

    async def by_substitute(self, substitute_id):  # noqa: ANN001, ANN201
        return None

    async def by_substitutes(self, substitute_ids):  # noqa: ANN001, ANN201
        self.substitute_lookups = getattr(self, "substitute_lookups", []) + [list(substitute_ids)]
        return {d["substitution_invoice_id"]: copy.deepcopy(d) for d in self.docs.values()
                if d.get("substitution_invoice_id") in substitute_ids and d.get("state") == "awaiting_substitute"}

    async def put(self, doc, *, expected_attempt, session):  # noqa: ANN001, ANN201
        current = self.docs.get(doc["_id"])
        if (current["attempt"] if current else None) != expected_attempt:
            return False
        self.docs[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def update(self, invoice_id, owner, attempt, changes, *, history=None, release=True, session=None):  # noqa: ANN001, ANN201
        doc = self.docs.get(invoice_id)
        if doc is None or doc["attempt"] != attempt or (owner is not None and doc.get("lease_owner") != owner):
            return False
        doc.update(copy.deepcopy(changes))
        if release:
            doc.update(lease_owner=None, lease_until=None)
        if history:
            doc.setdefault("history", []).append(history)
        return True


class FakeIssuers:
    async def get(self, issuer_id):  # noqa: ANN001, ANN201
        return {"email": "emisor@example.com"}


class FakePac:
    """Answers from scripts: ``cancels`` (a CancelResult or an exception each call), ``statuses``."""

    name = "fake"

    def __init__(self, cancels: list[Any], statuses: list[Any] | None = None) -> None:
        self.cancels, self.statuses = list(cancels), list(statuses or [])
        self.calls: list[tuple] = []

    async def cancel(self, rfc_emisor, uuid, motivo, folio_sustitucion=None):  # noqa: ANN001, ANN201
        self.calls.append(("cancel", uuid, motivo, folio_sustitucion))
        answer = self.cancels.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def status(self, uuid, rfc_emisor, rfc_receptor, total):  # noqa: ANN001, ANN201
        self.calls.append(("status", uuid, total))
        answer = self.statuses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakePacs:
    def __init__(self, pac: FakePac) -> None:
        self.pac = pac

    def name_for(self, issuer_id):  # noqa: ANN001, ANN201
        return "fake"

    def get(self, name):  # noqa: ANN001, ANN201
        return self.pac


def received() -> CancelResult:
    return CancelResult(uuid=UUID, code="201", acuse=build_acuse("EKU9003173C9", {UUID: "201"}, "2026-03-10T10:00:00", SIGNER))


def sat(estado: str, estatus: str) -> SatStatus:
    return SatStatus(codigo_estatus="S", estado=estado, es_cancelable="Cancelable con aceptación", estatus_cancelacion=estatus)


def make(pac: FakePac, **doc: Any) -> tuple[CancellationService, FakeStore, FakeCancellations, FakeInvoices]:
    invoice = {"_id": "inv_1", "issuer_id": "iss_1", "uuid": UUID, "type": "I", "total": "5800.00", "currency": "MXN", "rfc_emisor": "EKU9003173C9",
               "rfc_receptor": "URE180429TM6", "fecha": (datetime.now() - timedelta(days=1)).replace(microsecond=0).isoformat(), "lugar": "42501",
               "status": "vigente", "related": [], "serie": "A", "folio": "7", **doc}
    store, cancellations, invoices = FakeStore(), FakeCancellations(), FakeInvoices(invoice)
    config = CancellationConfig(TIMBRA_CANCEL_POLL_BASE=0.01, TIMBRA_CANCEL_POLL_MAX=0.01, TIMBRA_CANCEL_RETRY_BASE=0.01, TIMBRA_CANCEL_RETRY_MAX=0.01)
    service = CancellationService(store=store, invoices=invoices, cancellations=cancellations, issuers=FakeIssuers(), pacs=FakePacs(pac), config=config)  # type: ignore[arg-type]
    return service, store, cancellations, invoices


async def settle(service: CancellationService) -> None:
    while service._tasks:
        await asyncio.gather(*list(service._tasks))


def kinds(store: FakeStore) -> list[str]:
    return [type(e).__name__ for e in store.emitted if not isinstance(e, NotificationRequested)]


async def test_a_direct_cancellation_end_to_end() -> None:
    pac = FakePac([received()], [sat("Cancelado", "Cancelado sin aceptación")])
    service, store, cancellations, invoices = make(pac)
    doc = await service.request("iss_1", "inv_1", "02", None)
    assert doc["state"] == "requested" and doc["attempt"] == 1
    await settle(service)
    assert kinds(store) == ["CancelInvoice", "CancellationCompleted"]
    completed = store.emitted[-2] if isinstance(store.emitted[-1], NotificationRequested) else store.emitted[-1]
    assert isinstance(completed, CancellationCompleted) and completed.acceptance == "sin_aceptacion"
    saved = cancellations.docs["inv_1"]
    assert saved["state"] == "completed" and saved["acuse_verified"] is True and invoices.docs["inv_1"]["status"] == "cancelado"
    mails = [e for e in store.emitted if isinstance(e, NotificationRequested)]
    assert mails[0].to == ["emisor@example.com"] and mails[0].attachments[0]["filename"] == f"acuse-{UUID}.xml"
    assert [c[0] for c in pac.calls] == ["cancel", "status"]


async def test_pending_then_accepted_emits_each_change_once() -> None:
    pac = FakePac([received()], [sat("Vigente", "En proceso"), sat("Vigente", "En proceso"), sat("Cancelado", "Cancelado con aceptación")])
    service, store, cancellations, _ = make(pac)
    await service.request("iss_1", "inv_1", "03", None)
    await settle(service)
    assert kinds(store) == ["CancelInvoice", "CancellationPending"]
    for _ in range(2):
        job = cancellations.docs["inv_1"]
        job["lease_owner"] = service.owner
        await service.step(copy.deepcopy(job))
    assert kinds(store) == ["CancelInvoice", "CancellationPending", "CancellationAccepted", "CancellationCompleted"]
    assert next(e for e in store.emitted if isinstance(e, CancellationAccepted)).by == "receptor"
    assert len([e for e in store.emitted if isinstance(e, CancellationPending)]) == 1  # the second "En proceso" changed nothing
    assert cancellations.docs["inv_1"]["polls"] == 2


async def test_a_pac_outage_schedules_a_retry_without_events() -> None:
    pac = FakePac([PacUnavailable("PAC respondió 503")])
    service, store, cancellations, _ = make(pac)
    await service.request("iss_1", "inv_1", "02", None)
    await settle(service)
    job = cancellations.docs["inv_1"]
    assert job["state"] == "requested" and job["phase"] == "request" and job["request_attempts"] == 1 and job["lease_owner"] is None
    assert job["next_attempt_at"] > utcnow() - timedelta(seconds=1) and kinds(store) == ["CancelInvoice"]


async def test_sats_refusal_is_a_rejection_with_its_code() -> None:
    pac = FakePac([PacRejected("CA320", "El CFDI no es cancelable: tiene documentos relacionados vigentes.", "X (TipoRelacion 01)")])
    service, store, cancellations, _ = make(pac)
    await service.request("iss_1", "inv_1", "02", None)
    await settle(service)
    rejected = next(e for e in store.emitted if isinstance(e, CancellationRejected))
    assert rejected.by == "sat" and rejected.errors[0].code == "CA320" and "TipoRelacion 01" in rejected.message
    assert cancellations.docs["inv_1"]["state"] == "rejected"


async def test_an_unknown_state_is_escalated_with_a_dead_letter() -> None:
    pac = FakePac([received()], [sat("Cancelado", "En revisión")])
    service, store, cancellations, _ = make(pac)
    await service.request("iss_1", "inv_1", "02", None)
    await settle(service)
    assert isinstance(store.emitted[-3], CancellationEscalated) and isinstance(store.emitted[-2], DeadLetter)
    assert store.emitted[-2].service == "cancellation" and cancellations.docs["inv_1"]["state"] == "escalated"


async def test_refusals_never_reach_the_pac_and_a_bad_command_is_answered() -> None:
    pac = FakePac([])
    service, store, _, _ = make(pac)
    with pytest.raises(CancellationRefused) as refused:
        await service.request("iss_1", "inv_1", "09", None)
    assert refused.value.problems[0].code == "TIMBRA_CANCEL_MOTIVE_INVALID"
    with pytest.raises(CancellationRefused) as refused:
        await service.request("iss_2", "inv_1", "02", None)
    assert refused.value.status == 404
    await service.on_command(CancelInvoice(invoice_id="inv_1", issuer_id="iss_1", motive="01"))
    [answer] = store.emitted
    assert isinstance(answer, CancellationRejected) and answer.attempt == 0 and answer.errors[0].code == "TIMBRA_CANCEL_SUBSTITUTION_REQUIRED"
    assert pac.calls == []


async def test_the_echo_of_an_http_request_on_kafka_does_nothing() -> None:
    pac = FakePac([received()], [sat("Cancelado", "")])
    service, store, _, _ = make(pac)
    await service.request("iss_1", "inv_1", "02", None)
    await settle(service)
    command = next(e for e in store.emitted if isinstance(e, CancelInvoice))
    before = len(store.emitted)
    await service.on_command(command)
    assert len(store.emitted) == before and [c[0] for c in pac.calls] == ["cancel", "status"]


# --------------------------------------------------------------------------- projecting stamps, a batch at a time


async def test_a_batch_of_stamps_is_projected_in_one_transaction_and_ends_the_substitution_waiting_for_one():
    service, store, cancellations, invoices = make(FakePac([]))
    cancellations.docs["inv_old"] = {"_id": "inv_old", "issuer_id": "iss_1", "state": "awaiting_substitute", "substitution_invoice_id": "inv_3", "attempt": 1}
    ended: list[tuple[str, str]] = []

    async def substitute_stamped(waiting, event):  # noqa: ANN001, ANN202
        ended.append((waiting["_id"], event.invoice_id))

    service._substitute_stamped = substitute_stamped  # type: ignore[method-assign]
    summary = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="URE180429TM6", nombre_receptor="UNIVERSIDAD ROBOTICA ESPAÑOLA", total="116.00", serie="A", folio="8")
    events = [InvoiceStamped(invoice_id=f"inv_{i}", issuer_id="iss_1", summary=summary, uuid=f"{i}aaaaaaa-2222-4333-8444-555555555555", fecha_timbrado="2026-01-01T00:00:00", xml="<x/>", pac="sandbox")
              for i in (2, 3, 4)]
    await service.on_stamped_many([*events, events[0]])

    assert store.groups == [4]
    assert [i for i, _ in invoices.saved] == ["inv_2", "inv_3", "inv_4"]
    assert len({id(session) for _, session in invoices.saved}) == 1
    assert invoices.docs["inv_3"]["uuid"] == "3AAAAAAA-2222-4333-8444-555555555555"
    assert cancellations.substitute_lookups == [["inv_2", "inv_3", "inv_4", "inv_2"]]
    assert ended == [("inv_old", "inv_3")]


async def test_a_batch_of_requests_is_kept_in_one_write():
    service, _, _, invoices = make(FakePac([]))
    await service.on_requested_many([InvoiceRequested(invoice_id=f"inv_r{i}", issuer_id="iss_1", request=InvoiceRequest(type="I", payment_method="PUE")) for i in range(3)])
    assert [invoices.docs[f"inv_r{i}"]["request"]["payment_method"] for i in range(3)] == ["PUE"] * 3
