"""The gauges behind the low-credit and CSD-expiry alerts (deploy/prometheus/alerts.yml): their
queries against the real mongod (a scratch database each), and both services exporting them."""

from datetime import timedelta

import httpx
import pytest

from timbra_billing.adapters.repository import CreditRepository
from timbra_issuer_profile.adapters.repository import IssuerRepository
from timbra_shared.ids import new_id, utcnow
from timbra_shared.mongo import make_client

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_credit_levels_count_accounts_below_their_threshold_and_at_zero(platform) -> None:
    mongo = make_client(platform.mongodb_url)
    db = mongo[f"scratch_{new_id()}"]
    try:
        await db.accounts.insert_many([
            {"_id": "a", "granted": 100, "available": 50},                        # fine
            {"_id": "b", "granted": 100, "available": 9},                         # below the default 10
            {"_id": "c", "granted": 100, "available": 0},                         # empty (and low)
            {"_id": "d", "granted": 100, "available": 30, "alert_threshold": 40},  # below its own threshold
            {"_id": "e", "granted": 0, "available": 0},                           # never funded: not counted
        ])
        assert await CreditRepository(db).credit_levels(10) == {"low": 3, "empty": 1}
    finally:
        await mongo.drop_database(db.name)
        await mongo.close()


async def test_csd_expiry_counts_follow_the_longest_lasting_certificate(platform) -> None:
    mongo = make_client(platform.mongodb_url)
    db = mongo[f"scratch_{new_id()}"]
    now = utcnow()
    old = now - timedelta(days=700)
    try:
        await db.csds.insert_many([
            {"issuer_id": "renewed", "valid_from": old, "valid_to": now + timedelta(days=3)},
            {"issuer_id": "renewed", "valid_from": old, "valid_to": now + timedelta(days=900)},  # the renewal counts
            {"issuer_id": "soon", "valid_from": old, "valid_to": now + timedelta(days=5)},
            {"issuer_id": "month", "valid_from": old, "valid_to": now + timedelta(days=20)},
            {"issuer_id": "gone", "valid_from": old, "valid_to": now - timedelta(days=1)},
            {"issuer_id": "disabled", "valid_from": old, "valid_to": now + timedelta(days=900), "disabled_at": now},
            {"issuer_id": "disabled", "valid_from": old, "valid_to": now + timedelta(days=2)},
        ])
        assert await IssuerRepository(db).csd_expiry_counts(now) == {"expired": 1, "30d": 3, "7d": 2}
    finally:
        await mongo.drop_database(db.name)
        await mongo.close()


async def test_both_services_export_the_gauges(platform) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        billing = (await http.get(platform.url("billing") + "/metrics")).text
        profile = (await http.get(platform.url("issuer-profile") + "/metrics")).text
    assert 'timbra_credit_accounts{level="low"}' in billing and 'timbra_credit_accounts{level="empty"}' in billing
    assert all(f'timbra_csd_expiring{{within="{w}"}}' in profile for w in ("expired", "7d", "30d"))
