"""Kafka topic names. Every pipeline topic is keyed by ``invoice_id``."""

import os

INVOICE_REQUESTED = "invoice.requested"
INVOICE_BUILT = "invoice.built"
INVOICE_SEALED = "invoice.sealed"
INVOICE_FUNDED = "invoice.funded"
INVOICE_REJECTED = "invoice.rejected"
INVOICE_STAMPED = "invoice.stamped"
INVOICE_STAMP_FAILED = "invoice.stamp_failed"
INVOICE_RENDERED = "invoice.rendered"
INVOICE_EMAILED = "invoice.emailed"
INVOICE_REDRIVE = "invoice.redrive"

CANCELLATION_REQUESTED = "cancellation.requested"
CANCELLATION_PENDING = "cancellation.pending"
CANCELLATION_ACCEPTED = "cancellation.accepted"
CANCELLATION_REJECTED = "cancellation.rejected"
CANCELLATION_COMPLETED = "cancellation.completed"
# A cancellation SAT answered with a state Timbra does not know, or that never reached a final
# state: an operator decides (also published on timbra.dead_letter).
CANCELLATION_ESCALATED = "cancellation.escalated"
CANCELLATION_EVENT_TOPICS = (CANCELLATION_PENDING, CANCELLATION_ACCEPTED, CANCELLATION_REJECTED, CANCELLATION_COMPLETED)

ISSUER_PROFILE = "issuer.profile"  # keyed by issuer_id; the latest profile state wins
NOTIFICATION_REQUESTED = "notification.requested"  # keyed by issuer_id: emails other than invoices

# Catalog state for the builder's projection: keyed by the entity id, the latest state wins.
CATALOG_CUSTOMERS = "catalog.customers"
CATALOG_PRODUCTS = "catalog.products"
CATALOG_TICKETS = "catalog.tickets"
POS_TICKETS = "pos.tickets"  # keyed by issuer_id: store tickets pushed by a point-of-sale system

DEAD_LETTER = "timbra.dead_letter"
# The header an operator's replay of a dead letter carries (its id): a consumer that would
# otherwise take the message for a repeat of one it already settled knows it was asked again.
REPLAY_OF_HEADER = "timbra-replay-of"

# Topics whose consumers can wait longer for records: issuer profiles (except where they shape
# the next invoice: the builder's projection opts out), cancellations (SAT itself answers in
# seconds), emails other than invoices, redrives and dead letters. Their consumers fetch with
# TIMBRA_KAFKA_BACKGROUND_FETCH_WAIT_MS (messaging.py). The catalog topics are not among them: an
# API client that edits a product and then invoices it expects the new price.
BACKGROUND_TOPICS = frozenset({
    ISSUER_PROFILE, NOTIFICATION_REQUESTED, DEAD_LETTER, INVOICE_REDRIVE,
    CANCELLATION_REQUESTED, *CANCELLATION_EVENT_TOPICS, CANCELLATION_ESCALATED,
})

PIPELINE_TOPICS = (
    INVOICE_REQUESTED,
    INVOICE_BUILT,
    INVOICE_SEALED,
    INVOICE_FUNDED,
    INVOICE_REJECTED,
    INVOICE_STAMPED,
    INVOICE_STAMP_FAILED,
    INVOICE_RENDERED,
    INVOICE_EMAILED,
)

STATUS_TOPICS = PIPELINE_TOPICS[1:]

# The happy path in order; an invoice stuck at a status needs the event that produced that status
# (or a later one) delivered again, never the earlier ones.
HAPPY_PATH = (
    ("requested", INVOICE_REQUESTED),
    ("built", INVOICE_BUILT),
    ("sealed", INVOICE_SEALED),
    ("funded", INVOICE_FUNDED),
    ("stamped", INVOICE_STAMPED),
    ("rendered", INVOICE_RENDERED),
    ("emailed", INVOICE_EMAILED),
)


def redrive_topics(stuck_status: str) -> frozenset[str]:
    """The topics whose events a redrive of an invoice stuck at ``stuck_status`` republishes."""
    statuses = [status for status, _ in HAPPY_PATH]
    start = statuses.index(stuck_status) if stuck_status in statuses else 0
    return frozenset(topic for _, topic in HAPPY_PATH[start:])

DEFAULT_PARTITIONS = 6


def _partitions() -> int:
    return int(os.environ.get("TIMBRA_PARTITIONS", DEFAULT_PARTITIONS))


ALL_TOPICS: dict[str, int] = {
    name: _partitions()
    for name in (
        *PIPELINE_TOPICS,
        INVOICE_REDRIVE,
        CANCELLATION_REQUESTED,
        CANCELLATION_PENDING,
        CANCELLATION_ACCEPTED,
        CANCELLATION_REJECTED,
        CANCELLATION_COMPLETED,
        CANCELLATION_ESCALATED,
        ISSUER_PROFILE,
        NOTIFICATION_REQUESTED,
        CATALOG_CUSTOMERS,
        CATALOG_PRODUCTS,
        CATALOG_TICKETS,
        POS_TICKETS,
        DEAD_LETTER,
    )
}
