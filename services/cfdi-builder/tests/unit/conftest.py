"""Hand-written fakes of the cfdi-builder's ports, for unit tests of ``InvoiceService``.

Every fake records its calls. ``FakeStore`` is the common one (``timbra_shared.testing``): it runs
the units of work with a ``FakeTransaction`` (its ``session`` is a sentinel the repositories must
receive), honours ``dedupe`` like the real store (a second run for the same key returns
``DUPLICATE`` without running the work) and only keeps the emitted events of works that completed.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest

from timbra_cfdi_builder.domain.comprobante import build_cfdi
from timbra_cfdi_builder.domain.invoice import IN_FLIGHT, RANK, InvoiceStatus
from timbra_cfdi_builder.service import InvoiceService
from timbra_shared.events import RedriveInvoice
from timbra_shared.ids import utcnow
from timbra_shared import testing

ISSUER = {
    "_id": "iss_1",
    "issuer_id": "iss_1",
    "version": 1,
    "rfc": "EKU9003173C9",
    "legal_name": "ESCUELA KEMPER URGATE",
    "tax_regime": "601",
    "zip": "42501",
    "slug": "escuela-kemper-urgate",
    "enabled_types": ["I", "E"],
    "series": {"I": "F", "E": "NC"},
}

CUSTOMER = {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991", "email": "pagos@ure.mx"}
PRODUCT = {"description": "Servicio de consultoría", "product_key": "81111500", "unit_key": "E48", "price": "100.00"}


class FakeStore(testing.FakeStore):
    def of_type(self, cls: type) -> list[Any]:
        return [e for e in self.emitted if isinstance(e, cls)]


class FakeInvoiceRepository:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.inserts: list[tuple[dict[str, Any], Any]] = []
        self.status_calls: list[dict[str, Any]] = []
        self.redriven: list[tuple[str, int, datetime]] = []

    async def insert(self, doc: dict[str, Any], session: Any = None) -> None:
        if doc["_id"] in self.docs:
            raise AssertionError(f"duplicate insert of {doc['_id']}")
        self.inserts.append((copy.deepcopy(doc), session))
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    async def get(self, invoice_id: str, issuer_id: str | None = None, session: Any = None) -> dict[str, Any] | None:
        doc = self.docs.get(invoice_id)
        if doc is None or (issuer_id is not None and doc["issuer_id"] != issuer_id):
            return None
        return copy.deepcopy(doc)

    async def get_many(self, invoice_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: copy.deepcopy(self.docs[i]) for i in invoice_ids if i in self.docs}

    async def by_idempotency_key(self, issuer_id: str, key: str) -> dict[str, Any] | None:
        for doc in self.docs.values():
            if doc["issuer_id"] == issuer_id and doc.get("idempotency_key") == key:
                return copy.deepcopy(doc)
        return None

    async def apply_status(self, invoice_id: str, status: InvoiceStatus, *, at: datetime, service: str, fields: dict[str, Any] | None = None, session: Any = None) -> bool:
        self.status_calls.append({"invoice_id": invoice_id, "status": status, "at": at, "service": service, "fields": fields or {}, "session": session})
        doc = self.docs.get(invoice_id)
        if doc is None:
            return False
        doc["status"], doc["status_rank"] = status.value, RANK[status]
        doc.update(fields or {})
        doc["updated_at"] = utcnow()
        return True

    async def apply_statuses(self, changes: list[tuple[str, InvoiceStatus, datetime, str, dict[str, Any]]]) -> int:
        self.bulk_calls = getattr(self, "bulk_calls", 0) + 1
        return sum([await self.apply_status(i, s, at=a, service=v, fields=f) for i, s, a, v, f in changes])

    async def stuck(self, *, older_than: timedelta, limit: int = 500) -> list[dict[str, Any]]:
        now = utcnow()
        return [
            {"_id": d["_id"], "issuer_id": d["issuer_id"], "status": d["status"], "redrives": d.get("redrives", 0)}
            for d in self.docs.values()
            if d["status"] in IN_FLIGHT and d["updated_at"] < now - older_than and (d.get("redrive_at") is None or d["redrive_at"] < now)
        ][:limit]

    async def mark_redriven(self, invoice_id: str, attempt: int, next_at: datetime) -> None:
        self.redriven.append((invoice_id, attempt, next_at))
        self.docs[invoice_id].update(redrives=attempt, redrive_at=next_at)


class FakeIssuerDirectory:
    def __init__(self, *issuers: dict[str, Any]) -> None:
        self.issuers = {i["issuer_id"]: dict(i) for i in issuers}
        self.upserts: list[dict[str, Any]] = []

    async def get(self, issuer_id: str) -> dict[str, Any] | None:
        self.gets = getattr(self, "gets", []) + [issuer_id]
        issuer = self.issuers.get(issuer_id)
        return dict(issuer) if issuer else None

    async def upsert(self, profile: dict[str, Any]) -> None:
        self.upserts.append(profile)
        current = self.issuers.get(profile["issuer_id"])
        if current is None or current.get("version", 0) < profile["version"]:
            self.issuers[profile["issuer_id"]] = dict(profile)


class FakeFolioCounter:
    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[str, str, Any]] = []

    async def next(self, issuer_id: str, serie: str, session: Any = None) -> int:
        self.calls.append((issuer_id, serie, session))
        key = (issuer_id, serie)
        self.counters[key] = self.counters.get(key, 0) + 1
        return self.counters[key]


class RecordingBuild:
    """Wraps the real ``build_cfdi`` and records its arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request, issuer, *, serie, folio, now):
        self.calls.append({"request": request, "issuer": issuer, "serie": serie, "folio": folio, "now": now})
        return build_cfdi(request, issuer, serie=serie, folio=folio, now=now)


class RedriveSink:
    def __init__(self) -> None:
        self.commands: list[RedriveInvoice] = []

    async def __call__(self, command: RedriveInvoice) -> None:
        self.commands.append(command)


@pytest.fixture
def fakes():
    class Fakes:
        store = FakeStore()
        invoices = FakeInvoiceRepository()
        issuers = FakeIssuerDirectory(ISSUER)
        folios = FakeFolioCounter()
        build = RecordingBuild()
        redrives = RedriveSink()

    return Fakes


@pytest.fixture
def service(fakes) -> InvoiceService:
    return InvoiceService(
        store=fakes.store,
        invoices=fakes.invoices,
        issuers=fakes.issuers,
        folios=fakes.folios,
        build_cfdi=fakes.build,
        publish_redrive=fakes.redrives,
        stuck_after=60,
        sweep_interval=5,
    )


@pytest.fixture
def request_body():
    def make(**overrides: Any) -> dict[str, Any]:
        body = {
            "customer": dict(CUSTOMER),
            "items": [{"quantity": 2, "product": dict(PRODUCT)}],
            "payment_form": "03",
            "payment_method": "PUE",
            "use": "G03",
        }
        body.update(overrides)
        return body

    return make


@pytest.fixture
def issuer() -> dict[str, Any]:
    return copy.deepcopy(ISSUER)


@pytest.fixture
def customer() -> dict[str, Any]:
    return dict(CUSTOMER)


@pytest.fixture
def product() -> dict[str, Any]:
    return dict(PRODUCT)
