"""Use cases of the catalog service. On the invoice pipeline it remembers each customer's last
Uso CFDI (seed 000: the chosen use becomes the customer's default) and marks tickets invoiced."""

from timbra_shared.events import InvoiceStamped
from timbra_shared.ids import utcnow
from timbra_shared.mongo import Store, Transaction


class CatalogService:
    def __init__(self, *, store: Store) -> None:
        self.store = store
        self.db = store.db

    async def on_stamped(self, event: InvoiceStamped) -> None:
        summary = event.summary

        async def work(tx: Transaction) -> None:
            await self.db.receptor_usage.update_one(
                {"_id": f"{event.issuer_id}:{summary.rfc_receptor}"},
                {"$set": {"issuer_id": event.issuer_id, "rfc": summary.rfc_receptor, "last_use": summary.use, "last_invoice_id": event.invoice_id, "at": utcnow()}, "$inc": {"invoices": 1}},
                upsert=True,
                session=tx.session,
            )
            if summary.customer_id:
                await self.db.customers.update_one({"_id": summary.customer_id, "issuer_id": event.issuer_id}, {"$set": {"default_use": summary.use}}, session=tx.session)
            if summary.ticket_id:
                await self.db.tickets.update_one({"_id": summary.ticket_id, "issuer_id": event.issuer_id}, {"$set": {"status": "invoiced", "invoice_id": event.invoice_id}}, session=tx.session)

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")
