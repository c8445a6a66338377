"""Use cases of billing: the credit gate on the pipeline, and grants."""

from datetime import timedelta

from timbra_billing.adapters.repository import CreditRepository
from timbra_billing.domain.ledger import NO_CREDITS_CODE, NO_CREDITS_MESSAGE, Entry
from timbra_shared.events import ErrorDetail, InvoiceFunded, InvoiceRejected, InvoiceSealed, InvoiceStamped, InvoiceStampFailed
from timbra_shared.ids import new_id, utcnow
from timbra_shared.mongo import Store, Transaction


class CreditGate:
    def __init__(self, *, store: Store, repo: CreditRepository) -> None:
        self.store = store
        self.repo = repo

    async def reserve(self, event: InvoiceSealed) -> None:
        async def work(tx: Transaction) -> None:
            if await self.repo.reservation(event.invoice_id, session=tx.session):
                return
            reserved = await self.repo.record(
                tx.session, event.issuer_id, Entry.RESERVE, 1,
                reason="stamp", actor="pipeline", invoice_id=event.invoice_id,
                guard={"available": {"$gte": 1}},
            )
            if not reserved:
                tx.emit(InvoiceRejected(
                    invoice_id=event.invoice_id, issuer_id=event.issuer_id, stage="sealed", service="billing",
                    message=NO_CREDITS_MESSAGE, errors=[ErrorDetail(code=NO_CREDITS_CODE, message=NO_CREDITS_MESSAGE)],
                ))
                return
            reservation_id = new_id("res_")
            await self.repo.insert_reservation(
                {"_id": event.invoice_id, "reservation_id": reservation_id, "issuer_id": event.issuer_id, "state": "reserved", "at": utcnow()},
                session=tx.session,
            )
            tx.emit(InvoiceFunded(invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=event.summary, xml=event.xml, reservation_id=reservation_id))

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")

    async def commit(self, event: InvoiceStamped) -> None:
        await self._settle(event.event_type, event.invoice_id, event.issuer_id, "committed", Entry.COMMIT)

    async def release(self, event: InvoiceStampFailed) -> None:
        await self._settle(event.event_type, event.invoice_id, event.issuer_id, "released", Entry.RELEASE)

    async def _settle(self, event_type: str, invoice_id: str, issuer_id: str, state: str, entry: Entry) -> None:
        async def work(tx: Transaction) -> None:
            if await self.repo.settle(invoice_id, state, session=tx.session):
                await self.repo.record(tx.session, issuer_id, entry, 1, reason=state, actor="pipeline", invoice_id=invoice_id)

        await self.store.transact(work, dedupe=f"{event_type}:{invoice_id}")

    async def grant(self, issuer_id: str, stamps: int, months: int, actor: str) -> dict[str, int]:
        expires_at = utcnow() + timedelta(days=30 * months)

        async def work(tx: Transaction) -> None:
            await self.repo.record(tx.session, issuer_id, Entry.GRANT, stamps, reason=f"paquete {stamps} timbres / {months} meses", actor=actor, expires_at=expires_at)

        await self.store.transact(work)
        return await self.repo.balance(issuer_id)
