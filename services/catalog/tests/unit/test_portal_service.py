"""The portal's use cases with hand-written fakes: an in-memory MongoDB-like database, the
FakeStore (records emitted events) and a fake pipeline client that records its calls."""

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from timbra_catalog.adapters.portal import PortalRepositories
from timbra_catalog.adapters.repository import CatalogRepositories
from timbra_catalog.domain import portal as rules
from timbra_catalog.portal_service import PortalService
from timbra_catalog.service import CatalogService
from timbra_shared.errors import ApiError
from timbra_shared.events import InvoiceRejected, InvoiceRequested, InvoiceStamped, InvoiceSummary, NotificationRequested
from timbra_shared.passwords import hash_password, verify_password
from timbra_shared.testing import FakeStore

MX = ZoneInfo("America/Mexico_City")
SECRET = "unit-secret"
CLIENT = "198.51.100.7"


# --------------------------------------------------------------------------- an in-memory database

def _get(doc: dict[str, Any], key: str) -> Any:
    return doc.get(key)


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, cond in query.items():
        if key == "$or":
            if not any(_matches(doc, q) for q in cond):
                return False
            continue
        if key == "$and":
            if not all(_matches(doc, q) for q in cond):
                return False
            continue
        value = _get(doc, key)
        if isinstance(cond, dict) and any(k.startswith("$") for k in cond):
            for op, arg in cond.items():
                ok = {
                    "$gt": lambda: value is not None and value > arg, "$gte": lambda: value is not None and value >= arg,
                    "$lt": lambda: value is not None and value < arg, "$lte": lambda: value is not None and value <= arg,
                    "$ne": lambda: value != arg, "$in": lambda: value in arg, "$exists": lambda: (key in doc) == arg,
                    "$type": lambda: isinstance(value, str), "$regex": lambda: value is not None and re.search(arg, value) is not None,
                }[op]()
                if not ok:
                    return False
        elif value != cond:
            return False
    return True


class FakeCursor:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def sort(self, key: Any, direction: int = 1) -> "FakeCursor":
        keys = key if isinstance(key, list) else [(key, direction)]
        for name, order in reversed(keys):
            self.docs.sort(key=lambda d: (d.get(name) is None, d.get(name) or 0), reverse=order < 0)
        return self

    def skip(self, n: int) -> "FakeCursor":
        self.docs = self.docs[n:]
        return self

    def limit(self, n: int) -> "FakeCursor":
        if n:
            self.docs = self.docs[:n]
        return self

    async def to_list(self, _n: Any) -> list[dict[str, Any]]:
        return [copy.deepcopy(d) for d in self.docs]


class DuplicateKey(Exception):
    pass


class FakeCollection:
    def __init__(self, unique: tuple[str, ...] = ()) -> None:
        self.docs: dict[Any, dict[str, Any]] = {}
        self.unique = unique

    def _check_unique(self, doc: dict[str, Any], ignore: Any = None) -> None:
        from pymongo.errors import DuplicateKeyError

        if self.unique and doc.get("live", True) is not False:
            key = tuple(doc.get(k) for k in self.unique)
            for other in self.docs.values():
                if other["_id"] != ignore and tuple(other.get(k) for k in self.unique) == key and other.get("live", True) is not False:
                    raise DuplicateKeyError("duplicate")

    async def insert_one(self, doc: dict[str, Any], session: Any = None) -> None:
        from pymongo.errors import DuplicateKeyError

        if doc["_id"] in self.docs:
            raise DuplicateKeyError("duplicate _id")
        self._check_unique(doc)
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    async def find_one(self, query: dict[str, Any], projection: Any = None, session: Any = None) -> dict[str, Any] | None:
        return next((copy.deepcopy(d) for d in self.docs.values() if _matches(d, query)), None)

    def find(self, query: dict[str, Any] | None = None, session: Any = None) -> FakeCursor:
        return FakeCursor([d for d in self.docs.values() if _matches(d, query or {})])

    async def count_documents(self, query: dict[str, Any], **_: Any) -> int:
        return sum(1 for d in self.docs.values() if _matches(d, query))

    def _apply(self, doc: dict[str, Any], update: dict[str, Any], inserting: bool) -> dict[str, Any]:
        doc = copy.deepcopy(doc)
        for key, value in update.get("$set", {}).items():
            doc[key] = value
        for key, value in update.get("$inc", {}).items():
            doc[key] = doc.get(key, 0) + value
        for key in update.get("$unset", {}):
            doc.pop(key, None)
        if inserting:
            doc.update(update.get("$setOnInsert", {}))
        return doc

    async def update_one(self, query: dict[str, Any], update: dict[str, Any], upsert: bool = False, session: Any = None) -> Any:
        await self.find_one_and_update(query, update, upsert=upsert)

    async def find_one_and_update(self, query: dict[str, Any], update: dict[str, Any], upsert: bool = False, return_document: Any = None, session: Any = None) -> dict[str, Any] | None:
        for key, doc in self.docs.items():
            if _matches(doc, query):
                self.docs[key] = self._apply(doc, update, False)
                return copy.deepcopy(self.docs[key])
        if upsert:
            base = {k: v for k, v in query.items() if not isinstance(v, dict) and not k.startswith("$")}
            doc = self._apply(base, update, True)
            await self.insert_one(doc)
            return copy.deepcopy(doc)
        return None

    async def replace_one(self, query: dict[str, Any], doc: dict[str, Any], upsert: bool = False, session: Any = None) -> Any:
        for key, existing in list(self.docs.items()):
            if _matches(existing, query):
                self.docs[key] = copy.deepcopy(doc)
                return type("R", (), {"modified_count": 1})()
        if upsert:
            await self.insert_one(doc)
        return type("R", (), {"modified_count": 0})()

    async def find_one_and_delete(self, query: dict[str, Any], session: Any = None) -> dict[str, Any] | None:
        for key, doc in list(self.docs.items()):
            if _matches(doc, query):
                return self.docs.pop(key)
        return None

    async def delete_one(self, query: dict[str, Any], session: Any = None) -> None:
        await self.find_one_and_delete(query)

    async def delete_many(self, query: dict[str, Any], session: Any = None) -> None:
        for key, doc in list(self.docs.items()):
            if _matches(doc, query):
                del self.docs[key]


class FakeDb:
    UNIQUE = {"portal_invoices": ("issuer_id", "ticket_id"), "portal_accounts": ("issuer_id", "rfc"), "customers": ("issuer_id", "rfc_key")}

    def __init__(self) -> None:
        self.collections: dict[str, FakeCollection] = {}

    def __getitem__(self, name: str) -> FakeCollection:
        return self.collections.setdefault(name, FakeCollection(self.UNIQUE.get(name, ())))

    def __getattr__(self, name: str) -> FakeCollection:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]


class FakePipeline:
    """Records every call; answers what the test put in ``states`` / ``stamping``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.states: dict[str, dict[str, Any]] = {}
        self.stamping_states: dict[str, dict[str, Any]] = {}

    async def invoice(self, issuer_id: str, invoice_id: str) -> dict[str, Any] | None:
        self.calls.append(("invoice", issuer_id, invoice_id))
        return self.states.get(invoice_id)

    async def stamping(self, issuer_id: str, invoice_id: str) -> dict[str, Any] | None:
        self.calls.append(("stamping", issuer_id, invoice_id))
        return self.stamping_states.get(invoice_id)

    async def document(self, issuer_id: str, invoice_id: str, kind: str) -> Any:
        self.calls.append((kind, issuer_id, invoice_id))
        return type("R", (), {"status_code": 200, "content": b"<cfdi/>", "headers": {"content-type": "application/xml"}})()

    async def email(self, issuer_id: str, invoice_id: str, emails: list[str]) -> Any:
        self.calls.append(("email", issuer_id, ",".join(emails)))
        return type("R", (), {"status_code": 200, "headers": {}})()


# --------------------------------------------------------------------------- fixtures

NOW = datetime.now(UTC)
PERSON = {"rfc": "PEGJ800101AB1", "legal_name": "JUAN PEREZ GARCIA", "tax_regime": "612", "zip": "06000", "use": "G03", "email": "juan@example.com"}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # scrypt at a unit-test cost (the parameters travel in the hash, so verification follows)
    monkeypatch.setattr("timbra_catalog.portal_service.hash_password", lambda password: hash_password(password, n=2**10, r=8, p=1))
    db, store, pipeline = FakeDb(), FakeStore(), FakePipeline()
    store.db = db
    catalog_repos = CatalogRepositories(db)
    catalog = CatalogService(store=store, repos=catalog_repos)
    service = PortalService(store=store, repos=PortalRepositories(db), catalog_repos=catalog_repos, catalog=catalog, pipeline=pipeline, secret=SECRET)
    db.portal_issuers.docs["iss_1"] = {"_id": "iss_1", "slug": "abarrotes", "legal_name": "ABARROTES", "rfc": "EKU9003173C9", "version": 1}
    db.portal_issuers.docs["iss_2"] = {"_id": "iss_2", "slug": "otro", "legal_name": "OTRO", "rfc": "EKU9003173C9", "version": 1}
    db.branches.docs["br_1"] = {"_id": "br_1", "issuer_id": "iss_1", "name": "Centro", "zip": "06000", "deleted_at": None}
    db.tickets.docs["tkt_1"] = {"_id": "tkt_1", "issuer_id": "iss_1", "branch_id": "br_1", "order_number": "O-1", "ticket_number": "T-1", "total": "116.00",
                                "payment_form": "04", "status": "open", "invoiceable_until": NOW + timedelta(days=5), "deleted_at": None,
                                "date": NOW, "items": [], "version": 1}
    return {"db": db, "store": store, "pipeline": pipeline, "service": service}


def body(**changes: Any) -> dict[str, Any]:
    return {"branch_id": "br_1", "order_number": "O-1", "ticket_number": "T-1", "total": "116", "payment_form": "", "customer": dict(PERSON), **changes}


# --------------------------------------------------------------------------- the invoice

async def test_a_matching_ticket_requests_the_invoice_through_the_outbox(world: dict[str, Any]) -> None:
    service, store, db = world["service"], world["store"], world["db"]
    result, created = await service.request_invoice("abarrotes", body(), CLIENT)
    assert created and result["status"] == "processing" and rules.receipt_ok(SECRET, "iss_1", result["id"], result["receipt"])
    requested = [e for e in store.emitted if isinstance(e, InvoiceRequested)]
    assert len(requested) == 1
    event = requested[0]
    assert (event.invoice_id, event.issuer_id, event.request.ticket_id, event.request.branch_id) == (result["id"], "iss_1", "tkt_1", "br_1")
    assert (event.request.customer.rfc, event.request.use, event.request.payment_form, event.request.emails) == ("PEGJ800101AB1", "G03", "04", ["juan@example.com"])
    # the new customer is now in the catalog (so the RFC is known next time), with its e-mail
    customer = await db.customers.find_one({"issuer_id": "iss_1", "rfc_key": "PEGJ800101AB1"})
    assert customer["emails"] == ["juan@example.com"]
    again, created = await service.request_invoice("abarrotes", body(), CLIENT)
    assert not created and again["id"] == result["id"]
    assert len([e for e in store.emitted if isinstance(e, InvoiceRequested)]) == 1
    with pytest.raises(ApiError) as refused:
        await service.request_invoice("abarrotes", body(customer={**PERSON, "rfc": "LOMR850505XY2", "legal_name": "ROSA LOPEZ"}), CLIENT)
    assert (refused.value.status, refused.value.code) == (409, "TIMBRA_TICKET_ALREADY_INVOICED")


async def test_a_failed_invoice_frees_the_ticket_for_a_new_try(world: dict[str, Any]) -> None:
    service = world["service"]
    first, _ = await service.request_invoice("abarrotes", body(), CLIENT)
    await service.on_failed(InvoiceRejected(invoice_id=first["id"], issuer_id="iss_1", stage="built", service="cfdi-builder", message="Rechazada", errors=[]))
    second, created = await service.request_invoice("abarrotes", body(), CLIENT)
    assert created and second["id"] != first["id"]


async def test_field_problems_are_reported_by_field_before_any_lookup(world: dict[str, Any]) -> None:
    service = world["service"]
    with pytest.raises(ApiError) as refused:
        await service.request_invoice("abarrotes", body(branch_id="br_x", order_number="", total="doce", customer={**PERSON, "tax_regime": "601", "email": "no"}), CLIENT)
    paths = {(p.path, p.code) for p in refused.value.errors}
    assert {("branch_id", "TIMBRA_BRANCH_REQUIRED"), ("order_number", "TIMBRA_ORDER_NUMBER_REQUIRED"), ("total", "TIMBRA_TOTAL_INVALID"),
            ("tax_regime", "CFDI40158"), ("email", "TIMBRA_EMAIL_INVALID")} <= paths
    assert await world["db"].portal_attempts.count_documents({}) == 0  # a form error is not a lookup


async def test_wrong_lookups_are_counted_per_address_and_issuer_then_refused(world: dict[str, Any]) -> None:
    service = world["service"]
    limit, _ = rules.THROTTLES["ticket"]
    for n in range(limit):
        with pytest.raises(ApiError) as wrong:
            await service.request_invoice("abarrotes", body(ticket_number=f"T-{n + 100}") if n % 2 else body(total="115.00"), CLIENT)
        assert wrong.value.code in ("TIMBRA_TICKET_NOT_FOUND", "TIMBRA_TICKET_TOTAL_MISMATCH")
    with pytest.raises(ApiError) as limited:
        await service.request_invoice("abarrotes", body(), CLIENT)  # even the right ticket waits now
    assert (limited.value.status, limited.value.code) == (429, "TIMBRA_PORTAL_RATE_LIMITED") and limited.value.retry_after > 0
    result, created = await service.request_invoice("abarrotes", body(), "203.0.113.1")  # another address is not affected
    assert created and result["status"] == "processing"


async def test_a_stamped_portal_invoice_is_listed_for_its_receptor_only(world: dict[str, Any]) -> None:
    service, db = world["service"], world["db"]
    result, _ = await service.request_invoice("abarrotes", body(), CLIENT)
    summary = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="PEGJ800101AB1", nombre_receptor="JUAN PEREZ GARCIA", total="116.00", ticket_id="tkt_1", serie="A", folio="7")
    await service.on_stamped(InvoiceStamped(invoice_id=result["id"], issuer_id="iss_1", summary=summary, uuid="AAAA-1", fecha_timbrado="2026-01-01T00:00:00", xml="<x/>", pac="sandbox"))
    assert (await db.receptor_invoices.find_one({"_id": result["id"]}))["branch_id"] == "br_1"
    shown = await service.invoice("abarrotes", result["id"], receipt=result["receipt"])
    assert (shown["status"], shown["uuid"]) == ("stamped", "AAAA-1")
    for slug, receipt in (("abarrotes", None), ("abarrotes", "0" * 40), ("otro", result["receipt"])):
        with pytest.raises(ApiError) as hidden:
            await service.invoice(slug, result["id"], receipt=receipt)
        assert hidden.value.status == 404


async def test_a_batch_of_stamps_is_recorded_for_the_catalog_and_the_portal_in_one_transaction(world: dict[str, Any]) -> None:
    service, store, db = world["service"], world["store"], world["db"]
    result, _ = await service.request_invoice("abarrotes", body(), CLIENT)
    portal = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="PEGJ800101AB1", nombre_receptor="JUAN PEREZ GARCIA", total="116.00", ticket_id="tkt_1", serie="A", folio="7")
    generic = InvoiceSummary(type="I", rfc_emisor="EKU9003173C9", rfc_receptor="XAXX010101000", nombre_receptor="PUBLICO EN GENERAL", total="58.00", serie="A", folio="8")
    stamped = [InvoiceStamped(invoice_id=result["id"], issuer_id="iss_1", summary=portal, uuid="AAAA-1", fecha_timbrado="2026-01-01T00:00:00", xml="<x/>", pac="sandbox"),
               InvoiceStamped(invoice_id="inv_generic", issuer_id="iss_1", summary=generic, uuid="AAAA-2", fecha_timbrado="2026-01-01T00:00:00", xml="<x/>", pac="sandbox")]
    store.groups.clear()
    await service.catalog.on_stamped_many([*stamped, stamped[0]], also=service.stamped_unit)

    assert store.groups == [5]  # one transaction: catalog + portal for each portal stamp (the repeat too, deduped), catalog only for the generic RFC
    assert (await db.receptor_usage.find_one({"_id": "iss_1:PEGJ800101AB1"}))["invoices"] == 1
    assert (await db.receptor_usage.find_one({"_id": "iss_1:XAXX010101000"}))["invoices"] == 1
    assert (await db.tickets.find_one({"_id": "tkt_1"}))["status"] == "invoiced"
    assert (await db.receptor_invoices.find_one({"_id": result["id"]}))["uuid"] == "AAAA-1"
    assert await db.receptor_invoices.find_one({"_id": "inv_generic"}) is None


async def test_an_invoice_stuck_at_the_pac_tells_the_customer_to_wait_for_sat(world: dict[str, Any]) -> None:
    service, pipeline = world["service"], world["pipeline"]
    result, _ = await service.request_invoice("abarrotes", body(), CLIENT)
    pipeline.states[result["id"]] = {"status": "funded"}
    pipeline.stamping_states[result["id"]] = {"state": "pending", "attempts": 0}
    assert (await service.invoice("abarrotes", result["id"], receipt=result["receipt"]))["status"] == "processing"
    pipeline.stamping_states[result["id"]] = {"state": "pending", "attempts": 3, "last_error": "503 SAT no disponible"}
    waiting = await service.invoice("abarrotes", result["id"], receipt=result["receipt"])
    assert waiting["status"] == "waiting_sat" and "en cuanto el SAT responda" in waiting["message"] and "juan@example.com" in waiting["message"]
    assert ("stamping", "iss_1", result["id"]) in pipeline.calls
    pipeline.states[result["id"]] = {"status": "funded", "serie": "A", "folio": "7"}
    pipeline.stamping_states[result["id"]] = {"state": "stamped", "attempts": 4, "uuid": "AAAA-1"}
    stamped = await service.invoice("abarrotes", result["id"], receipt=result["receipt"])
    assert (stamped["status"], stamped["uuid"], stamped["folio"]) == ("stamped", "AAAA-1", "7"), "stamped before the builder heard of it"
    pipeline.states[result["id"]] = {"status": "rejected", "message": "Rechazada", "errors": [{"code": "TIMBRA_TICKET_WINDOW_CLOSED", "message": "x"}]}
    assert (await service.invoice("abarrotes", result["id"], receipt=result["receipt"]))["status"] == "failed"


# --------------------------------------------------------------------------- accounts and recovery

async def _account(world: dict[str, Any]) -> dict[str, Any]:
    await world["service"].request_invoice("abarrotes", body(), CLIENT)  # the customer becomes known with its e-mail
    return await world["service"].register("abarrotes", {"rfc": PERSON["rfc"], "email": "JUAN@example.com", "password": "Segura2026x", "password_confirmation": "Segura2026x"}, CLIENT)


async def test_registration_needs_the_registered_email_and_hashes_the_password(world: dict[str, Any]) -> None:
    service, db = world["service"], world["db"]
    with pytest.raises(ApiError) as refused:
        await service.register("abarrotes", {"rfc": PERSON["rfc"], "email": "juan@example.com", "password": "Segura2026x"}, CLIENT)
    assert refused.value.code == "TIMBRA_PORTAL_EMAIL_NOT_REGISTERED"  # the RFC is not known yet
    session = await _account(world)
    stored = await db.portal_accounts.find_one({"rfc": PERSON["rfc"]})
    assert stored["password_hash"].startswith("scrypt$") and "Segura2026x" not in str(stored)
    assert verify_password("Segura2026x", stored["password_hash"])
    assert (await service.me("abarrotes", session["token"]))["legal_name"] == "JUAN PEREZ GARCIA"
    with pytest.raises(ApiError) as elsewhere:
        await service.me("otro", session["token"])
    assert elsewhere.value.status == 401


async def test_recovery_mails_a_temporary_password_that_must_be_changed(world: dict[str, Any]) -> None:
    service, store, db = world["service"], world["store"], world["db"]
    await _account(world)
    captcha = await service.captcha("abarrotes")
    stored = await db.portal_captchas.find_one({"_id": captcha["captcha_id"]})
    question = "".join(re.findall(r">([^<])</text>", captcha["svg"])).rstrip("=")
    a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)", question).groups()
    answer = str(int(a) + int(b) if op == "+" else int(a) - int(b))
    assert stored["answer"] == rules.captcha_hash(SECRET, captcha["captcha_id"], answer)
    with pytest.raises(ApiError) as wrong:
        await service.recover("abarrotes", {"rfc": PERSON["rfc"], "email": "juan@example.com", "captcha_id": captcha["captcha_id"], "captcha_answer": str(int(answer) + 1)}, CLIENT)
    assert wrong.value.code == "TIMBRA_CAPTCHA_INVALID"
    assert not [e for e in store.emitted if isinstance(e, NotificationRequested)]
    captcha = await service.captcha("abarrotes")
    answer_doc = await db.portal_captchas.find_one({"_id": captcha["captcha_id"]})
    right = next(str(n) for n in range(0, 40) if rules.captcha_hash(SECRET, captcha["captcha_id"], str(n)) == answer_doc["answer"])
    done = await service.recover("abarrotes", {"rfc": PERSON["rfc"].lower(), "email": "juan@example.com", "captcha_id": captcha["captcha_id"], "captcha_answer": right}, CLIENT)
    mails = [e for e in store.emitted if isinstance(e, NotificationRequested)]
    assert len(mails) == 1 and mails[0].to == ["JUAN@example.com"] and mails[0].kind == "portal.password_recovery"
    temporary = re.search(r"contraseña temporal es: (\S+)", mails[0].body).group(1)
    with pytest.raises(ApiError):
        await service.login("abarrotes", PERSON["rfc"], "Segura2026x", CLIENT)  # the old password is gone
    session = await service.login("abarrotes", PERSON["rfc"], temporary, CLIENT)
    assert session["must_change"] is True
    with pytest.raises(ApiError) as forced:
        await service.my_invoices("abarrotes", session["token"])
    assert forced.value.code == "TIMBRA_PORTAL_PASSWORD_CHANGE_REQUIRED"
    await service.change_password("abarrotes", session["token"], {"current_password": temporary, "password": "Nueva2027xy", "password_confirmation": "Nueva2027xy"})
    assert (await service.my_invoices("abarrotes", session["token"]))["total_results"] == 0
    # an unknown pair gets the same answer and no mail
    captcha = await service.captcha("abarrotes")
    answer_doc = await db.portal_captchas.find_one({"_id": captcha["captcha_id"]})
    right = next(str(n) for n in range(0, 40) if rules.captcha_hash(SECRET, captcha["captcha_id"], str(n)) == answer_doc["answer"])
    same = await service.recover("abarrotes", {"rfc": PERSON["rfc"], "email": "otro@example.com", "captcha_id": captcha["captcha_id"], "captcha_answer": right}, CLIENT)
    assert same == done and len([e for e in store.emitted if isinstance(e, NotificationRequested)]) == 1


async def test_wrong_passwords_are_throttled(world: dict[str, Any]) -> None:
    service = world["service"]
    await _account(world)
    limit, _ = rules.THROTTLES["login"]
    for _ in range(limit):
        with pytest.raises(ApiError) as wrong:
            await service.login("abarrotes", PERSON["rfc"], "NoEsLaClave1", CLIENT)
        assert wrong.value.code == "TIMBRA_PORTAL_LOGIN_FAILED"
    with pytest.raises(ApiError) as limited:
        await service.login("abarrotes", PERSON["rfc"], "Segura2026x", CLIENT)
    assert limited.value.status == 429
