"""Use cases of billing's credits: the gate on the pipeline (reserve, commit, release), packages
(grants, adjustments, expiry with FIFO consumption), low-balance alerts and the books check."""

import calendar
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from timbra_billing.adapters.repository import CreditRepository, LedgerLine
from timbra_billing.domain.ledger import BALANCE_FIELDS, NO_CREDITS_CODE, NO_CREDITS_MESSAGE, Entry, balanced, from_sums, mismatch
from timbra_shared.errors import ApiError
from timbra_shared.events import ErrorDetail, InvoiceFunded, InvoiceRejected, InvoiceSealed, InvoiceStamped, InvoiceStampFailed, NotificationRequested
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.messaging import trace_of
from timbra_shared.mongo import Store, Transaction, Unit

log = get_logger(__name__)

S = TypeVar("S")
DEFAULT_ALERT_THRESHOLD = 10
EXPIRY_ACTOR = "system:expiry"


class Directory(Protocol):
    """Where billing learns an issuer's contact (projected from ``issuer.profile``)."""

    async def contact(self, issuer_id: str) -> dict[str, Any] | None: ...


def add_months(moment: datetime, months: int) -> datetime:
    """Same day and time ``months`` later (the last day of the month when it does not exist)."""
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


class _PerAttempt(Generic[S]):
    """State that the units of one batch transaction share. MongoDB may run a transaction's
    callback again (a transient error), and the new attempt must start from nothing."""

    def __init__(self, make: Callable[[], S]) -> None:
        self.make = make
        self.tx: Transaction | None = None
        self.state: S | None = None

    def of(self, tx: Transaction) -> S:
        if tx is not self.tx:
            self.tx, self.state = tx, self.make()
        return self.state  # type: ignore[return-value]

    def current(self, tx: Transaction) -> S | None:
        return self.state if tx is self.tx else None


@dataclass
class _Reserving:
    loaded: bool = False
    held: set[str] = field(default_factory=set)  # invoices that hold a reservation
    credit: dict[str, list[list[Any]]] = field(default_factory=dict)  # issuer -> [[package id, credits left]] in FIFO order
    lines: list[LedgerLine] = field(default_factory=list)
    reservations: list[dict[str, Any]] = field(default_factory=list)

    def take(self, issuer_id: str) -> str | None:
        """One credit from the issuer's first package that has one left (FIFO), or None."""
        for package in self.credit.get(issuer_id, []):
            if package[1] > 0:
                package[1] -= 1
                return package[0]
        return None


class CreditGate:
    def __init__(self, *, store: Store, repo: CreditRepository, directory: Directory | None = None) -> None:
        self.store = store
        self.repo = repo
        self.directory = directory

    # ------------------------------------------------------------------ the gate

    async def reserve(self, event: InvoiceSealed) -> None:
        await self.reserve_many([event])

    async def reserve_many(self, events: list[InvoiceSealed]) -> None:
        """Reserve the credits of a consumed batch in one transaction, each event keeping its own
        dedupe key and trace. The batch's reservations and packages are read once, each invoice
        takes a credit from its issuer's FIFO package in memory, and the moves are written per
        package and per account at the end (``record_many``): a handful of round trips per batch
        rather than six per invoice."""
        attempt: _PerAttempt[_Reserving] = _PerAttempt(_Reserving)
        invoice_ids = [e.invoice_id for e in events]
        issuer_ids = sorted({e.issuer_id for e in events})

        async def loaded(tx: Transaction) -> _Reserving:
            batch = attempt.of(tx)
            if not batch.loaded:
                batch.held = await self.repo.reservations_of(invoice_ids, tx.session)
                for package in await self.repo.usable_packages(issuer_ids, utcnow(), tx.session):
                    batch.credit.setdefault(package["issuer_id"], []).append([package["_id"], int(package["available"])])
                batch.loaded = True
            return batch

        def reserving(event: InvoiceSealed) -> Callable[[Transaction], Awaitable[None]]:
            async def work(tx: Transaction) -> None:
                batch = await loaded(tx)
                if event.invoice_id in batch.held:
                    return
                package_id = batch.take(event.issuer_id)
                if package_id is None:
                    tx.emit(InvoiceRejected(
                        invoice_id=event.invoice_id, issuer_id=event.issuer_id, stage="sealed", service="billing",
                        message=NO_CREDITS_MESSAGE, errors=[ErrorDetail(code=NO_CREDITS_CODE, message=NO_CREDITS_MESSAGE)],
                    ))
                    return
                reservation_id = new_id("res_")
                batch.held.add(event.invoice_id)
                batch.lines.append(LedgerLine(event.issuer_id, Entry.RESERVE, 1, package_id, "timbrado de factura", "pipeline", event.invoice_id))
                batch.reservations.append({
                    "_id": event.invoice_id, "reservation_id": reservation_id, "issuer_id": event.issuer_id,
                    "package_id": package_id, "state": "reserved", "at": utcnow(),
                })
                tx.emit(InvoiceFunded(invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=event.summary, xml=event.xml, reservation_id=reservation_id))

            return work

        async def write(tx: Transaction) -> None:
            batch = attempt.current(tx)
            if batch is None or not batch.lines:
                return
            accounts = await self.repo.record_many(tx.session, batch.lines)
            await self.repo.insert_reservations(batch.reservations, tx.session)
            for issuer_id, taken in sorted(Counter(line.issuer_id for line in batch.lines).items()):
                await self._alerts_after(tx, accounts[issuer_id], taken)

        units = [Unit(reserving(e), dedupe=f"{e.event_type}:{e.invoice_id}", trace=trace_of(e)) for e in events]
        await self.store.transact_many([*units, Unit(write)])

    async def commit_many(self, events: list[InvoiceStamped]) -> None:
        """Move the batch's reservations to consumed, in one transaction: the reservations are
        settled with one query and the moves written per package and per account."""
        attempt: _PerAttempt[list[str]] = _PerAttempt(list)

        def committing(event: InvoiceStamped) -> Callable[[Transaction], Awaitable[None]]:
            async def work(tx: Transaction) -> None:
                attempt.of(tx).append(event.invoice_id)

            return work

        async def write(tx: Transaction) -> None:
            invoice_ids = attempt.current(tx)
            if not invoice_ids:
                return
            settled = await self.repo.settle_many(invoice_ids, "committed", tx.session)
            lines = [LedgerLine(r["issuer_id"], Entry.COMMIT, 1, r["package_id"], "factura timbrada", "pipeline", r["_id"]) for r in settled]
            if lines:
                await self.repo.record_many(tx.session, lines)

        units = [Unit(committing(e), dedupe=f"{e.event_type}:{e.invoice_id}", trace=trace_of(e)) for e in events]
        await self.store.transact_many([*units, Unit(write)])

    async def commit(self, event: InvoiceStamped) -> None:
        await self.commit_many([event])

    async def release(self, event: InvoiceStampFailed) -> None:
        """Give the reserved credit back; a credit returned after its package ended expires at once."""
        invoice_id, issuer_id = event.invoice_id, event.issuer_id

        async def work(tx: Transaction) -> None:
            reservation = await self.repo.settle(invoice_id, "released", session=tx.session)
            if not reservation:
                return
            package_id = reservation["package_id"]
            await self.repo.record(tx.session, issuer_id, Entry.RELEASE, 1, package_id=package_id, reason="timbrado fallido: se devuelve el crédito", actor="pipeline", invoice_id=invoice_id)
            package = await self.repo.package(package_id, session=tx.session)
            if package and package["expires_at"] <= utcnow():
                account = await self.repo.record(
                    tx.session, issuer_id, Entry.EXPIRE, 1, package_id=package_id,
                    reason="crédito devuelto después del vencimiento del paquete", actor=EXPIRY_ACTOR, invoice_id=invoice_id,
                )
                await self._alerts(tx, account)

        await self.store.transact(work, dedupe=f"{event.event_type}:{invoice_id}")

    # ------------------------------------------------------------------ packages

    async def grant_in(
        self, tx: Transaction, issuer_id: str, stamps: int, months: int, *, actor: str,
        reason: str | None = None, ref: str | None = None, expires_at: datetime | None = None, entry: Entry = Entry.GRANT,
    ) -> str:
        """Open a package of ``stamps`` credits (valid ``months``) inside ``tx``; returns its id."""
        now = utcnow()
        expires_at = expires_at or add_months(now, months)
        package_id = new_id("pkg_")
        reason = reason or f"paquete de {stamps} timbres, vigencia {months} meses"
        await self.repo.insert_package(
            {"_id": package_id, "issuer_id": issuer_id, "stamps": stamps, "months": months, "granted_at": now, "expires_at": expires_at, "reason": reason, "actor": actor, "reference": ref, "source": entry.value},
            session=tx.session,
        )
        await self.repo.record(tx.session, issuer_id, entry, stamps, package_id=package_id, reason=reason, actor=actor, ref=ref, expires_at=expires_at)
        await self.repo.bump_generation(issuer_id, session=tx.session)
        return package_id

    async def grant(self, issuer_id: str, stamps: int, months: int, actor: str, *, reason: str | None = None, expires_at: datetime | None = None) -> dict[str, int]:
        async def work(tx: Transaction) -> None:
            await self.grant_in(tx, issuer_id, stamps, months, actor=actor, reason=reason, expires_at=expires_at)

        await self.store.transact(work)
        return await self.repo.balance(issuer_id)

    async def adjust(self, issuer_id: str, quantity: int, *, reason: str, actor: str) -> dict[str, int]:
        """A manual correction. Positive: a courtesy package valid 12 months. Negative: take back
        available credits, first from the package that expires first."""
        if quantity > 0:
            async def add(tx: Transaction) -> None:
                await self.grant_in(tx, issuer_id, quantity, 12, actor=actor, reason=f"ajuste: {reason}", entry=Entry.ADJUST)

            await self.store.transact(add)
            return await self.repo.balance(issuer_id)

        async def take(tx: Transaction) -> None:
            remaining = -quantity
            balance = await self.repo.balance(issuer_id, session=tx.session)
            if balance["available"] < remaining:
                raise ApiError(409, "TIMBRA_ADJUST_EXCEEDS_AVAILABLE", f"Solo hay {balance['available']} timbres disponibles para retirar.")
            account: dict[str, Any] | None = None
            while remaining:
                package = await self.repo.first_package(issuer_id, utcnow(), tx.session)
                if package is None:
                    raise ApiError(409, "TIMBRA_ADJUST_EXCEEDS_AVAILABLE", "Los timbres disponibles restantes están vencidos.")
                take_now = min(remaining, int(package["available"]))
                account = await self.repo.record(tx.session, issuer_id, Entry.ADJUST, -take_now, package_id=package["_id"], reason=f"ajuste: {reason}", actor=actor)
                remaining -= take_now
            if account is not None:
                await self._alerts(tx, account)

        await self.store.transact(take)
        return await self.repo.balance(issuer_id)

    async def expire_due(self, now: datetime | None = None) -> int:
        """Record the expiry of every package past its end that still has available credits."""
        now = now or utcnow()
        expired = 0
        for due in await self.repo.due_packages(now):
            async def work(tx: Transaction, package_id: str = due["_id"]) -> int:
                package = await self.repo.package(package_id, session=tx.session)
                if package is None or package["available"] <= 0 or package["expires_at"] > now:
                    return 0
                quantity = int(package["available"])
                account = await self.repo.record(
                    tx.session, package["issuer_id"], Entry.EXPIRE, quantity, package_id=package_id,
                    reason=f"vencimiento del paquete de {package['stamps']} timbres ({package['expires_at']:%Y-%m-%d})", actor=EXPIRY_ACTOR,
                )
                await self.repo.mark_package_expired(package_id, session=tx.session)
                await self._alerts(tx, account)
                return quantity

            count = await self.store.transact(work)
            if isinstance(count, int) and count:
                expired += count
                log.info("billing.package_expired", package_id=due["_id"], issuer_id=due["issuer_id"], credits=count)
        return expired

    # ------------------------------------------------------------------ alerts

    async def set_alerts(self, issuer_id: str, threshold: int, emails: list[str] | None) -> dict[str, Any]:
        account = await self.repo.set_alerts(issuer_id, threshold, emails)
        return {"threshold": account.get("alert_threshold", DEFAULT_ALERT_THRESHOLD), "emails": account.get("alert_emails") or []}

    async def _alerts_after(self, tx: Transaction, account: dict[str, Any], taken: int) -> None:
        """``_alerts`` after ``taken`` credits left at once: the low-balance email the balance
        passed on its way down is sent as if they had left one by one (with the first level below
        the threshold), then the final level's."""
        threshold = int(account.get("alert_threshold", DEFAULT_ALERT_THRESHOLD))
        available = int(account.get("available", 0))
        first_below = min(available + taken - 1, threshold - 1)
        if first_below > max(available, 0):
            await self._alerts(tx, {**account, "available": first_below})
        await self._alerts(tx, account)

    async def _alerts(self, tx: Transaction, account: dict[str, Any]) -> None:
        """After credits went down: email once when the balance falls below the issuer's threshold
        and once when it reaches zero. Both re-arm when new credit arrives (a new generation), and
        the event id is derived from (issuer, kind, generation), so a crossing is one email."""
        available = int(account.get("available", 0))
        threshold = int(account.get("alert_threshold", DEFAULT_ALERT_THRESHOLD))
        generation = int(account.get("alert_generation", 0))
        issuer_id = account["_id"]
        if available == 0:
            kind = "zero"
        elif available < threshold:
            kind = "low"
        else:
            return
        claimed = await self.repo.mark_alert(issuer_id, kind, generation, session=tx.session)
        if kind == "zero":
            await self.repo.mark_alert(issuer_id, "low", generation, session=tx.session)
        if not claimed:
            return
        emails = list(account.get("alert_emails") or [])
        if not emails and self.directory is not None:
            contact = await self.directory.contact(issuer_id) or {}
            emails = [contact["email"]] if contact.get("email") else []
        if not emails:
            log.warning("billing.alert_without_email", issuer_id=issuer_id, kind=kind)
            return
        if kind == "zero":
            subject = "Timbres agotados: Timbres disponibles: 0"
            body = ("Ya usaste todos los timbres de tus paquetes vigentes (Sin folios disponibles).\n"
                    "Las facturas nuevas se rechazarán hasta que actives un paquete nuevo: genera tu constancia de pago "
                    "en Productos y, al acreditarse el depósito, tu cuenta se reactiva automáticamente.\n")
        else:
            subject = f"Saldo bajo de timbres: Timbres disponibles: {available}"
            body = (f"Te quedan {available} timbres disponibles, menos que el mínimo de {threshold} que configuraste.\n"
                    "Para no interrumpir tu facturación, genera tu constancia de pago de un paquete nuevo en Productos.\n")
        tx.emit(NotificationRequested(
            event_id=f"billing-{kind}-balance-{issuer_id}-{generation}", issuer_id=issuer_id,
            kind=f"billing.{kind}_balance", to=emails[:10], subject=subject, body=body,
        ))

    # ------------------------------------------------------------------ the books

    async def check_books(self) -> dict[str, Any]:
        """Recompute every balance from the ledger and compare it with the accounts' and packages'
        running totals; report each mismatch (there should be none)."""
        sums = await self.repo.ledger_sums()
        packages = await self.repo.package_sums()
        accounts = {doc["_id"]: {f: int(doc.get(f, 0)) for f in BALANCE_FIELDS} for doc in await self.repo.all_accounts()}
        mismatches = []
        for issuer_id in sorted(set(sums) | set(accounts) | set(packages)):
            derived = from_sums(sums.get(issuer_id, {}))
            running = accounts.get(issuer_id, dict.fromkeys(BALANCE_FIELDS, 0))
            per_package = packages.get(issuer_id, dict.fromkeys(BALANCE_FIELDS, 0))
            problems = {}
            if diff := mismatch(derived, running):
                problems["account"] = diff
            if diff := mismatch(derived, per_package):
                problems["packages"] = diff
            if not balanced(derived):
                problems["ledger"] = "available + reserved + consumed + expired != granted"
            if any(v < 0 for v in running.values()):
                problems["negative"] = running
            if problems:
                mismatches.append({"issuer_id": issuer_id, "ledger": derived, "account": running, "packages": per_package, "problems": problems})
        return {"ok": not mismatches, "accounts_checked": len(set(sums) | set(accounts)), "mismatches": mismatches, "checked_at": utcnow().isoformat()}
