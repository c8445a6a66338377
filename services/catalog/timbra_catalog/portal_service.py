"""Use cases of the self-invoicing portal (seed 004), owned by the catalog because it owns the
issuer's branches, tickets and customers (docs/portal.md).

A visitor has no API key: the portal is reached by the issuer's slug, invoices a ticket by what is
printed on it, and sees only invoices it generated in this browser (a receipt, an HMAC of the
invoice id) or, logged in as a customer, those whose receptor RFC is the customer's. The invoice
travels the pipeline like any other (``InvoiceRequested`` through the catalog's outbox, as the
global invoice does); the builder stays the authority on the invoicing window and once-only."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from timbra_catalog.adapters.portal import PipelineClient, PortalRepositories, Unavailable
from timbra_catalog.adapters.repository import CatalogRepositories
from timbra_catalog.domain import portal as rules
from timbra_catalog.domain.customers import EMAIL, GENERIC, clean_rfc, persona, validate_customer
from timbra_catalog.domain.tickets import zone_of
from timbra_catalog.service import CatalogService, invalid
from timbra_shared.auth import Principal
from timbra_shared.errors import ApiError, Problem
from timbra_shared.events import (
    CancellationCompleted,
    CustomerIn,
    InvoiceRejected,
    InvoiceRequest,
    InvoiceRequested,
    InvoiceStamped,
    InvoiceStampFailed,
    IssuerProfileChanged,
    NotificationRequested,
)
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.messaging import trace_of
from timbra_shared.mongo import Store, Transaction, Unit
from timbra_shared.passwords import DUMMY_HASH, hash_password, needs_rehash, verify_password

log = get_logger(__name__)

STAMPED = ("stamped", "rendered", "emailed")
DOCUMENT_RETRIES = 30
_KDF_SLOTS = asyncio.Semaphore(2)  # scrypt takes 32 MiB per hash


async def _hash(password: str) -> str:
    async with _KDF_SLOTS:
        return await asyncio.to_thread(hash_password, password)


async def _verify(password: str, stored: str) -> bool:
    async with _KDF_SLOTS:
        return await asyncio.to_thread(verify_password, password, stored)


def refuse(status: int, problem: Problem) -> ApiError:
    return ApiError(status, problem.code, problem.message, [problem])


PORTAL_NOT_FOUND = ApiError(404, "not_found", "Este portal de facturación no existe. Revisa la dirección que te dio el comercio.")
INVOICE_NOT_FOUND = ApiError(404, "not_found", "Factura no encontrada.")
LOGIN_REQUIRED = ApiError(401, "TIMBRA_PORTAL_LOGIN_REQUIRED", "Tu sesión terminó; inicia sesión de nuevo.")
PASSWORD_CHANGE_REQUIRED = ApiError(403, "TIMBRA_PORTAL_PASSWORD_CHANGE_REQUIRED", "Entraste con una contraseña temporal: cámbiala para continuar.")


class PortalService:
    def __init__(self, *, store: Store, repos: PortalRepositories, catalog_repos: CatalogRepositories, catalog: CatalogService,
                 pipeline: PipelineClient, secret: str) -> None:
        self.store, self.repos, self.catalog_repos, self.catalog, self.pipeline, self.secret = store, repos, catalog_repos, catalog, pipeline, secret

    # ------------------------------------------------------------------ the issuer and its branches

    async def on_issuer_profile(self, profile: IssuerProfileChanged) -> None:
        await self.repos.project_issuer({"_id": profile.issuer_id, "slug": profile.slug, "legal_name": profile.legal_name, "rfc": profile.rfc,
                                         "zip": profile.zip, "version": profile.version, "logo_id": profile.logo_id})

    async def issuer(self, slug: str) -> dict[str, Any]:
        doc = await self.repos.issuer_by_slug(slug) if slug and len(slug) <= 120 else None
        if doc is None:
            raise PORTAL_NOT_FOUND
        return doc

    async def portal(self, slug: str) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        branches = await self.catalog_repos.branches.find({"issuer_id": issuer["_id"], "deleted_at": None}, sort="name")
        return {"slug": issuer["slug"], "legal_name": issuer["legal_name"], "rfc": issuer["rfc"],
                "branches": [{"id": b["_id"], "name": b["name"], "code": b.get("code")} for b in branches],
                "payment_forms": [{"code": c, "description": d} for c, d in rules.PAYMENT_FORMS]}

    # ------------------------------------------------------------------ the throttle

    async def _check_throttle(self, kind: str, issuer_id: str, client: str, now: datetime) -> str:
        key = f"{kind}:{issuer_id}:{client}"
        wait = rules.blocked_for(await self.repos.attempts_of(key), kind, now)
        if wait:
            log.warning("portal.rate_limited", kind=kind, issuer_id=issuer_id)
            error = refuse(429, rules.rate_limited(kind, wait))
            error.retry_after = wait  # type: ignore[attr-defined]
            raise error
        return key

    # ------------------------------------------------------------------ step 2: the RFC

    async def customer_by_rfc(self, slug: str, rfc_text: str, client: str) -> dict[str, Any]:
        """What the portal prefills for a known RFC (the e-mail masked); ``known: false`` otherwise."""
        issuer = await self.issuer(slug)
        rfc = clean_rfc(rfc_text)
        if persona(rfc) is None:
            raise refuse(422, Problem("CFDI40143", f"El RFC {rfc or '(vacío)'} no tiene un formato válido: persona moral son 3 letras, persona física 4, "
                                      "seguidas de la fecha AAMMDD y una homoclave de 3 caracteres.", "sat", "rfc"))
        now = utcnow()
        key = await self._check_throttle("rfc", issuer["_id"], client, now)
        await self.repos.count_attempt(key, "rfc", now)
        customer = None if rfc in GENERIC else await self.catalog_repos.customers.find_one({"issuer_id": issuer["_id"], "rfc_key": rfc, "deleted_at": None})
        if customer is None:
            return {"known": False, "rfc": rfc}
        emails = customer.get("emails") or []
        return {"known": True, "rfc": rfc, "legal_name": customer["legal_name"], "tax_regime": customer["tax_regime"], "zip": customer.get("zip"),
                "use": customer.get("default_use"), "email_hint": rules.mask_email(emails[0]) if emails else None}

    # ------------------------------------------------------------------ steps 3-5: the ticket and the invoice

    async def request_invoice(self, slug: str, data: dict[str, Any], client: str) -> tuple[dict[str, Any], bool]:
        issuer = await self.issuer(slug)
        issuer_id = issuer["_id"]
        problems: list[Problem] = []
        branch = await self.catalog_repos.branches.get(issuer_id, str(data.get("branch_id") or ""))
        if branch is None:
            problems.append(Problem("TIMBRA_BRANCH_REQUIRED", "Elige la sucursal donde compraste.", "timbra", "branch_id"))
        order_number, ticket_number = rules.clean_number(data.get("order_number")), rules.clean_number(data.get("ticket_number"))
        if not order_number:
            problems.append(Problem("TIMBRA_ORDER_NUMBER_REQUIRED", "Escribe el número de orden de tu ticket.", "timbra", "order_number"))
        if not ticket_number:
            problems.append(Problem("TIMBRA_TICKET_NUMBER_REQUIRED", "Escribe el número de ticket.", "timbra", "ticket_number"))
        total = rules.parse_total(data.get("total"))
        if total is None:
            problems.append(Problem("TIMBRA_TOTAL_INVALID", "Escribe el total del ticket como un importe, por ejemplo 1160.00.", "timbra", "total"))
        payment_form = str(data.get("payment_form") or "").strip() or None
        if payment_form and payment_form not in rules.PAYMENT_FORM_CODES:
            problems.append(Problem("CFDI40104", f"La forma de pago {payment_form} no está disponible en el portal.", "sat", "payment_form"))
        raw = data.get("customer") if isinstance(data.get("customer"), dict) else {}
        email = str(raw.get("email") or "").strip()
        fiscal = {"rfc": raw.get("rfc"), "legal_name": raw.get("legal_name"), "tax_regime": raw.get("tax_regime"), "zip": raw.get("zip"), "default_use": raw.get("use")}
        customer, customer_problems = validate_customer(fiscal)
        problems += [Problem(p.code, p.message, p.source, "use" if p.path == "default_use" else p.path) for p in customer_problems]
        if customer is not None and customer.rfc in GENERIC:
            problems.append(Problem("TIMBRA_PORTAL_GENERIC_RFC", "El portal factura a tu RFC; las ventas al público en general se incluyen en la factura global.", "timbra", "rfc"))
        if customer is not None and not customer.default_use:
            problems.append(Problem("TIMBRA_USE_REQUIRED", "Elige el uso que darás a la factura (Uso CFDI).", "timbra", "use"))
        if email and not EMAIL.match(email):
            problems.append(Problem("TIMBRA_EMAIL_INVALID", f"El correo {email} no es válido.", "timbra", "email"))
        known = None if customer is None else await self.catalog_repos.customers.find_one({"issuer_id": issuer_id, "rfc_key": customer.rfc, "deleted_at": None})
        if customer is not None and known is None and not email:
            problems.append(Problem("TIMBRA_EMAIL_REQUIRED", "Escribe tu correo: ahí te enviaremos la factura.", "timbra", "email"))
        if problems:
            raise invalid(problems)
        assert branch is not None and total is not None and customer is not None

        now = utcnow()
        throttle = await self._check_throttle("ticket", issuer_id, client, now)
        ticket = await self.catalog_repos.tickets.find_one({"issuer_id": issuer_id, "branch_id": branch["_id"], "ticket_number": ticket_number})
        problem = rules.check_ticket(ticket, branch_name=branch["name"], order_number=order_number, total=total, now=now, zone=zone_of(branch.get("zip")))
        if problem is not None:
            if problem.code in ("TIMBRA_TICKET_NOT_FOUND", "TIMBRA_TICKET_TOTAL_MISMATCH"):
                await self.repos.count_attempt(throttle, "ticket", now)
            raise refuse({"TIMBRA_TICKET_NOT_FOUND": 404, "TIMBRA_TICKET_ALREADY_INVOICED": 409}.get(problem.code, 422), problem)
        assert ticket is not None

        live = await self.repos.live_invoice_for_ticket(issuer_id, ticket["_id"])
        if live is not None:
            if live["rfc"] == customer.rfc:  # the same customer again (double click, reload): the same invoice
                return {**self.present_invoice(live), "receipt": rules.receipt_for(self.secret, issuer_id, live["_id"])}, False
            raise refuse(409, rules.already_invoiced())

        emails = [email] if email else list((known or {}).get("emails") or [])[:1]
        if known is None:
            try:
                known = await self.catalog.create_customer(Principal(kind="issuer", issuer_id=issuer_id, roles=("portal",)), {**customer.as_dict(), "emails": emails})
            except ApiError as error:
                if error.code != "TIMBRA_CUSTOMER_DUPLICATE":  # created meanwhile by another request: fine
                    raise
        invoice_id = new_id("inv_")
        request = InvoiceRequest(
            type="I",
            customer=CustomerIn(rfc=customer.rfc, legal_name=customer.legal_name, tax_regime=customer.tax_regime, zip=customer.zip or "", use=customer.default_use),
            payment_form=payment_form or ticket.get("payment_form") or "01", payment_method="PUE", use=customer.default_use, emails=emails,
            branch_id=branch["_id"], ticket_id=ticket["_id"], idempotency_key=f"portal:{invoice_id}",
        )
        doc = {"_id": invoice_id, "issuer_id": issuer_id, "ticket_id": ticket["_id"], "branch_id": branch["_id"], "branch_name": branch["name"],
               "ticket_number": ticket_number, "total": str(total), "rfc": customer.rfc, "legal_name": customer.legal_name, "emails": emails,
               "status": "processing", "live": True, "created_at": now, "updated_at": now}

        async def work(tx: Transaction) -> None:
            await self.repos.invoices.insert_one(doc, session=tx.session)
            tx.emit(InvoiceRequested(invoice_id=invoice_id, issuer_id=issuer_id, request=request, livemode=False, source="kafka"))

        try:
            await self.store.transact(work)
        except DuplicateKeyError:
            raise refuse(409, rules.already_invoiced()) from None
        log.info("portal.invoice_requested", issuer_id=issuer_id, invoice_id=invoice_id)
        return {**self.present_invoice(doc), "receipt": rules.receipt_for(self.secret, issuer_id, invoice_id)}, True

    @staticmethod
    def present_invoice(doc: dict[str, Any]) -> dict[str, Any]:
        out = {k: doc.get(k) for k in ("status", "uuid", "serie", "folio", "total", "rfc", "legal_name", "branch_id", "branch_name", "ticket_number", "message", "errors")}
        out["id"] = doc["_id"]
        for key in ("created_at", "stamped_at"):
            value = doc.get(key)
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out

    # ------------------------------------------------------------------ who may see an invoice

    async def _visible(self, issuer_id: str, invoice_id: str, *, receipt: str | None, session: dict[str, Any] | None) -> dict[str, Any]:
        portal_doc = await self.repos.invoices.find_one({"_id": invoice_id, "issuer_id": issuer_id})
        if rules.receipt_ok(self.secret, issuer_id, invoice_id, receipt) and portal_doc is not None:
            return portal_doc
        if session is not None and session["issuer_id"] == issuer_id:
            stamped = await self.repos.receptor_invoices.find_one({"_id": invoice_id, "issuer_id": issuer_id, "rfc": session["rfc"]})
            if stamped is not None:
                return {**(portal_doc or {}), **stamped}
            if portal_doc is not None and portal_doc["rfc"] == session["rfc"]:
                return portal_doc
        raise INVOICE_NOT_FOUND  # another customer's invoice, another issuer's, or none: the same answer

    async def invoice(self, slug: str, invoice_id: str, *, receipt: str | None = None, token: str | None = None) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        session = await self._session(issuer["_id"], token, allow_must_change=False) if token else None
        doc = await self._visible(issuer["_id"], invoice_id, receipt=receipt, session=session)
        if doc.get("status") in ("processing", "waiting_sat"):
            doc = await self._progress(doc)
        return self.present_invoice(doc)

    async def _progress(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Where an invoice still on its way is: the builder's read model, and the stamping
        service's attempts (a PAC or SAT outage keeps it retrying; the customer is told so)."""
        try:
            state = await self.pipeline.invoice(doc["issuer_id"], doc["_id"])
            if state is None:
                return doc
            if state["status"] in STAMPED:
                return {**doc, "status": "stamped", "uuid": state.get("uuid"), "serie": state.get("serie"), "folio": state.get("folio")}
            if state["status"] in ("rejected", "stamp_failed"):
                return {**doc, "status": "failed", "message": state.get("message"), "errors": state.get("errors") or []}
            if state["status"] == "funded":
                stamping = await self.pipeline.stamping(doc["issuer_id"], doc["_id"])
                if stamping and stamping.get("state") == "stamped":  # the builder has not heard yet; the customer need not wait for it
                    return {**doc, "status": "stamped", "uuid": stamping.get("uuid"), "serie": state.get("serie"), "folio": state.get("folio")}
                if stamping and stamping.get("state") in ("pending", "dead_letter") and (stamping.get("attempts") or 0) >= 1:
                    return {**doc, "status": "waiting_sat", "message": self._waiting_message(doc)}
        except Unavailable:
            pass
        return doc

    @staticmethod
    def _waiting_message(doc: dict[str, Any]) -> str:
        to = f" a {doc['emails'][0]}" if doc.get("emails") else ""
        return f"El SAT no responde en este momento. Tu factura se generará en cuanto el SAT responda; te la enviaremos por correo{to}."

    async def document(self, slug: str, invoice_id: str, kind: str, *, receipt: str | None = None, token: str | None = None) -> tuple[bytes, str, str]:
        issuer = await self.issuer(slug)
        session = await self._session(issuer["_id"], token, allow_must_change=False) if token else None
        doc = await self._visible(issuer["_id"], invoice_id, receipt=receipt, session=session)
        try:
            response = await self.pipeline.document(issuer["_id"], invoice_id, kind)
            # stamped a moment ago: the notifier may still be rendering (or not have heard yet)
            for _ in range(DOCUMENT_RETRIES if doc.get("status") == "stamped" else 0):
                if response.status_code != 404:
                    break
                await asyncio.sleep(0.5)
                response = await self.pipeline.document(issuer["_id"], invoice_id, kind)
        except Unavailable:
            raise ApiError(503, "unavailable", "No pudimos obtener el archivo en este momento; intenta de nuevo en unos segundos.") from None
        if response.status_code == 404:
            raise ApiError(404, "TIMBRA_INVOICE_NOT_STAMPED", "La factura aún no está timbrada; el archivo estará disponible en cuanto lo esté.")
        if response.status_code != 200:
            raise ApiError(503, "unavailable", "No pudimos obtener el archivo en este momento; intenta de nuevo en unos segundos.")
        name = doc.get("uuid") or invoice_id
        return response.content, response.headers.get("content-type", "application/octet-stream"), f"{name}.{kind}"

    async def send_email(self, slug: str, invoice_id: str, email: str, *, receipt: str | None = None, token: str | None = None) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        session = await self._session(issuer["_id"], token, allow_must_change=False) if token else None
        await self._visible(issuer["_id"], invoice_id, receipt=receipt, session=session)
        email = (email or "").strip()
        if not EMAIL.match(email):
            raise refuse(422, Problem("TIMBRA_EMAIL_INVALID", f"El correo {email or '(vacío)'} no es válido.", "timbra", "email"))
        try:
            response = await self.pipeline.email(issuer["_id"], invoice_id, [email])
        except Unavailable:
            raise ApiError(503, "unavailable", "No pudimos enviar el correo en este momento; intenta de nuevo en unos segundos.") from None
        if response.status_code == 404:
            raise ApiError(409, "TIMBRA_INVOICE_NOT_STAMPED", "La factura aún no está timbrada; te la enviaremos en cuanto lo esté.")
        if response.status_code >= 400:
            body = response.json() if "json" in response.headers.get("content-type", "") else {}
            raise ApiError(response.status_code if response.status_code < 500 else 502, body.get("code") or "TIMBRA_EMAIL_UNAVAILABLE",
                           body.get("message") or "No pudimos enviar el correo; intenta de nuevo.")
        return {"ok": True, "sent_to": email}

    # ------------------------------------------------------------------ the pipeline's outcome

    async def on_stamped(self, event: InvoiceStamped) -> None:
        unit = self.stamped_unit(event)
        if unit is not None:
            await self.store.transact_many([unit])

    def stamped_unit(self, event: InvoiceStamped) -> Unit | None:
        """The receptor's copy of a stamped invoice (none for the generic RFCs)."""
        summary = event.summary
        if summary.rfc_receptor in GENERIC:
            return None

        async def work(tx: Transaction) -> None:
            branch_id = None
            if summary.ticket_id:
                ticket = await self.catalog_repos.tickets.get(event.issuer_id, summary.ticket_id, session=tx.session)
                branch_id = (ticket or {}).get("branch_id")
            record = {"issuer_id": event.issuer_id, "rfc": summary.rfc_receptor, "legal_name": summary.nombre_receptor, "uuid": event.uuid,
                      "serie": summary.serie, "folio": summary.folio, "fecha": summary.fecha, "total": str(summary.total), "currency": summary.currency,
                      "type": summary.type, "ticket_id": summary.ticket_id, "branch_id": branch_id, "status": "stamped", "stamped_at": event.occurred_at}
            await self.repos.receptor_invoices.update_one({"_id": event.invoice_id}, {"$set": record}, upsert=True, session=tx.session)
            await self.repos.invoices.update_one({"_id": event.invoice_id}, {"$set": {"status": "stamped", "uuid": event.uuid, "serie": summary.serie,
                                                                                    "folio": summary.folio, "stamped_at": event.occurred_at, "updated_at": utcnow()}}, session=tx.session)

        return Unit(work, dedupe=f"portal:{event.event_type}:{event.invoice_id}", trace=trace_of(event))

    async def on_failed(self, event: InvoiceRejected | InvoiceStampFailed) -> None:
        """A portal invoice that failed frees its ticket (``live`` false) and keeps SAT's reasons."""
        errors = [e.model_dump() for e in event.errors]
        await self.repos.invoices.update_one({"_id": event.invoice_id, "issuer_id": event.issuer_id},
                                             {"$set": {"status": "failed", "live": False, "message": event.message, "errors": errors, "updated_at": utcnow()}})

    async def on_cancelled(self, event: CancellationCompleted) -> None:
        await self.repos.receptor_invoices.update_one({"_id": event.invoice_id, "issuer_id": event.issuer_id}, {"$set": {"status": "canceled"}})
        await self.repos.invoices.update_one({"_id": event.invoice_id, "issuer_id": event.issuer_id}, {"$set": {"status": "canceled", "live": False}})

    # ------------------------------------------------------------------ customer accounts

    async def register(self, slug: str, data: dict[str, Any], client: str) -> dict[str, Any]:
        """An account for a customer the issuer knows: the e-mail must be one registered for that RFC
        (at the first portal invoice, or by the issuer), so an RFC alone opens nothing."""
        issuer = await self.issuer(slug)
        rfc = clean_rfc(str(data.get("rfc") or ""))
        email = str(data.get("email") or "").strip()
        password = str(data.get("password") or "")
        problems: list[Problem] = []
        if persona(rfc) is None or rfc in GENERIC:
            problems.append(Problem("CFDI40143", f"El RFC {rfc or '(vacío)'} no tiene un formato válido.", "sat", "rfc"))
        if not EMAIL.match(email):
            problems.append(Problem("TIMBRA_EMAIL_INVALID", "Escribe un correo válido.", "timbra", "email"))
        problems += rules.validate_password(password, data.get("password_confirmation") if "password_confirmation" in data else None, rfc=rfc)
        if problems:
            raise invalid(problems)
        now = utcnow()
        key = await self._check_throttle("login", issuer["_id"], client, now)
        customer = await self.catalog_repos.customers.find_one({"issuer_id": issuer["_id"], "rfc_key": rfc, "deleted_at": None})
        if customer is None or email.lower() not in (e.lower() for e in customer.get("emails") or []):
            await self.repos.count_attempt(key, "login", now)
            raise refuse(422, Problem("TIMBRA_PORTAL_EMAIL_NOT_REGISTERED", f"Para crear tu cuenta escribe el correo que registraste al facturar con este RFC en {issuer['legal_name']}.", "timbra", "email"))
        account = {"_id": new_id("pca_"), "issuer_id": issuer["_id"], "rfc": rfc, "email": email, "password_hash": await _hash(password),
                   "must_change": False, "created_at": now, "updated_at": now}
        try:
            await self.repos.accounts.insert_one(account)
        except DuplicateKeyError:
            raise refuse(409, Problem("TIMBRA_PORTAL_ACCOUNT_EXISTS", "Ya existe una cuenta para este RFC: inicia sesión o recupera tu contraseña.", "timbra", "rfc")) from None
        return await self._open_session(issuer, account)

    async def login(self, slug: str, rfc_text: str, password: str, client: str) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        rfc = clean_rfc(rfc_text)
        now = utcnow()
        key = await self._check_throttle("login", issuer["_id"], client, now)
        account = await self.repos.accounts.find_one({"issuer_id": issuer["_id"], "rfc": rfc}) if rfc else None
        ok = await _verify(password or "", account["password_hash"] if account else DUMMY_HASH)
        if not ok or account is None:
            await self.repos.count_attempt(key, "login", now)
            raise ApiError(401, "TIMBRA_PORTAL_LOGIN_FAILED", "RFC o contraseña incorrectos.")
        if account.get("must_change") and account.get("temp_expires_at") and _aware(account["temp_expires_at"]) <= now:
            raise ApiError(401, "TIMBRA_PORTAL_TEMP_PASSWORD_EXPIRED", "La contraseña temporal venció; solicita otra con «¿Olvidaste tu contraseña?».")
        if needs_rehash(account["password_hash"]):
            await self.repos.accounts.update_one({"_id": account["_id"]}, {"$set": {"password_hash": await _hash(password)}})
        return await self._open_session(issuer, account)

    async def _open_session(self, issuer: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
        token = rules.new_token()
        expires = utcnow() + rules.SESSION_TTL
        await self.repos.sessions.insert_one({"_id": rules.token_hash(token), "issuer_id": issuer["_id"], "account_id": account["_id"], "rfc": account["rfc"],
                                              "expires_at": expires, "created_at": utcnow()})
        return {"token": token, "rfc": account["rfc"], "must_change": bool(account.get("must_change")), "expires_at": expires.isoformat()}

    async def _session(self, issuer_id: str, token: str | None, *, allow_must_change: bool) -> dict[str, Any]:
        doc = await self.repos.sessions.find_one({"_id": rules.token_hash(token)}) if token else None
        if doc is None or doc["issuer_id"] != issuer_id or _aware(doc["expires_at"]) <= utcnow():
            raise LOGIN_REQUIRED
        account = await self.repos.accounts.find_one({"_id": doc["account_id"], "issuer_id": issuer_id})
        if account is None:
            raise LOGIN_REQUIRED
        if account.get("must_change") and not allow_must_change:
            raise PASSWORD_CHANGE_REQUIRED
        return {**doc, "account": account}

    async def logout(self, slug: str, token: str | None) -> None:
        if token:
            await self.repos.sessions.delete_one({"_id": rules.token_hash(token)})

    async def me(self, slug: str, token: str | None) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        session = await self._session(issuer["_id"], token, allow_must_change=True)
        account = session["account"]
        customer = await self.catalog_repos.customers.find_one({"issuer_id": issuer["_id"], "rfc_key": account["rfc"], "deleted_at": None}) or {}
        return {"rfc": account["rfc"], "email": account["email"], "must_change": bool(account.get("must_change")), "customer_id": customer.get("_id"),
                "legal_name": customer.get("legal_name"), "tax_regime": customer.get("tax_regime"), "zip": customer.get("zip"), "use": customer.get("default_use"),
                "issuer": {"legal_name": issuer["legal_name"], "slug": issuer["slug"]}}

    async def update_me(self, slug: str, token: str | None, data: dict[str, Any]) -> dict[str, Any]:
        """Edit the customer's fiscal data (seed 004 II): the catalog's customer, validated by its rules."""
        issuer = await self.issuer(slug)
        session = await self._session(issuer["_id"], token, allow_must_change=False)
        rfc = session["rfc"]
        values = {"legal_name": data.get("legal_name"), "tax_regime": data.get("tax_regime"), "zip": data.get("zip"), "default_use": data.get("use") or None}
        principal = Principal(kind="issuer", issuer_id=issuer["_id"], roles=("portal",))
        customer = await self.catalog_repos.customers.find_one({"issuer_id": issuer["_id"], "rfc_key": rfc, "deleted_at": None})
        try:
            if customer is None:
                await self.catalog.create_customer(principal, {"rfc": rfc, **values, "emails": [session["account"]["email"]]})
            else:
                await self.catalog.update_customer(principal, customer["_id"], values)
        except ApiError as error:
            error.errors = [Problem(p.code, p.message, p.source, "use" if p.path == "default_use" else p.path) for p in error.errors]
            raise
        return await self.me(slug, token)

    async def change_password(self, slug: str, token: str | None, data: dict[str, Any]) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        session = await self._session(issuer["_id"], token, allow_must_change=True)
        account = session["account"]
        password = str(data.get("password") or "")
        problems = rules.validate_password(password, str(data.get("password_confirmation") or ""), rfc=account["rfc"])
        current = str(data.get("current_password") or "")
        if not await _verify(current, account["password_hash"]):
            problems.insert(0, Problem("TIMBRA_PASSWORD_CURRENT_WRONG", "La contraseña actual no es correcta.", "timbra", "current_password"))
        elif not problems and password == current:
            problems.append(Problem("TIMBRA_PASSWORD_REUSED", "La nueva contraseña debe ser distinta de la actual.", "timbra", "password"))
        if problems:
            raise invalid(problems)
        await self.repos.accounts.update_one({"_id": account["_id"]}, {"$set": {"password_hash": await _hash(password), "must_change": False, "updated_at": utcnow()},
                                                                       "$unset": {"temp_expires_at": ""}})
        # every other session of this account ends
        await self.repos.sessions.delete_many({"account_id": account["_id"], "_id": {"$ne": rules.token_hash(token or "")}})
        return {"ok": True, "must_change": False}

    # ------------------------------------------------------------------ password recovery (seed 004 III)

    async def captcha(self, slug: str) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        challenge = rules.new_captcha()
        captcha_id = new_id("cap_")
        await self.repos.captchas.insert_one({"_id": captcha_id, "issuer_id": issuer["_id"], "answer": rules.captcha_hash(self.secret, captcha_id, challenge.answer),
                                              "expires_at": utcnow() + rules.CAPTCHA_TTL})
        return {"captcha_id": captcha_id, "svg": challenge.svg}

    async def recover(self, slug: str, data: dict[str, Any], client: str) -> dict[str, Any]:
        """RFC + registered e-mail + captcha -> a temporary password by e-mail, changed at the next
        login. The answer is the same whether or not the RFC and e-mail match an account."""
        issuer = await self.issuer(slug)
        now = utcnow()
        key = await self._check_throttle("recovery", issuer["_id"], client, now)
        await self.repos.count_attempt(key, "recovery", now)
        captcha_id = str(data.get("captcha_id") or "")
        stored = await self.repos.captchas.find_one_and_delete({"_id": captcha_id, "issuer_id": issuer["_id"]}) if captcha_id else None
        answer = str(data.get("captcha_answer") or "")
        if stored is None or _aware(stored["expires_at"]) <= now or stored["answer"] != rules.captcha_hash(self.secret, captcha_id, answer):
            raise refuse(422, Problem("TIMBRA_CAPTCHA_INVALID", "La respuesta de la operación no es correcta; resuelve la nueva operación.", "timbra", "captcha_answer"))
        rfc = clean_rfc(str(data.get("rfc") or ""))
        email = str(data.get("email") or "").strip()
        account = await self.repos.accounts.find_one({"issuer_id": issuer["_id"], "rfc": rfc}) if rfc else None
        if account is not None and email and account["email"].lower() == email.lower():
            temporary = rules.temporary_password()
            digest = await _hash(temporary)
            body = (f"Hola,\n\nRecibimos una solicitud para recuperar la contraseña de tu cuenta de facturación de {issuer['legal_name']} (RFC {rfc}).\n\n"
                    f"Tu contraseña temporal es: {temporary}\n\nVale por {int(rules.TEMP_PASSWORD_TTL.total_seconds() // 60)} minutos. Al entrar te pediremos "
                    "cambiarla por una nueva.\n\nSi no la solicitaste, ignora este correo: tu contraseña actual sigue funcionando hasta que uses la temporal.\n")

            async def work(tx: Transaction) -> None:
                await self.repos.accounts.update_one({"_id": account["_id"]}, {"$set": {"password_hash": digest, "must_change": True,
                                                                                        "temp_expires_at": now + rules.TEMP_PASSWORD_TTL, "updated_at": now}}, session=tx.session)
                await self.repos.sessions.delete_many({"account_id": account["_id"]}, session=tx.session)
                tx.emit(NotificationRequested(issuer_id=issuer["_id"], kind="portal.password_recovery", to=[account["email"]],
                                              subject=f"Tu contraseña temporal del portal de facturación de {issuer['legal_name']}", body=body))

            await self.store.transact(work)
            log.info("portal.password_recovery", issuer_id=issuer["_id"])
        return {"ok": True, "message": "Si el RFC y el correo coinciden con una cuenta, te enviamos una contraseña temporal. Revisa tu correo."}

    # ------------------------------------------------------------------ the customer's invoices (seed 004 IV)

    async def my_invoices(self, slug: str, token: str | None, *, branch_id: str | None = None, status: str | None = None, q: str | None = None,
                          date_from: str | None = None, date_to: str | None = None, page: int = 1, limit: int = 20) -> dict[str, Any]:
        issuer = await self.issuer(slug)
        session = await self._session(issuer["_id"], token, allow_must_change=False)
        filters: dict[str, Any] = {}
        if branch_id:
            filters["branch_id"] = branch_id
        if status in ("stamped", "canceled"):
            filters["status"] = status
        if q:
            text = q.strip().upper()[:40]
            filters["$or"] = [{"uuid": text}, {"folio": text.lstrip("0") or text}, {"folio": text}]
        span: dict[str, Any] = {}
        try:
            if date_from:
                span["$gte"] = datetime.fromisoformat(date_from[:10]).replace(tzinfo=UTC)
            if date_to:
                span["$lt"] = datetime.fromisoformat(date_to[:10]).replace(tzinfo=UTC) + timedelta(days=1)
        except ValueError:
            raise refuse(422, Problem("TIMBRA_DATE_INVALID", "Escribe las fechas como AAAA-MM-DD.", "timbra", "desde")) from None
        if span:
            filters["stamped_at"] = span
        docs, total = await self.repos.receptor_page(issuer["_id"], session["rfc"], filters=filters, limit=limit, skip=(page - 1) * limit)
        branches = {b["_id"]: b["name"] for b in await self.catalog_repos.branches.find({"issuer_id": issuer["_id"]})}
        data = []
        for d in docs:
            item = self.present_invoice(d)
            item.update({"fecha": d.get("fecha"), "currency": d.get("currency"), "branch_name": branches.get(d.get("branch_id") or "")})
            data.append(item)
        return {"page": page, "total_pages": max(1, -(-total // limit)), "total_results": total, "data": data}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
