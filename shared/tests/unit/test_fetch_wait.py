"""Consumers of background topics only (profiles, catalogs, cancellations, redrives…) fetch less
often than the pipeline's; a subscriber with any pipeline topic keeps the short wait."""

from timbra_shared import messaging, topics


def test_background_topics_get_the_longer_wait_and_pipeline_topics_the_short_one() -> None:
    assert messaging.BACKGROUND_FETCH_WAIT_MS > messaging.FETCH_WAIT_MS
    assert messaging.fetch_wait_ms((topics.ISSUER_PROFILE,)) == messaging.BACKGROUND_FETCH_WAIT_MS
    assert messaging.fetch_wait_ms(tuple(topics.CANCELLATION_EVENT_TOPICS)) == messaging.BACKGROUND_FETCH_WAIT_MS
    assert messaging.fetch_wait_ms((topics.INVOICE_REDRIVE,)) == messaging.BACKGROUND_FETCH_WAIT_MS
    for topic in topics.PIPELINE_TOPICS:
        assert messaging.fetch_wait_ms((topic,)) == messaging.FETCH_WAIT_MS
    assert messaging.fetch_wait_ms((topics.INVOICE_REQUESTED, *topics.CANCELLATION_EVENT_TOPICS)) == messaging.FETCH_WAIT_MS
    assert messaging.fetch_wait_ms((topics.POS_TICKETS,)) == messaging.FETCH_WAIT_MS  # a ticket may be invoiced right away
    assert messaging.fetch_wait_ms((topics.CATALOG_PRODUCTS,)) == messaging.FETCH_WAIT_MS  # an edited price is invoiced right away
    assert messaging.fetch_wait_ms((topics.ISSUER_PROFILE,), background=False) == messaging.FETCH_WAIT_MS
    assert messaging.fetch_wait_ms((topics.INVOICE_STAMPED,), background=True) == messaging.BACKGROUND_FETCH_WAIT_MS
