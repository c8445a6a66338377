"""Event and command contracts (pydantic v2). One model per topic.

Every message carries the envelope: ``event_id``, ``invoice_id`` (also the Kafka key),
``issuer_id``, ``occurred_at`` and ``schema_version``. Consumers are idempotent on
``invoice_id`` + ``event_type``.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from timbra_shared import topics
from timbra_shared.ids import new_id, utcnow

SCHEMA_VERSION = 1

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Money = Annotated[Decimal, Field(ge=0, max_digits=24, decimal_places=6)]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")


# --------------------------------------------------------------------------- request

class TaxIn(Contract):
    type: Literal["IVA", "ISR", "IEPS"]
    rate: Decimal | None = Field(default=None, ge=0, le=100, description="TasaOCuota; for factor Cuota it is the amount per unit")
    factor: Literal["Tasa", "Cuota", "Exento"] = "Tasa"
    withholding: bool = False


class ProductIn(Contract):
    description: NonEmpty
    product_key: Annotated[str, StringConstraints(pattern=r"^\d{8}$")]
    unit_key: NonEmpty
    unit_name: str | None = None
    sku: str | None = None
    price: Money
    tax_included: bool = False
    taxability: Literal["01", "02", "03", "04", "05"] = "02"
    taxes: list[TaxIn] = Field(default_factory=lambda: [TaxIn(type="IVA", rate=Decimal("0.16"))])


class ItemIn(Contract):
    product_id: str | None = None
    product: ProductIn | None = None
    quantity: Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=6)] = Decimal(1)
    discount: Money = Decimal(0)


class CustomerIn(Contract):
    rfc: NonEmpty
    legal_name: NonEmpty
    tax_regime: NonEmpty
    zip: NonEmpty
    use: str | None = None
    email: str | None = None
    emails: list[str] = Field(default_factory=list)
    tax_id: str | None = Field(default=None, description="NumRegIdTrib, foreign customers")
    tax_residence: str | None = Field(default=None, description="ResidenciaFiscal (c_Pais), foreign customers")


class GlobalInfoIn(Contract):
    periodicity: Literal["01", "02", "03", "04", "05"]
    months: Annotated[str, StringConstraints(pattern=r"^(0[1-9]|1[0-8])$")]
    year: int = Field(ge=2021, le=2100)


class RelatedIn(Contract):
    relationship: Annotated[str, StringConstraints(pattern=r"^\d{2}$")]
    uuids: list[str] = Field(min_length=1)


class PaymentDocumentIn(Contract):
    """A DoctoRelacionado of Pagos 2.0: the PPD invoice this payment (partly) settles."""

    uuid: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")] = Field(description="IdDocumento")
    serie: str | None = None
    folio: str | None = None
    currency: str = Field(default="MXN", description="MonedaDR")
    exchange: Decimal | None = Field(default=None, gt=0, description="EquivalenciaDR, when MonedaDR differs from the payment's currency")
    installment: int = Field(ge=1, le=999, description="NumParcialidad")
    previous_balance: Money = Field(description="ImpSaldoAnt")
    amount_paid: Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=6)] = Field(description="ImpPagado")
    taxability: Literal["01", "02", "03", "04", "05"] = Field(default="02", description="ObjetoImpDR")
    taxes: list[TaxIn] = Field(default_factory=lambda: [TaxIn(type="IVA", rate=Decimal("0.16"))], description="the document's taxes; with ObjetoImpDR 02 each BaseDR is the paid amount without them")


class PaymentIn(Contract):
    """A Pago of Pagos 2.0 (type P receipts)."""

    date: datetime = Field(description="FechaPago; local time, 12:00 when the exact time is unknown")
    payment_form: Annotated[str, StringConstraints(pattern=r"^\d{2}$")] = Field(description="FormaDePagoP (c_FormaPago, not 99)")
    currency: str = Field(default="MXN", description="MonedaP")
    exchange: Decimal | None = Field(default=None, gt=0, description="TipoCambioP")
    amount: Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=6)] = Field(description="Monto")
    operation_number: str | None = Field(default=None, max_length=100, description="NumOperacion")
    related_documents: list[PaymentDocumentIn] = Field(min_length=1, max_length=500)


class InvoiceRequest(Contract):
    """The public request shape (HTTP body of ``POST /v1/invoices`` and payload on ``invoice.requested``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["I", "E", "T", "P"] = "I"
    customer_id: str | None = None
    customer: CustomerIn | None = None
    items: list[ItemIn] = Field(default_factory=list, max_length=2000)
    payment_form: str | None = None
    payment_method: Literal["PUE", "PPD"] | None = None
    use: str | None = None
    currency: str = "MXN"
    exchange: Decimal | None = None
    series: str | None = None
    conditions: str | None = None
    export: str = "01"
    notes: str | None = None
    related: list[RelatedIn] = Field(default_factory=list)
    global_info: GlobalInfoIn | None = Field(default=None, alias="global")
    emails: list[str] = Field(default_factory=list, max_length=10)
    idempotency_key: str | None = Field(default=None, max_length=200)
    branch_id: str | None = None
    ticket_id: str | None = None
    ticket_ids: list[str] = Field(default_factory=list, max_length=2000, description="store tickets a global invoice covers")
    payments: list[PaymentIn] = Field(default_factory=list, max_length=100, description="type P only: the Pagos 2.0 complement")


# --------------------------------------------------------------------------- envelope

class Envelope(Contract):
    """Newer producers may add fields; older consumers ignore them rather than dead-letter the event."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    topic: ClassVar[str]

    event_id: str = Field(default_factory=new_id)
    event_type: str
    invoice_id: str
    issuer_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION


class ErrorDetail(Contract):
    code: str
    message: str
    source: Literal["timbra", "sat", "pac"] = "timbra"
    path: str | None = None


class InvoiceSummary(Contract):
    """What downstream services need to know about an invoice, carried forward by every step."""

    type: str
    serie: str | None = None
    folio: str | None = None
    fecha: str | None = None
    rfc_emisor: str
    rfc_receptor: str
    nombre_receptor: str
    total: Decimal
    currency: str = "MXN"
    customer_id: str | None = None
    ticket_id: str | None = None
    use: str | None = None
    recipients: list[str] = Field(default_factory=list)


class InvoiceRequested(Envelope):
    topic: ClassVar[str] = topics.INVOICE_REQUESTED
    event_type: Literal[topics.INVOICE_REQUESTED] = topics.INVOICE_REQUESTED
    request: InvoiceRequest
    livemode: bool = False
    source: Literal["http", "kafka"] = "kafka"


class InvoiceRequestSeen(Envelope):
    """``invoice.requested`` as read by the services that only observe it (the notifier's webhooks,
    cancellation's copy of each request). The builder validates requests and rejects an invalid one
    with coded errors (``invoice.rejected``), so an observer reads the envelope leniently and skips
    a request it cannot parse instead of dead-lettering the same message once more."""

    topic: ClassVar[str] = topics.INVOICE_REQUESTED
    event_type: Literal[topics.INVOICE_REQUESTED] = topics.INVOICE_REQUESTED
    request: Any = None
    livemode: Any = False
    source: Any = "kafka"

    def parsed(self) -> InvoiceRequested | None:
        try:
            return InvoiceRequested.model_validate(self.model_dump())
        except ValidationError:
            return None


class InvoiceBuilt(Envelope):
    topic: ClassVar[str] = topics.INVOICE_BUILT
    event_type: Literal[topics.INVOICE_BUILT] = topics.INVOICE_BUILT
    summary: InvoiceSummary
    xml: str


class InvoiceSealed(Envelope):
    topic: ClassVar[str] = topics.INVOICE_SEALED
    event_type: Literal[topics.INVOICE_SEALED] = topics.INVOICE_SEALED
    summary: InvoiceSummary
    xml: str
    no_certificado: str


class InvoiceFunded(Envelope):
    topic: ClassVar[str] = topics.INVOICE_FUNDED
    event_type: Literal[topics.INVOICE_FUNDED] = topics.INVOICE_FUNDED
    summary: InvoiceSummary
    xml: str
    reservation_id: str


class InvoiceRejected(Envelope):
    topic: ClassVar[str] = topics.INVOICE_REJECTED
    event_type: Literal[topics.INVOICE_REJECTED] = topics.INVOICE_REJECTED
    stage: Literal["requested", "built", "sealed"]
    service: str
    message: str
    errors: list[ErrorDetail] = Field(default_factory=list)


class InvoiceStamped(Envelope):
    topic: ClassVar[str] = topics.INVOICE_STAMPED
    event_type: Literal[topics.INVOICE_STAMPED] = topics.INVOICE_STAMPED
    summary: InvoiceSummary
    uuid: str
    fecha_timbrado: str
    xml: str
    pac: str


class InvoiceStampFailed(Envelope):
    topic: ClassVar[str] = topics.INVOICE_STAMP_FAILED
    event_type: Literal[topics.INVOICE_STAMP_FAILED] = topics.INVOICE_STAMP_FAILED
    message: str
    errors: list[ErrorDetail] = Field(default_factory=list)


class InvoiceRendered(Envelope):
    topic: ClassVar[str] = topics.INVOICE_RENDERED
    event_type: Literal[topics.INVOICE_RENDERED] = topics.INVOICE_RENDERED
    summary: InvoiceSummary
    uuid: str
    pdf_bytes: int


class InvoiceEmailed(Envelope):
    topic: ClassVar[str] = topics.INVOICE_EMAILED
    event_type: Literal[topics.INVOICE_EMAILED] = topics.INVOICE_EMAILED
    recipients: list[str]
    message_id: str | None = None
    skipped_reason: str | None = None


class RedriveInvoice(Envelope):
    """Command from the sweeper: every service re-publishes what it has already emitted for this invoice."""

    topic: ClassVar[str] = topics.INVOICE_REDRIVE
    event_type: Literal[topics.INVOICE_REDRIVE] = topics.INVOICE_REDRIVE
    stuck_status: str
    attempt: int = 1


class IssuerProfileChanged(Contract):
    """The public part of an issuer's profile, projected by the services that need it (keyed by issuer_id)."""

    topic: ClassVar[str] = topics.ISSUER_PROFILE

    event_id: str = Field(default_factory=new_id)
    event_type: Literal["issuer.profile"] = "issuer.profile"
    issuer_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION
    version: int
    rfc: str
    legal_name: str
    tax_regime: str
    zip: str
    email: str | None = None
    slug: str
    enabled_types: list[str] = Field(default_factory=lambda: ["I", "E", "T", "P"])
    series: dict[str, str] = Field(default_factory=dict)
    phone: str | None = None
    fiscal_address: dict[str, str | None] | None = None
    issuing_address: dict[str, str | None] | None = Field(default=None, description="where invoices are issued (LugarExpedicion's address)")
    logo_id: str | None = Field(default=None, description="changes whenever the logo changes")
    logo_url: str | None = Field(default=None, description="issuer-profile path; GET it with the x-timbra-internal header")
    logo_placement: Literal["left", "center", "right"] | None = None
    smtp_configured: bool = Field(default=False, description="the issuer's own SMTP settings exist (GET /internal/v1/issuers/{id}/smtp)")
    pdf_rendering: Literal["eager", "on_demand"] | None = Field(default=None, description="PDF on invoice.stamped (eager) or on first download/email (on_demand); None: the notifier's TIMBRA_PDF_RENDERING")


class CatalogChange(Contract):
    """The latest state of a catalog entity (keyed by ``id``; a higher ``version`` wins). The
    cfdi-builder projects these so that building never calls the catalog service."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    topic: ClassVar[str]

    event_id: str = Field(default_factory=new_id)
    issuer_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION
    id: str
    version: int
    deleted: bool = False


class CustomerChanged(CatalogChange):
    topic: ClassVar[str] = topics.CATALOG_CUSTOMERS
    event_type: Literal["catalog.customer"] = "catalog.customer"
    rfc: str
    legal_name: str
    tax_regime: str
    zip: str | None = None
    default_use: str | None = None
    emails: list[str] = Field(default_factory=list)
    tax_id: str | None = None
    tax_residence: str | None = None


class ProductChanged(CatalogChange):
    topic: ClassVar[str] = topics.CATALOG_PRODUCTS
    event_type: Literal["catalog.product"] = "catalog.product"
    product: ProductIn


class TicketChanged(CatalogChange):
    topic: ClassVar[str] = topics.CATALOG_TICKETS
    event_type: Literal["catalog.ticket"] = "catalog.ticket"
    branch_id: str
    order_number: str | None = None
    ticket_number: str
    date: datetime
    total: Decimal
    payment_form: str | None = None
    items: list[ItemIn] = Field(default_factory=list)
    status: Literal["open", "pending", "invoiced"] = "open"
    invoice_id: str | None = None
    invoiceable_until: datetime | None = None


class TicketIn(Contract):
    """A store ticket as a point-of-sale system sends it (HTTP body of ``POST /v1/tickets`` too)."""

    branch_id: NonEmpty
    order_number: str | None = Field(default=None, max_length=100)
    ticket_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    date: datetime
    total: Money
    payment_form: str | None = None
    items: list[ItemIn] = Field(min_length=1, max_length=2000)


class TicketSubmitted(Contract):
    """A point-of-sale system pushes a ticket onto ``pos.tickets`` (keyed by issuer_id)."""

    topic: ClassVar[str] = topics.POS_TICKETS

    event_id: str = Field(default_factory=new_id)
    event_type: Literal["pos.ticket"] = "pos.ticket"
    issuer_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION
    ticket: TicketIn


class NotificationRequested(Contract):
    """Ask the notifier to email someone (CSD expiry, low credits, payment confirmations, portal
    password recovery…). Delivered once per ``event_id``; ``kind`` lets issuers filter and lets
    templates be customised later. The text is final Spanish copy written by the emitting service."""

    topic: ClassVar[str] = topics.NOTIFICATION_REQUESTED

    event_id: str = Field(default_factory=new_id)
    event_type: Literal["notification.requested"] = "notification.requested"
    issuer_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION
    kind: str
    to: list[str] = Field(min_length=1, max_length=10)
    subject: str
    body: str
    attachments: list[dict[str, str]] = Field(default_factory=list, description="[{filename, content_type, base64}]")


class DeadLetter(Contract):
    topic: ClassVar[str] = topics.DEAD_LETTER

    event_id: str = Field(default_factory=new_id)
    event_type: Literal["dead_letter"] = "dead_letter"
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION
    service: str
    original_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    reason: str
    error_type: str
    payload: str
    headers: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- cancellation

Motive = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10)]


class CancelInvoice(Envelope):
    """Command on ``cancellation.requested`` (what ``DELETE /v1/invoices/{id}`` does): cancel the
    stamped invoice with SAT's ``motive`` (01–04); ``substitution`` (invoice id or UUID) only with 01.
    A command that fails Timbra's checks is answered with ``cancellation.rejected``."""

    topic: ClassVar[str] = topics.CANCELLATION_REQUESTED
    event_type: Literal[topics.CANCELLATION_REQUESTED] = topics.CANCELLATION_REQUESTED
    motive: Motive
    substitution: str | None = Field(default=None, max_length=100)


class SatCancellationStatus(Contract):
    """SAT's ConsultaCFDIService answer at the time of the event."""

    estado: str = ""
    es_cancelable: str = ""
    estatus_cancelacion: str = ""


class CancellationChange(Envelope):
    """Common shape of the cancellation events (keyed by invoice_id). ``attempt`` counts the
    cancellation requests of this invoice (a new one may follow a rejection)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    uuid: str
    motive: str
    substitution_uuid: str | None = None
    substitution_invoice_id: str | None = None
    attempt: int = 1
    cancellation_status: str
    sat: SatCancellationStatus = Field(default_factory=SatCancellationStatus)


class CancellationPending(CancellationChange):
    """SAT received the request and it waits for the receptor ("En proceso")."""

    topic: ClassVar[str] = topics.CANCELLATION_PENDING
    event_type: Literal[topics.CANCELLATION_PENDING] = topics.CANCELLATION_PENDING
    cancellation_status: Literal["pending"] = "pending"
    respond_by: datetime | None = Field(default=None, description="end of the receptor's 3 business days (SAT's calendar)")


class CancellationAccepted(CancellationChange):
    """The receptor accepted, or stayed silent past the deadline (``by: plazo_vencido``)."""

    topic: ClassVar[str] = topics.CANCELLATION_ACCEPTED
    event_type: Literal[topics.CANCELLATION_ACCEPTED] = topics.CANCELLATION_ACCEPTED
    cancellation_status: Literal["accepted"] = "accepted"
    by: Literal["receptor", "plazo_vencido"]


class CancellationRejected(CancellationChange):
    """The request failed: Timbra's checks (``by: timbra``), SAT or the PAC (``sat``, ``pac``), or
    the receptor rejected it (``receptor``). The invoice stays in force."""

    topic: ClassVar[str] = topics.CANCELLATION_REJECTED
    event_type: Literal[topics.CANCELLATION_REJECTED] = topics.CANCELLATION_REJECTED
    cancellation_status: Literal["rejected"] = "rejected"
    by: Literal["timbra", "sat", "pac", "receptor"]
    message: str
    errors: list[ErrorDetail] = Field(default_factory=list)


class CancellationCompleted(CancellationChange):
    """SAT shows the CFDI as Cancelado (final)."""

    topic: ClassVar[str] = topics.CANCELLATION_COMPLETED
    event_type: Literal[topics.CANCELLATION_COMPLETED] = topics.CANCELLATION_COMPLETED
    cancellation_status: Literal["completed"] = "completed"
    acceptance: Literal["sin_aceptacion", "con_aceptacion", "plazo_vencido"]
    acuse_url: str | None = None


class CancellationEscalated(CancellationChange):
    """SAT reported a state Timbra does not know (or none final in time): polling stopped, an
    operator decides (``timbra-cancellation escalated``)."""

    topic: ClassVar[str] = topics.CANCELLATION_ESCALATED
    event_type: Literal[topics.CANCELLATION_ESCALATED] = topics.CANCELLATION_ESCALATED
    cancellation_status: Literal["escalated"] = "escalated"
    reason: str


CancellationEvent = Annotated[
    Union[CancellationPending, CancellationAccepted, CancellationRejected, CancellationCompleted],  # noqa: UP007
    Field(discriminator="event_type"),
]


PIPELINE_EVENTS: dict[str, type[Envelope]] = {
    cls.topic: cls
    for cls in (
        InvoiceRequested,
        InvoiceBuilt,
        InvoiceSealed,
        InvoiceFunded,
        InvoiceRejected,
        InvoiceStamped,
        InvoiceStampFailed,
        InvoiceRendered,
        InvoiceEmailed,
    )
}


StatusEvent = Annotated[
    Union[InvoiceBuilt, InvoiceSealed, InvoiceFunded, InvoiceRejected, InvoiceStamped, InvoiceStampFailed, InvoiceRendered, InvoiceEmailed],  # noqa: UP007
    Field(discriminator="event_type"),
]
