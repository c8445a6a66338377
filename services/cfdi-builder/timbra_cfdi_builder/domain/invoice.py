"""The invoice's status machine, as the issuer sees it."""

from enum import StrEnum

from timbra_shared import topics


class InvoiceStatus(StrEnum):
    REQUESTED = "requested"
    BUILT = "built"
    SEALED = "sealed"
    FUNDED = "funded"
    STAMPED = "stamped"
    RENDERED = "rendered"
    EMAILED = "emailed"
    REJECTED = "rejected"
    STAMP_FAILED = "stamp_failed"
    CANCELED = "canceled"


FINAL = frozenset({InvoiceStatus.EMAILED, InvoiceStatus.REJECTED, InvoiceStatus.STAMP_FAILED, InvoiceStatus.CANCELED})

# A later step outranks an earlier one, so events that arrive out of order never move an invoice back.
RANK: dict[str, int] = {
    InvoiceStatus.REQUESTED: 0,
    InvoiceStatus.BUILT: 1,
    InvoiceStatus.SEALED: 2,
    InvoiceStatus.FUNDED: 3,
    InvoiceStatus.STAMPED: 4,
    InvoiceStatus.RENDERED: 5,
    InvoiceStatus.EMAILED: 6,
    InvoiceStatus.REJECTED: 100,
    InvoiceStatus.STAMP_FAILED: 100,
    InvoiceStatus.CANCELED: 200,
}

STATUS_OF_TOPIC: dict[str, InvoiceStatus] = {
    topics.INVOICE_BUILT: InvoiceStatus.BUILT,
    topics.INVOICE_SEALED: InvoiceStatus.SEALED,
    topics.INVOICE_FUNDED: InvoiceStatus.FUNDED,
    topics.INVOICE_REJECTED: InvoiceStatus.REJECTED,
    topics.INVOICE_STAMPED: InvoiceStatus.STAMPED,
    topics.INVOICE_STAMP_FAILED: InvoiceStatus.STAMP_FAILED,
    topics.INVOICE_RENDERED: InvoiceStatus.RENDERED,
    topics.INVOICE_EMAILED: InvoiceStatus.EMAILED,
}

SERVICE_OF_STATUS: dict[str, str] = {
    InvoiceStatus.REQUESTED: "cfdi-builder",
    InvoiceStatus.BUILT: "cfdi-builder",
    InvoiceStatus.SEALED: "issuer-profile",
    InvoiceStatus.FUNDED: "billing",
    InvoiceStatus.STAMPED: "stamping",
    InvoiceStatus.STAMP_FAILED: "stamping",
    InvoiceStatus.RENDERED: "notifier",
    InvoiceStatus.EMAILED: "notifier",
}

IN_FLIGHT = [s.value for s in InvoiceStatus if s not in FINAL]
