"""Use cases of payments: products, payment references (constancias de pago), bank-statement
import and reconciliation, the exceptions queue and the reconciliation report."""

import asyncio
import hashlib
from collections import Counter
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from pymongo.errors import DuplicateKeyError

from timbra_billing.adapters.payments import PaymentRepository
from timbra_billing.domain import reference as refs
from timbra_billing.domain import statement
from timbra_billing.domain.money import Product, UnknownProduct, cents, mxn, quote
from timbra_billing.domain.statement import Deposit, Outcome
from timbra_billing.service import CreditGate
from timbra_billing.settings import BillingSettings
from timbra_shared.errors import ApiError, Problem, not_found
from timbra_shared.events import NotificationRequested
from timbra_shared.ids import new_id, utcnow
from timbra_shared.mongo import DUPLICATE, Store, Transaction

RESOLUTIONS = ("activate", "refund", "dismiss", "note")


class Renderer(Protocol):
    def render(self, context: dict[str, Any]) -> bytes: ...


def sheet_json(doc: dict[str, Any], payee: dict[str, str], issuer: dict[str, Any] | None = None) -> dict[str, Any]:
    """The public shape of a payment reference (money as strings with two decimals)."""
    return {
        "reference": doc["_id"],
        "issuer_id": doc["issuer_id"],
        "issuer": {k: (issuer or {}).get(k) for k in ("rfc", "legal_name")},
        "status": doc["status"],
        "items": [{**item, "unit_price": str(item["unit_price"]), "amount": str(item["amount"])} for item in doc["items"]],
        "subtotal": str(doc["subtotal"]),
        "iva": str(doc["iva"]),
        "iva_rate": "0.16",
        "total": str(doc["total"]),
        "currency": "MXN",
        "stamps": doc["stamps"],
        "payee": payee,
        "created_at": doc["created_at"].isoformat(),
        "created_by": doc.get("created_by"),
        "paid_at": doc["paid_at"].isoformat() if doc.get("paid_at") else None,
        "deposit_id": doc.get("deposit_id"),
        "message": f"Realiza tu pago mencionando la referencia {doc['_id']}. Monto total {mxn(Decimal(doc['total']))} pesos; el monto ya incluye IVA.",
    }


class Payments:
    def __init__(self, *, store: Store, repo: PaymentRepository, gate: CreditGate, settings: BillingSettings, renderer: Renderer | None = None) -> None:
        self.store = store
        self.repo = repo
        self.gate = gate
        self.settings = settings
        self.renderer = renderer

    # ------------------------------------------------------------------ products

    async def products(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.as_doc().items() if k != "_id"} for p in (await self.repo.catalog()).values()]

    async def put_product(self, product: Product, actor: str) -> dict[str, Any]:
        return await self.repo.put_product(product, actor)

    # ------------------------------------------------------------------ payment references

    async def create_reference(self, issuer_id: str, items: list[tuple[str, int]], actor: str, *, check_issuer: bool = False) -> dict[str, Any]:
        """``check_issuer``: staff named the issuer, so it must be known to billing."""
        try:
            sheet = quote(items, await self.repo.catalog())
        except UnknownProduct as exc:
            raise ApiError(422, "TIMBRA_UNKNOWN_PRODUCT", f"El producto {exc.code} no existe o no está a la venta.", [Problem("TIMBRA_UNKNOWN_PRODUCT", f"Producto desconocido: {exc.code}", path="items")]) from None
        if check_issuer and await self.repo.contact(issuer_id) is None and not await self.gate.repo.account(issuer_id):
            raise not_found("Emisor")
        doc = {
            "issuer_id": issuer_id,
            "status": "pending",
            "items": [{**line, "unit_price": str(line["unit_price"]), "amount": str(line["amount"])} for line in sheet["items"]],
            "subtotal": str(sheet["subtotal"]), "iva": str(sheet["iva"]), "total": str(sheet["total"]),
            "stamps": sum(line["stamps"] for line in sheet["items"]),
            "created_at": utcnow(), "created_by": actor,
        }
        for _ in range(20):  # 10^8 references: a collision is rare, and retried
            doc["_id"] = refs.random_reference()
            try:
                await self.repo.insert_reference(doc)
                break
            except DuplicateKeyError:
                continue
        else:
            raise ApiError(503, "unavailable", "No se pudo generar una referencia única; intenta de nuevo.")
        return sheet_json(doc, self.settings.payee(), await self.repo.contact(issuer_id))

    async def reference(self, reference: str, issuer_id: str | None) -> dict[str, Any]:
        """``issuer_id`` None: billing staff (any issuer). Another issuer's reference answers 404."""
        if not refs.is_valid(reference):
            raise ApiError(422, "TIMBRA_REFERENCE_CHECK_DIGIT", f"La referencia {reference} no es válida: revisa los dígitos (dígito verificador incorrecto).")
        doc = await self.repo.reference(reference)
        if doc is None or (issuer_id is not None and doc["issuer_id"] != issuer_id):
            raise not_found("Referencia de pago")
        return doc

    async def list_references(self, issuer_id: str | None, status: str | None) -> list[dict[str, Any]]:
        docs = await self.repo.list_references(issuer_id, status)
        contacts = {i: await self.repo.contact(i) for i in {d["issuer_id"] for d in docs}}
        return [sheet_json(doc, self.settings.payee(), contacts[doc["issuer_id"]]) for doc in docs]

    async def reference_json(self, doc: dict[str, Any]) -> dict[str, Any]:
        return sheet_json(doc, self.settings.payee(), await self.repo.contact(doc["issuer_id"]))

    async def reference_pdf(self, doc: dict[str, Any]) -> bytes:
        assert self.renderer is not None
        issuer = await self.repo.contact(doc["issuer_id"]) or {}
        context = {
            **doc, "reference": doc["_id"], "issuer": issuer, "payee": self.settings.payee(),
            "created": doc["created_at"].strftime("%d/%m/%Y"),
            "items": [{**i, "unit_price_text": mxn(Decimal(i["unit_price"])), "amount_text": mxn(Decimal(i["amount"]))} for i in doc["items"]],
            "subtotal_text": mxn(Decimal(doc["subtotal"])), "iva_text": mxn(Decimal(doc["iva"])), "total_text": mxn(Decimal(doc["total"])),
        }
        renderer = self.renderer
        return await asyncio.to_thread(renderer.render, context)

    # ------------------------------------------------------------------ reconciliation

    async def import_statement(self, data: bytes, *, filename: str, actor: str, columns: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            parsed = statement.parse(statement.decode(data), {**self.settings.csv_columns, **(columns or {})})
        except statement.StatementError as exc:
            raise ApiError(422, "TIMBRA_STATEMENT_UNREADABLE", str(exc)) from None
        file_hash = hashlib.sha256(data).hexdigest()
        import_id = f"imp_{file_hash[:24]}"
        first_upload = await self.repo.record_import({"_id": import_id, "sha256": file_hash, "filename": filename, "actor": actor, "at": utcnow(), "deposits": len(parsed.deposits), "ignored": len(parsed.ignored), "columns": parsed.columns})
        results = []
        for deposit in parsed.deposits:
            results.append(await self._reconcile(deposit, import_id=import_id, actor=actor))
        new = [r for r in results if not r.get("already_imported")]
        return {
            "import_id": import_id,
            "sha256": file_hash,
            "already_imported": not first_upload,
            "columns": parsed.columns,
            "deposits": len(parsed.deposits),
            "new": len(new),
            "skipped": len(results) - len(new),
            "ignored": parsed.ignored,
            "matched": [r for r in new if r["outcome"] == Outcome.MATCHED],
            "exceptions": [r for r in new if r["outcome"] != Outcome.MATCHED],
            "credits_granted": sum(r.get("credits_granted", 0) for r in new),
        }

    async def _reconcile(self, deposit: Deposit, *, import_id: str, actor: str) -> dict[str, Any]:
        async def work(tx: Transaction) -> dict[str, Any]:
            if await self.repo.deposit(deposit.hash, session=tx.session):
                return {"deposit_id": deposit.hash, "row": deposit.row, "already_imported": True}
            found = refs.candidates(deposit.reference, deposit.description, ignore=frozenset({self.settings.account, self.settings.clabe}))
            sheets = await self.repo.references_in([c for c in found if refs.is_valid(c)], session=tx.session)
            reference, mistyped = statement.pick_reference(deposit, set(sheets), ignore=frozenset({self.settings.account, self.settings.clabe}))
            sheet = sheets.get(reference) if reference else None
            day = deposit.date.isoformat()
            twin = bool(reference) and await self.repo.same_day_twin(reference, day, str(deposit.amount), session=tx.session)
            verdict = statement.classify(deposit, reference, mistyped, sheet, same_day_twin=twin)
            doc = {
                "_id": deposit.hash, "import_id": import_id, "row": deposit.row, "date": day, "description": deposit.description,
                "reference_field": deposit.reference, "amount": str(deposit.amount), "reference": reference, "mistyped": mistyped,
                "issuer_id": sheet["issuer_id"] if sheet else None, "outcome": verdict.outcome.value, "detail": verdict.detail,
                "credits_granted": 0, "imported_at": utcnow(), "imported_by": actor,
            }
            result = {"deposit_id": deposit.hash, "row": deposit.row, "date": day, "amount": str(deposit.amount), "reference": reference, "outcome": verdict.outcome.value, "detail": verdict.detail}
            if verdict.outcome is Outcome.MATCHED:
                assert sheet is not None
                doc["credits_granted"] = await self._activate(tx, sheet, deposit.hash, actor=actor, how="conciliación automática")
                doc["matched_at"] = utcnow()
                result["credits_granted"] = doc["credits_granted"]
                result["issuer_id"] = sheet["issuer_id"]
                await self.repo.insert_deposit(doc, session=tx.session)
                await self.repo.add_audit(actor, "deposit.matched", reference or deposit.hash, None, {"deposit_id": deposit.hash, "amount": str(deposit.amount), "credits": doc["credits_granted"]}, session=tx.session)
            else:
                exception_id = new_id("exc_")
                doc["exception_id"] = exception_id
                await self.repo.insert_deposit(doc, session=tx.session)
                await self.repo.insert_exception({
                    "_id": exception_id, "kind": verdict.outcome.value, "status": "open", "deposit_id": deposit.hash, "date": day,
                    "amount": str(deposit.amount), "reference": reference, "mistyped": mistyped, "expected": sheet["total"] if sheet else None,
                    "issuer_id": doc["issuer_id"], "description": deposit.description, "detail": verdict.detail, "created_at": utcnow(),
                    "history": [{"at": utcnow(), "actor": actor, "action": "opened", "note": verdict.detail}],
                }, session=tx.session)
                await self.repo.add_audit(actor, "exception.opened", exception_id, verdict.detail, {"deposit_id": deposit.hash, "kind": verdict.outcome.value}, session=tx.session)
                result["exception_id"] = exception_id
            return result

        try:
            outcome = await self.store.transact(work)
        except DuplicateKeyError:  # the same deposit imported at the same moment by another upload
            return {"deposit_id": deposit.hash, "row": deposit.row, "already_imported": True}
        assert outcome is not DUPLICATE
        return outcome  # type: ignore[return-value]

    async def _activate(self, tx: Transaction, sheet: dict[str, Any], deposit_id: str, *, actor: str, how: str) -> int:
        """Grant the sheet's packages, mark it paid and tell the issuer; returns the credits granted."""
        package_ids, credits = [], 0
        for item in sheet["items"]:
            if item["stamps"] > 0:
                package_ids.append(await self.gate.grant_in(
                    tx, sheet["issuer_id"], item["stamps"], item["months"], actor=actor,
                    reason=f"pago de la referencia {sheet['_id']}: {item['quantity']} x {item['code']} {item['description']} ({how})", ref=sheet["_id"],
                ))
                credits += item["stamps"]
        if not await self.repo.mark_paid(sheet["_id"], deposit_id, package_ids, session=tx.session):
            raise ApiError(409, "TIMBRA_REFERENCE_ALREADY_PAID", f"La referencia {sheet['_id']} ya está pagada.")
        contact = await self.repo.contact(sheet["issuer_id"]) or {}
        if contact.get("email"):
            balance = await self.gate.repo.balance(sheet["issuer_id"], session=tx.session)
            tx.emit(NotificationRequested(
                event_id=f"billing-paid-{sheet['_id']}", issuer_id=sheet["issuer_id"], kind="billing.payment_confirmed", to=[contact["email"]],
                subject=f"Pago recibido: referencia {sheet['_id']}",
                body=(f"Recibimos tu pago de {mxn(Decimal(sheet['total']))} con la referencia {sheet['_id']}.\n"
                      f"Activamos {credits} timbres. Timbres disponibles: {balance['available']}.\n"),
            ))
        return credits

    async def exceptions(self, status: str | None) -> list[dict[str, Any]]:
        return await self.repo.list_exceptions(status)

    async def resolve(self, exception_id: str, *, action: str, note: str, actor: str, reference: str | None = None) -> dict[str, Any]:
        """Staff decide an exception by hand. ``activate`` grants the sheet's credits (a payment
        accepted as is, or an unknown deposit assigned to ``reference``); ``refund`` and ``dismiss``
        close it without credits; ``note`` only adds to the trail. Every step is audited."""
        if action not in RESOLUTIONS:
            raise ApiError(422, "TIMBRA_RESOLUTION_UNKNOWN", f"Acción desconocida; usa una de: {', '.join(RESOLUTIONS)}.")

        async def work(tx: Transaction) -> dict[str, Any]:
            exc = await self.repo.exception(exception_id, session=tx.session)
            if exc is None:
                raise not_found("Excepción")
            if exc["status"] != "open":
                raise ApiError(409, "TIMBRA_EXCEPTION_CLOSED", "La excepción ya fue resuelta.")
            entry = {"at": utcnow(), "actor": actor, "action": action, "note": note}
            credits = 0
            if action == "note":
                await self.repo.note_exception(exception_id, entry, session=tx.session)
            else:
                if action == "activate":
                    target = reference or exc.get("reference")
                    if not target or not refs.is_valid(target):
                        raise ApiError(422, "TIMBRA_REFERENCE_CHECK_DIGIT", "Indica una referencia válida (con dígito verificador) para activar el paquete.")
                    sheet = await self.repo.reference(target, session=tx.session)
                    if sheet is None:
                        raise not_found("Referencia de pago")
                    if sheet["status"] != "pending":
                        raise ApiError(409, "TIMBRA_REFERENCE_ALREADY_PAID", f"La referencia {target} ya está pagada; no se activa dos veces.")
                    credits = await self._activate(tx, sheet, exc["deposit_id"], actor=actor, how=f"resolución manual {exception_id}")
                    entry |= {"reference": target, "credits_granted": credits}
                    await self.repo.set_deposit(exc["deposit_id"], {"credits_granted": credits, "reference": target, "issuer_id": sheet["issuer_id"]}, session=tx.session)
                if not await self.repo.close_exception(exception_id, entry, session=tx.session):
                    raise ApiError(409, "TIMBRA_EXCEPTION_CLOSED", "La excepción ya fue resuelta.")
            await self.repo.add_audit(actor, f"exception.{action}", exception_id, note, {k: v for k, v in entry.items() if k not in ("at", "actor", "action", "note")}, session=tx.session, at=entry["at"])
            return await self.repo.exception(exception_id, session=tx.session) or {}

        return await self.store.transact(work)  # type: ignore[return-value]

    async def report(self, start: date, end: date) -> dict[str, Any]:
        deposits = await self.repo.deposits_between(start.isoformat(), end.isoformat())
        exceptions = await self.repo.exceptions_between(start.isoformat(), end.isoformat())
        matched = [d for d in deposits if d["outcome"] == Outcome.MATCHED]
        by_kind: dict[str, dict[str, Any]] = {}
        for exc in exceptions:
            row = by_kind.setdefault(exc["kind"], {"count": 0, "open": 0, "resolved": 0, "amount": Decimal(0)})
            row["count"] += 1
            row["open" if exc["status"] == "open" else "resolved"] += 1
            row["amount"] += Decimal(exc["amount"])
        actions = Counter((exc.get("resolution") or {}).get("action") for exc in exceptions if exc["status"] == "resolved")
        return {
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "deposits": {"count": len(deposits), "amount": str(cents(sum((Decimal(d["amount"]) for d in deposits), Decimal(0))))},
            "matched": {"count": len(matched), "amount": str(cents(sum((Decimal(d["amount"]) for d in matched), Decimal(0)))), "references": [d["reference"] for d in matched]},
            "exceptions": {"count": len(exceptions), "open": sum(1 for e in exceptions if e["status"] == "open"), "by_kind": {k: {**v, "amount": str(cents(v["amount"]))} for k, v in sorted(by_kind.items())}, "resolutions": {k: v for k, v in actions.items() if k}},
            "credits_granted": sum(int(d.get("credits_granted") or 0) for d in deposits),
        }
