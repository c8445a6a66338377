"""Use case of the stamping service: stamp a funded invoice exactly once."""

from prometheus_client import CollectorRegistry, Counter, Histogram

from timbra_shared.errors import RetryLater
from timbra_shared.events import ErrorDetail, InvoiceFunded, InvoiceStamped, InvoiceStampFailed
from timbra_shared.ids import utcnow
from timbra_shared.logging import get_logger
from timbra_shared.mongo import Store, Transaction
from timbra_stamping.adapters.repository import StampRepository
from timbra_stamping.domain.pac import PacClient, PacRejected, PacUnavailable

log = get_logger(__name__)


class StampingService:
    def __init__(self, *, store: Store, repo: StampRepository, pac: PacClient, registry: CollectorRegistry) -> None:
        self.store = store
        self.repo = repo
        self.pac = pac
        self.stamped = Counter("timbra_stamps_total", "Stamp outcomes", ["outcome"], registry=registry)
        self.latency = Histogram("timbra_pac_stamp_seconds", "PAC stamp call latency", registry=registry)

    async def stamp(self, event: InvoiceFunded) -> None:
        if await self.store.was_processed(f"{event.event_type}:{event.invoice_id}") or await self.repo.get(event.invoice_id):
            return
        try:
            with self.latency.time():
                result = await self.pac.stamp(event.xml.encode(), idempotency_id=event.invoice_id)
        except PacUnavailable as exc:
            self.stamped.labels("retry").inc()
            raise RetryLater(str(exc)) from exc
        except PacRejected as rejected:
            self.stamped.labels("rejected").inc()

            async def fail(tx: Transaction) -> None:
                tx.emit(InvoiceStampFailed(
                    invoice_id=event.invoice_id, issuer_id=event.issuer_id, message=rejected.message,
                    errors=[ErrorDetail(code=rejected.code, message=rejected.message, source="pac")],
                ))

            await self.store.transact(fail, dedupe=f"{event.event_type}:{event.invoice_id}")
            return
        self.stamped.labels("recovered" if result.previous else "stamped").inc()

        async def record(tx: Transaction) -> None:
            await self.repo.insert({
                "_id": event.invoice_id,
                "issuer_id": event.issuer_id,
                "uuid": result.uuid,
                "xml": result.xml,
                "fecha_timbrado": result.fecha_timbrado,
                "pac": self.pac.name,
                "recovered_previous": result.previous,
                "stamped_at": utcnow(),
            }, session=tx.session)
            tx.emit(InvoiceStamped(
                invoice_id=event.invoice_id, issuer_id=event.issuer_id, summary=event.summary,
                uuid=result.uuid, fecha_timbrado=result.fecha_timbrado, xml=result.xml.decode(), pac=self.pac.name,
            ))

        await self.store.transact(record, dedupe=f"{event.event_type}:{event.invoice_id}")
