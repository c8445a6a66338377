"""Use cases of the catalog service: customers, products, branches, store tickets and the global
invoice. Every change is written with its event in one unit of work (``catalog.customers``,
``catalog.products``, ``catalog.tickets``, keyed by id), so the cfdi-builder's projection follows.

On the invoice pipeline it remembers each customer's last Uso CFDI (seed 000: the chosen use
becomes the customer's default) and marks tickets invoiced."""

import csv
import io
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pymongo.errors import DuplicateKeyError

from timbra_catalog.adapters.repository import CatalogRepositories, Entities, normalise, pages
from timbra_catalog.domain.customers import GENERIC, validate_customer
from timbra_catalog.domain.products import validate_product
from timbra_catalog.domain.search import CatalogSearch
from timbra_catalog.domain.tickets import global_period, global_request, invoiceable_until, zone_of
from timbra_shared.auth import Principal
from timbra_shared.cfdi import catalogs
from timbra_shared.errors import ApiError, Problem, RetryLater, not_found
from timbra_shared.events import (
    CancellationCompleted,
    CustomerChanged,
    InvoiceRejected,
    InvoiceRequested,
    InvoiceStamped,
    InvoiceStampFailed,
    ItemIn,
    ProductChanged,
    ProductIn,
    TicketChanged,
    TicketIn,
    TicketSubmitted,
)
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.messaging import trace_of
from timbra_shared.mongo import Store, Transaction, Unit

log = get_logger(__name__)

MAX_IMPORT_ROWS = 5000
IMPORT_CHUNK = 500


def invalid(problems: list[Problem], status: int = 422) -> ApiError:
    first = problems[0]
    message = first.message if len(problems) == 1 else f"Hay {len(problems)} errores: {first.message}"
    return ApiError(status, first.code, message, problems)


def present(doc: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    out = {"id": doc["_id"], **{f: doc.get(f) for f in fields}}
    for key in ("created_at", "updated_at", "deleted_at"):
        value = doc.get(key)
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    out["version"] = doc.get("version", 1)
    return out


CUSTOMER_FIELDS = ("rfc", "legal_name", "tax_regime", "zip", "default_use", "emails", "tax_id", "tax_residence")
PRODUCT_FIELDS = ("description", "product_key", "unit_key", "unit_name", "sku", "price", "tax_included", "taxability", "taxes")
BRANCH_FIELDS = ("name", "code", "zip", "invoicing_window_days")
TICKET_FIELDS = ("branch_id", "order_number", "ticket_number", "date", "total", "payment_form", "items", "status", "invoice_id", "invoiceable_until")


def present_customer(doc: dict[str, Any]) -> dict[str, Any]:
    return present(doc, CUSTOMER_FIELDS)


def present_product(doc: dict[str, Any]) -> dict[str, Any]:
    return present(doc, PRODUCT_FIELDS)


def present_branch(doc: dict[str, Any]) -> dict[str, Any]:
    return present(doc, BRANCH_FIELDS)


def present_ticket(doc: dict[str, Any]) -> dict[str, Any]:
    out = present(doc, TICKET_FIELDS)
    for key in ("date", "invoiceable_until"):
        if isinstance(out.get(key), datetime):
            out[key] = out[key].isoformat()
    return out


def customer_event(doc: dict[str, Any]) -> CustomerChanged:
    return CustomerChanged(
        issuer_id=doc["issuer_id"], id=doc["_id"], version=doc["version"], deleted=doc.get("deleted_at") is not None,
        **{f: doc.get(f) for f in CUSTOMER_FIELDS if f != "emails"}, emails=doc.get("emails") or [],
    )


def product_in(doc: dict[str, Any]) -> ProductIn:
    return ProductIn.model_validate({f: doc[f] for f in PRODUCT_FIELDS if doc.get(f) is not None})


def product_event(doc: dict[str, Any]) -> ProductChanged:
    return ProductChanged(issuer_id=doc["issuer_id"], id=doc["_id"], version=doc["version"], deleted=doc.get("deleted_at") is not None, product=product_in(doc))


def ticket_event(doc: dict[str, Any]) -> TicketChanged:
    return TicketChanged(
        issuer_id=doc["issuer_id"], id=doc["_id"], version=doc["version"], branch_id=doc["branch_id"], order_number=doc.get("order_number"),
        ticket_number=doc["ticket_number"], date=doc["date"], total=Decimal(str(doc["total"])), payment_form=doc.get("payment_form"),
        items=[ItemIn.model_validate(i) for i in doc["items"]], status=doc["status"], invoice_id=doc.get("invoice_id"),
        invoiceable_until=doc.get("invoiceable_until"),
    )


class CatalogService:
    def __init__(self, *, store: Store, repos: CatalogRepositories, catalog_search: CatalogSearch | None = None) -> None:
        self.store = store
        self.db = store.db
        self.repos = repos
        self.catalog_search = catalog_search or CatalogSearch()

    # ------------------------------------------------------------------ customers and products

    def _customer_doc(self, issuer_id: str, customer_id: str, values: dict[str, Any], *, version: int, created_at: datetime) -> dict[str, Any]:
        now = utcnow()
        return {
            "_id": customer_id, "issuer_id": issuer_id, **values,
            "rfc_key": None if values["rfc"] in GENERIC else values["rfc"],
            "search": normalise(" ".join(filter(None, [values["rfc"], values["legal_name"], *values.get("emails", [])]))),
            "version": version, "created_at": created_at, "updated_at": now, "deleted_at": None,
        }

    def _product_doc(self, issuer_id: str, product_id: str, product: ProductIn, *, version: int, created_at: datetime) -> dict[str, Any]:
        values = product.model_dump(mode="json")
        return {
            "_id": product_id, "issuer_id": issuer_id, **values,
            "search": normalise(" ".join(filter(None, [product.description, product.sku, product.product_key]))),
            "version": version, "created_at": created_at, "updated_at": utcnow(), "deleted_at": None,
        }

    async def create_customer(self, principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
        assert principal.issuer_id
        customer, problems = validate_customer(data)
        if customer is None:
            raise invalid(problems)
        doc = self._customer_doc(principal.issuer_id, new_id("cus_"), customer.as_dict(), version=1, created_at=utcnow())

        async def work(tx: Transaction) -> None:
            await self.repos.customers.insert(doc, session=tx.session)
            tx.emit(customer_event(doc), key=doc["_id"])

        await self._write(work, doc)
        return doc

    async def _write(self, work: Any, doc: dict[str, Any]) -> None:
        try:
            await self.store.transact(work)
        except DuplicateKeyError:
            existing = await self.repos.customers.find_one({"issuer_id": doc["issuer_id"], "rfc_key": doc.get("rfc_key")})
            raise ApiError(409, "TIMBRA_CUSTOMER_DUPLICATE", f"Ya existe un cliente con el RFC {doc.get('rfc')}.",
                           [Problem("TIMBRA_CUSTOMER_DUPLICATE", f"Ya existe un cliente con el RFC {doc.get('rfc')} ({existing['_id'] if existing else '?'}).", "timbra", "rfc")]) from None

    async def update_customer(self, principal: Principal, customer_id: str, data: dict[str, Any]) -> dict[str, Any]:
        assert principal.issuer_id
        current = await self.repos.customers.get(principal.issuer_id, customer_id)
        if current is None:
            raise not_found("Cliente")
        data = {("default_use" if k == "use" else k): v for k, v in data.items()}
        merged = {f: current.get(f) for f in CUSTOMER_FIELDS} | {k: v for k, v in data.items() if k != "email"}
        if data.get("email"):
            merged["emails"] = [data["email"], *(data.get("emails") or [])]
        customer, problems = validate_customer(merged)
        if customer is None:
            raise invalid(problems)
        doc = self._customer_doc(principal.issuer_id, customer_id, customer.as_dict(), version=current["version"] + 1, created_at=current["created_at"])
        await self._replace(self.repos.customers, doc, current["version"], customer_event)
        return doc

    async def _replace(self, entities: Entities, doc: dict[str, Any], expected: int, event: Any) -> None:
        async def work(tx: Transaction) -> None:
            if not await entities.replace(doc, expected_version=expected, session=tx.session):
                raise ApiError(409, "TIMBRA_CONFLICT", "El registro cambió mientras lo editabas; vuelve a intentarlo.")
            tx.emit(event(doc), key=doc["_id"])

        await self._write(work, doc)

    async def delete(self, principal: Principal, kind: str, entity_id: str) -> dict[str, Any]:
        """Soft delete: the record stays (past invoices and history keep it) but is no longer
        listed nor usable on new invoices."""
        assert principal.issuer_id
        entities, event, what = (self.repos.customers, customer_event, "Cliente") if kind == "customer" else (self.repos.products, product_event, "Producto")
        current = await entities.get(principal.issuer_id, entity_id)
        if current is None:
            raise not_found(what)
        doc = {**current, "deleted_at": utcnow(), "updated_at": utcnow(), "version": current["version"] + 1}
        if kind == "customer":
            doc["rfc_key"] = None
        await self._replace(entities, doc, current["version"], event)
        return doc

    async def get(self, principal: Principal, kind: str, entity_id: str) -> dict[str, Any]:
        assert principal.issuer_id
        entities = {"customer": self.repos.customers, "product": self.repos.products, "branch": self.repos.branches, "ticket": self.repos.tickets}[kind]
        doc = await entities.get(principal.issuer_id, entity_id)
        if doc is None:
            raise not_found({"customer": "Cliente", "product": "Producto", "branch": "Sucursal", "ticket": "Ticket"}[kind])
        return doc

    async def page(self, principal: Principal, kind: str, *, q: str | None, page: int, limit: int, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        assert principal.issuer_id
        entities, show = {
            "customer": (self.repos.customers, present_customer), "product": (self.repos.products, present_product),
            "branch": (self.repos.branches, present_branch), "ticket": (self.repos.tickets, present_ticket),
        }[kind]
        docs, total = await entities.page(principal.issuer_id, q=q, page=page, limit=limit, filters=filters)
        return {"page": page, "total_pages": pages(total, limit), "total_results": total, "data": [show(d) for d in docs]}

    async def create_product(self, principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
        assert principal.issuer_id
        product, problems = validate_product(data)
        if product is None:
            raise invalid(problems)
        doc = self._product_doc(principal.issuer_id, new_id("prod_"), product, version=1, created_at=utcnow())

        async def work(tx: Transaction) -> None:
            await self.repos.products.insert(doc, session=tx.session)
            tx.emit(product_event(doc), key=doc["_id"])

        await self.store.transact(work)
        return doc

    async def update_product(self, principal: Principal, product_id: str, data: dict[str, Any]) -> dict[str, Any]:
        assert principal.issuer_id
        current = await self.repos.products.get(principal.issuer_id, product_id)
        if current is None:
            raise not_found("Producto")
        merged = {f: current.get(f) for f in PRODUCT_FIELDS} | data
        product, problems = validate_product(merged)
        if product is None:
            raise invalid(problems)
        doc = self._product_doc(principal.issuer_id, product_id, product, version=current["version"] + 1, created_at=current["created_at"])
        await self._replace(self.repos.products, doc, current["version"], product_event)
        return doc

    # ------------------------------------------------------------------ bulk import (CSV)

    async def import_csv(self, principal: Principal, kind: str, text: str) -> dict[str, Any]:
        """Create one record per CSV row; every row is reported (created with its id, or its
        problems). Valid rows are created even when other rows fail."""
        assert principal.issuer_id
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        if not reader.fieldnames:
            raise ApiError(422, "TIMBRA_CSV_EMPTY", "El archivo CSV está vacío o no tiene encabezados.")
        rows = list(reader)
        if len(rows) > MAX_IMPORT_ROWS:
            raise ApiError(422, "TIMBRA_CSV_TOO_LARGE", f"El archivo tiene {len(rows)} filas; el máximo por importación es {MAX_IMPORT_ROWS}.")
        report: list[dict[str, Any]] = []
        docs: list[tuple[int, dict[str, Any]]] = []
        seen_rfcs: dict[str, int] = {}
        for n, row in enumerate(rows, start=2):  # line 1 is the header
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k}
            if kind == "customer":
                customer, problems = validate_customer(_customer_row(row))
                if customer is not None and customer.rfc not in GENERIC:
                    if customer.rfc in seen_rfcs:
                        problems = [Problem("TIMBRA_CUSTOMER_DUPLICATE", f"El RFC {customer.rfc} ya aparece en la fila {seen_rfcs[customer.rfc]}.", "timbra", "rfc")]
                    elif await self.repos.customers.find_one({"issuer_id": principal.issuer_id, "rfc_key": customer.rfc}):
                        problems = [Problem("TIMBRA_CUSTOMER_DUPLICATE", f"Ya existe un cliente con el RFC {customer.rfc}.", "timbra", "rfc")]
                    seen_rfcs.setdefault(customer.rfc, n)
                doc = None if customer is None or problems else self._customer_doc(principal.issuer_id, new_id("cus_"), customer.as_dict(), version=1, created_at=utcnow())
            else:
                try:
                    product, problems = validate_product(_product_row(row))
                except ValueError as error:
                    product, problems = None, [Problem("TIMBRA_CSV_ROW_INVALID", str(error), "timbra")]
                doc = None if product is None else self._product_doc(principal.issuer_id, new_id("prod_"), product, version=1, created_at=utcnow())
            if doc is None:
                report.append({"row": n, "ok": False, "errors": [p.as_dict() for p in problems]})
            else:
                docs.append((n, doc))
                report.append({"row": n, "ok": True, "id": doc["_id"]})
        entities, event = (self.repos.customers, customer_event) if kind == "customer" else (self.repos.products, product_event)
        for start in range(0, len(docs), IMPORT_CHUNK):
            chunk = [d for _, d in docs[start:start + IMPORT_CHUNK]]

            async def work(tx: Transaction, chunk: list[dict[str, Any]] = chunk) -> None:
                await entities.insert_many(chunk, session=tx.session)
                for doc in chunk:
                    tx.emit(event(doc), key=doc["_id"])

            await self._write(work, chunk[0])
        created = sum(1 for r in report if r["ok"])
        return {"created": created, "failed": len(report) - created, "rows": report}

    # ------------------------------------------------------------------ branches and tickets

    async def create_branch(self, principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
        assert principal.issuer_id
        values = _branch_values(data, partial=False)
        now = utcnow()
        doc = {"_id": new_id("br_"), "issuer_id": principal.issuer_id, **values, "search": normalise(f"{values.get('name')} {values.get('code') or ''}"),
               "version": 1, "created_at": now, "updated_at": now, "deleted_at": None}
        await self.repos.branches.insert(doc)
        return doc

    async def update_branch(self, principal: Principal, branch_id: str, data: dict[str, Any]) -> dict[str, Any]:
        assert principal.issuer_id
        current = await self.get(principal, "branch", branch_id)
        values = {f: current.get(f) for f in BRANCH_FIELDS} | _branch_values(data, partial=True)
        doc = {**current, **values, "search": normalise(f"{values.get('name')} {values.get('code') or ''}"), "version": current["version"] + 1, "updated_at": utcnow()}
        if not await self.repos.branches.replace(doc, expected_version=current["version"]):
            raise ApiError(409, "TIMBRA_CONFLICT", "La sucursal cambió mientras la editabas; vuelve a intentarlo.")
        return doc

    async def settings(self, principal: Principal) -> dict[str, Any]:
        assert principal.issuer_id
        doc = await self.repos.issuer_settings(principal.issuer_id)
        return {"invoicing_window_days": doc.get("invoicing_window_days")}

    async def save_settings(self, principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
        assert principal.issuer_id
        days = _window(data.get("invoicing_window_days"))
        await self.repos.save_settings(principal.issuer_id, {"invoicing_window_days": days}, utcnow())
        return await self.settings(principal)

    async def submit_ticket(self, issuer_id: str, ticket: TicketIn) -> tuple[dict[str, Any], bool]:
        """Record a store ticket (HTTP or ``pos.tickets``). The same branch + ticket number again
        returns the ticket already recorded, so a point-of-sale system can retry safely."""
        branch = await self.repos.branches.get(issuer_id, ticket.branch_id)
        if branch is None:
            raise ApiError(422, "TIMBRA_BRANCH_NOT_FOUND", f"La sucursal {ticket.branch_id} no existe.", [Problem("TIMBRA_BRANCH_NOT_FOUND", f"La sucursal {ticket.branch_id} no existe.", "timbra", "branch_id")])
        problems = await self._ticket_problems(issuer_id, ticket)
        if problems:
            raise invalid(problems)
        existing = await self.repos.tickets.find_one({"issuer_id": issuer_id, "branch_id": ticket.branch_id, "ticket_number": ticket.ticket_number})
        if existing is not None:
            return existing, False
        settings = await self.repos.issuer_settings(issuer_id)
        window = branch.get("invoicing_window_days") if branch.get("invoicing_window_days") is not None else settings.get("invoicing_window_days")
        zone = zone_of(branch.get("zip"))
        ticket_date = ticket.date if ticket.date.tzinfo else ticket.date.replace(tzinfo=zone)
        now = utcnow()
        doc = {
            "_id": new_id("tkt_"), "issuer_id": issuer_id, "branch_id": ticket.branch_id, "order_number": ticket.order_number,
            "ticket_number": ticket.ticket_number, "date": ticket_date, "total": str(ticket.total), "payment_form": ticket.payment_form,
            "items": [i.model_dump(mode="json", exclude_none=True) for i in ticket.items], "status": "open", "invoice_id": None,
            "invoiceable_until": invoiceable_until(ticket_date, zone, window), "search": normalise(f"{ticket.ticket_number} {ticket.order_number or ''}"),
            "version": 1, "created_at": now, "updated_at": now, "deleted_at": None,
        }

        async def work(tx: Transaction) -> None:
            await self.repos.tickets.insert(doc, session=tx.session)
            tx.emit(ticket_event(doc), key=doc["_id"])

        try:
            await self.store.transact(work)
        except DuplicateKeyError:
            existing = await self.repos.tickets.find_one({"issuer_id": issuer_id, "branch_id": ticket.branch_id, "ticket_number": ticket.ticket_number})
            if existing is None:
                raise
            return existing, False
        return doc, True

    async def _ticket_problems(self, issuer_id: str, ticket: TicketIn) -> list[Problem]:
        problems = []
        if ticket.payment_form and not catalogs.exists("c_FormaPago", ticket.payment_form):
            problems.append(Problem("CFDI40104", f"La forma de pago {ticket.payment_form} no existe en el catálogo c_FormaPago.", "sat", "payment_form"))
        for n, item in enumerate(ticket.items):
            if (item.product_id is None) == (item.product is None):
                problems.append(Problem("TIMBRA_PRODUCT_REQUIRED", "Cada partida del ticket necesita product_id o product (no ambos).", "timbra", f"items[{n}]"))
            elif item.product_id and await self.repos.products.get(issuer_id, item.product_id) is None:
                problems.append(Problem("TIMBRA_PRODUCT_NOT_FOUND", f"El producto {item.product_id} no existe.", "timbra", f"items[{n}].product_id"))
        return problems

    async def on_ticket_submitted(self, event: TicketSubmitted) -> None:
        try:
            _, created = await self.submit_ticket(event.issuer_id, event.ticket)
        except ApiError as error:  # a bad ticket from a point-of-sale system: recorded, not retried forever
            log.warning("ticket.rejected", issuer_id=event.issuer_id, code=error.code, message=error.message)
            await self.db.rejected_tickets.update_one(
                {"_id": event.event_id},
                {"$set": {"issuer_id": event.issuer_id, "ticket": event.ticket.model_dump(mode="json"), "code": error.code, "message": error.message,
                          "errors": [p.as_dict() for p in error.errors], "at": utcnow()}},
                upsert=True,
            )
            return
        log.info("ticket.recorded", created=created)

    # ------------------------------------------------------------------ global invoice

    async def global_invoice(self, principal: Principal, branch_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Issue one público-en-general invoice (InformacionGlobal) for the branch's tickets of a
        period that nobody invoiced, through ``invoice.requested`` like any other invoice."""
        assert principal.issuer_id
        issuer_id = principal.issuer_id
        branch = await self.get(principal, "branch", branch_id)
        try:
            periodicity = str(data.get("periodicity") or "04")
            year = int(data["year"])
            months = str(data["months"]).zfill(2)
            start = date.fromisoformat(data["from"]) if data.get("from") else None
            end = date.fromisoformat(data["to"]) if data.get("to") else None
        except (KeyError, ValueError, TypeError):
            raise ApiError(422, "TIMBRA_GLOBAL_PERIOD_INVALID", "Indica periodicity (01-05), months (01-18), year y, opcionalmente, from/to (AAAA-MM-DD).") from None
        if periodicity not in ("01", "02", "03", "04", "05"):
            raise invalid([Problem("CFDI40131", f"La periodicidad {periodicity} no existe en el catálogo c_Periodicidad.", "sat", "periodicity")])
        zone = zone_of(branch.get("zip"))
        period, problems = global_period(periodicity, months, year, zone, start, end)
        if period is None:
            raise invalid(problems)
        include_open = bool(data.get("include_open_window"))
        now = utcnow()
        candidates = await self.repos.tickets.find({
            "issuer_id": issuer_id, "branch_id": branch_id, "status": "open", "date": {"$gte": period.start, "$lt": period.end},
        }, sort="date")
        tickets = [t for t in candidates if include_open or t["invoiceable_until"] <= now]
        skipped = len(candidates) - len(tickets)
        if not tickets:
            raise ApiError(422, "TIMBRA_GLOBAL_NO_TICKETS", "No hay tickets sin facturar en ese periodo" + (f" cuyo plazo de facturación haya vencido ({skipped} aún en plazo)." if skipped else "."))
        product_ids = {i["product_id"] for t in tickets for i in t["items"] if i.get("product_id")}
        products = {d["_id"]: product_in(d) for d in await self.repos.products.find({"issuer_id": issuer_id, "_id": {"$in": sorted(product_ids)}})}
        invoice_id = new_id("inv_")
        request, problems = global_request(tickets, products, periodicity=periodicity, months=months, year=year, branch_id=branch_id, key=f"global:{invoice_id}")
        if request is None:
            raise invalid(problems)
        record = {"_id": invoice_id, "issuer_id": issuer_id, "branch_id": branch_id, "ticket_ids": request.ticket_ids, "status": "requested",
                  "period": {"periodicity": periodicity, "months": months, "year": year, "from": period.start, "to": period.end}, "created_at": now}

        async def work(tx: Transaction) -> None:
            for ticket in tickets:
                updated = {**ticket, "status": "pending", "invoice_id": invoice_id, "version": ticket["version"] + 1, "updated_at": now}
                if not await self.repos.tickets.replace(updated, expected_version=ticket["version"], session=tx.session):
                    raise ApiError(409, "TIMBRA_CONFLICT", f"El ticket {ticket['ticket_number']} cambió mientras se preparaba la factura global; vuelve a intentarlo.")
                tx.emit(ticket_event(updated), key=ticket["_id"])
            await self.repos.global_invoices.insert_one(record, session=tx.session)
            tx.emit(InvoiceRequested(invoice_id=invoice_id, issuer_id=issuer_id, request=request, livemode=principal.livemode, source="kafka"))

        await self.store.transact(work)
        return {"invoice_id": invoice_id, "status": "requested", "tickets": len(tickets), "skipped_in_window": skipped,
                "ticket_ids": request.ticket_ids, "period": {"from": period.start.isoformat(), "to": period.end.isoformat()}}

    # ------------------------------------------------------------------ invoice pipeline

    async def on_stamped(self, event: InvoiceStamped) -> None:
        await self.on_stamped_many([event])

    async def on_stamped_many(self, events: list[InvoiceStamped], *, also: Callable[[InvoiceStamped], Unit | None] | None = None) -> None:
        """Record a consumed batch of stamps in one transaction, each with its own dedupe; ``also``
        adds another unit per stamp (the portal's record of it) to the same transaction."""
        units = []
        for event in events:
            units.append(self.stamped_unit(event))
            extra = also(event) if also is not None else None
            if extra is not None:
                units.append(extra)
        await self.store.transact_many(units)

    def stamped_unit(self, event: InvoiceStamped) -> Unit:
        """The receptor's usage, the customer's remembered UsoCFDI, and the tickets the invoice covers."""
        summary = event.summary

        async def work(tx: Transaction) -> None:
            await self.db.receptor_usage.update_one(
                {"_id": f"{event.issuer_id}:{summary.rfc_receptor}"},
                {"$set": {"issuer_id": event.issuer_id, "rfc": summary.rfc_receptor, "last_use": summary.use, "last_invoice_id": event.invoice_id, "at": utcnow()}, "$inc": {"invoices": 1}},
                upsert=True,
                session=tx.session,
            )
            if summary.customer_id:
                customer = await self.repos.customers.get(event.issuer_id, summary.customer_id, include_deleted=True, session=tx.session)
                if customer is not None and customer.get("default_use") != summary.use:
                    doc = {**customer, "default_use": summary.use, "version": customer["version"] + 1, "updated_at": utcnow()}
                    if not await self.repos.customers.replace(doc, expected_version=customer["version"], session=tx.session):
                        raise RetryLater(f"customer {customer['_id']} changed meanwhile")
                    tx.emit(customer_event(doc), key=doc["_id"])
            ticket_ids = [summary.ticket_id] if summary.ticket_id else []
            record = await self.repos.global_invoices.find_one({"_id": event.invoice_id}, session=tx.session)
            if record is not None:
                ticket_ids += record["ticket_ids"]
                await self.repos.global_invoices.update_one({"_id": event.invoice_id}, {"$set": {"status": "stamped", "uuid": event.uuid}}, session=tx.session)
            await self._set_tickets(tx, event.issuer_id, ticket_ids, status="invoiced", invoice_id=event.invoice_id)

        return Unit(work, dedupe=f"{event.event_type}:{event.invoice_id}", trace=trace_of(event))

    async def on_failed(self, event: InvoiceRejected | InvoiceStampFailed) -> None:
        """A global invoice that failed gives its tickets back (they are open again)."""
        record = await self.repos.global_invoices.find_one({"_id": event.invoice_id})
        if record is None:
            return

        async def work(tx: Transaction) -> None:
            await self.repos.global_invoices.update_one({"_id": event.invoice_id}, {"$set": {"status": event.event_type.split(".")[-1]}}, session=tx.session)
            await self._set_tickets(tx, event.issuer_id, record["ticket_ids"], status="open", invoice_id=None, only_for=event.invoice_id)

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")

    async def on_cancelled(self, event: CancellationCompleted) -> None:
        """A cancelled global invoice gives its tickets back (open). With motive 04 the customer
        asked for a nominative invoice (SAT: cancel the global, issue the nominative one, re-issue
        the global without that sale), so the tickets can be invoiced until the end of this month
        even if their own window had closed; the next global invoice takes the rest."""
        record = await self.repos.global_invoices.find_one({"_id": event.invoice_id})
        if record is None:
            return

        async def work(tx: Transaction) -> None:
            await self.repos.global_invoices.update_one({"_id": event.invoice_id}, {"$set": {"status": "canceled", "cancel_motive": event.motive}}, session=tx.session)
            now = utcnow()
            for ticket_id in dict.fromkeys(record["ticket_ids"]):
                ticket = await self.repos.tickets.get(event.issuer_id, ticket_id, session=tx.session)
                if ticket is None or ticket.get("invoice_id") != event.invoice_id:
                    continue
                until = ticket["invoiceable_until"]
                if event.motive == "04":
                    branch = await self.repos.branches.get(event.issuer_id, ticket["branch_id"], session=tx.session)
                    until = max(until, invoiceable_until(now, zone_of((branch or {}).get("zip")), None))
                doc = {**ticket, "status": "open", "invoice_id": None, "invoiceable_until": until, "version": ticket["version"] + 1, "updated_at": now}
                if not await self.repos.tickets.replace(doc, expected_version=ticket["version"], session=tx.session):
                    raise RetryLater(f"ticket {ticket_id} changed meanwhile")
                tx.emit(ticket_event(doc), key=doc["_id"])

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}:{event.attempt}")

    async def _set_tickets(self, tx: Transaction, issuer_id: str, ticket_ids: list[str], *, status: str, invoice_id: str | None, only_for: str | None = None) -> None:
        for ticket_id in dict.fromkeys(ticket_ids):
            ticket = await self.repos.tickets.get(issuer_id, ticket_id, session=tx.session)
            if ticket is None or (only_for is not None and ticket.get("invoice_id") != only_for):
                continue
            if ticket["status"] == "invoiced" and status != "invoiced":
                continue
            doc = {**ticket, "status": status, "invoice_id": invoice_id, "version": ticket["version"] + 1, "updated_at": utcnow()}
            if not await self.repos.tickets.replace(doc, expected_version=ticket["version"], session=tx.session):
                raise RetryLater(f"ticket {ticket_id} changed meanwhile")
            tx.emit(ticket_event(doc), key=doc["_id"])


# ---------------------------------------------------------------------- helpers

def _window(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        days = int(value)
    except (TypeError, ValueError):
        days = -1
    if not 0 <= days <= 366:
        raise ApiError(422, "TIMBRA_WINDOW_INVALID", "invoicing_window_days es un número de días entre 0 y 366, o null (el mismo mes calendario).",
                       [Problem("TIMBRA_WINDOW_INVALID", "invoicing_window_days es un número de días entre 0 y 366, o null.", "timbra", "invoicing_window_days")])
    return days


def _branch_values(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "name" in data or not partial:
        name = str(data.get("name") or "").strip()
        if not name:
            raise ApiError(422, "TIMBRA_BRANCH_NAME_REQUIRED", "La sucursal necesita un nombre.", [Problem("TIMBRA_BRANCH_NAME_REQUIRED", "La sucursal necesita un nombre.", "timbra", "name")])
        values["name"] = name
    if "code" in data or not partial:
        values["code"] = (str(data.get("code")).strip() or None) if data.get("code") is not None else None
    if "zip" in data or not partial:
        zip_code = data.get("zip")
        if zip_code is not None and not catalogs.exists("c_CodigoPostal", str(zip_code)):
            raise ApiError(422, "TIMBRA_ZIP_UNKNOWN", f"El código postal {zip_code} no existe en el catálogo c_CodigoPostal.", [Problem("TIMBRA_ZIP_UNKNOWN", f"El código postal {zip_code} no existe.", "timbra", "zip")])
        values["zip"] = zip_code
    if "invoicing_window_days" in data or not partial:
        values["invoicing_window_days"] = _window(data.get("invoicing_window_days"))
    return values


def _customer_row(row: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {k: v for k, v in row.items() if v != ""}
    if "emails" in data:
        data["emails"] = [e for e in data["emails"].replace(",", ";").split(";") if e.strip()]
    return data


def _product_row(row: dict[str, str]) -> dict[str, Any]:
    """Product CSV columns: sku, description, product_key, unit_key, unit_name, price,
    tax_included (true/false), taxability, iva (0.16 | 0.08 | 0 | exento), ieps (rate),
    iva_withholding (rate), isr_withholding (rate)."""
    data: dict[str, Any] = {k: v for k, v in row.items() if v != "" and k not in ("iva", "ieps", "iva_withholding", "isr_withholding")}
    if "tax_included" in data:
        flag = data["tax_included"].lower()
        if flag not in ("true", "false", "1", "0", "si", "sí", "no"):
            raise ValueError(f"tax_included debe ser true o false, no {data['tax_included']}.")
        data["tax_included"] = flag in ("true", "1", "si", "sí")
    taxes: list[dict[str, Any]] = []
    iva = row.get("iva", "")
    if iva:
        taxes.append({"type": "IVA", "factor": "Exento"} if iva.lower() == "exento" else {"type": "IVA", "rate": iva})
    if row.get("ieps"):
        taxes.append({"type": "IEPS", "rate": row["ieps"]})
    if row.get("iva_withholding"):
        taxes.append({"type": "IVA", "rate": row["iva_withholding"], "withholding": True})
    if row.get("isr_withholding"):
        taxes.append({"type": "ISR", "rate": row["isr_withholding"], "withholding": True})
    if taxes or any(k in row for k in ("iva", "ieps")):
        data["taxes"] = taxes
    return data

