"""Use cases of the cancellation service. On the invoice pipeline it keeps what it will need to
decide eligibility later (type, total, receptor, issue and stamp dates), without calling anyone."""

from timbra_shared.events import InvoiceStamped
from timbra_shared.ids import utcnow
from timbra_shared.mongo import Store, Transaction


class CancellationService:
    def __init__(self, *, store: Store) -> None:
        self.store = store
        self.db = store.db

    async def on_stamped(self, event: InvoiceStamped) -> None:
        summary = event.summary

        async def work(tx: Transaction) -> None:
            await self.db.cancellable.replace_one(
                {"_id": event.invoice_id},
                {
                    "_id": event.invoice_id,
                    "issuer_id": event.issuer_id,
                    "uuid": event.uuid,
                    "type": summary.type,
                    "total": str(summary.total),
                    "currency": summary.currency,
                    "rfc_emisor": summary.rfc_emisor,
                    "rfc_receptor": summary.rfc_receptor,
                    "fecha": summary.fecha,
                    "fecha_timbrado": event.fecha_timbrado,
                    "status": "vigente",
                    "projected_at": utcnow(),
                },
                upsert=True,
                session=tx.session,
            )

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")
