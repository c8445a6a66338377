"""Signed principal tokens (ingress → services) and API-key hashing."""

import base64
import hashlib
import json
import time

import pytest

from timbra_shared import auth
from timbra_shared.auth import Principal, hash_api_key, sign_token, verify_token

SECRET = "internal-secret-for-tests"
ISSUER = Principal(kind="issuer", issuer_id="iss_1", roles=("invoices", "billing"), livemode=True, key_id="key_1")


def _split(token: str) -> tuple[dict, str, str]:
    body, mac = token.split(".", 1)
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims, body, mac


def _encode(claims: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()


def test_round_trip_keeps_every_field():
    token = sign_token(ISSUER, SECRET)
    assert verify_token(token, SECRET) == ISSUER


@pytest.mark.parametrize(
    "principal",
    [Principal(kind="admin"), Principal(kind="staff", roles=("support",)), Principal(kind="issuer", issuer_id="iss_9")],
)
def test_round_trip_for_every_kind(principal):
    assert verify_token(sign_token(principal, SECRET), SECRET) == principal


def test_roles_come_back_as_a_tuple_so_the_principal_stays_hashable():
    principal = verify_token(sign_token(ISSUER, SECRET), SECRET)
    assert isinstance(principal.roles, tuple)
    hash(principal)


def test_token_is_url_safe_and_carries_an_expiry():
    token = sign_token(ISSUER, SECRET, ttl=120)
    assert "=" not in token and "+" not in token and "/" not in token
    claims, _, _ = _split(token)
    assert time.time() + 100 < claims["exp"] <= time.time() + 121


def test_wrong_secret_is_refused():
    assert verify_token(sign_token(ISSUER, SECRET), "another-secret") is None


def test_escalating_the_claims_without_resigning_is_refused():
    token = sign_token(ISSUER, SECRET)
    claims, _, mac = _split(token)
    forged = _encode({**claims, "kind": "admin"}) + "." + mac
    assert verify_token(forged, SECRET) is None


def test_tampering_with_the_issuer_is_refused():
    token = sign_token(ISSUER, SECRET)
    claims, _, mac = _split(token)
    assert verify_token(_encode({**claims, "issuer_id": "iss_2"}) + "." + mac, SECRET) is None


def test_flipping_a_mac_character_is_refused():
    token = sign_token(ISSUER, SECRET)
    body, mac = token.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert verify_token(f"{body}.{flipped}", SECRET) is None


def test_expired_token_is_refused():
    assert verify_token(sign_token(ISSUER, SECRET, ttl=-1), SECRET) is None


def test_token_expires_after_its_ttl(monkeypatch):
    token = sign_token(ISSUER, SECRET, ttl=300)
    now = time.time()
    monkeypatch.setattr(auth.time, "time", lambda: now + 299)
    assert verify_token(token, SECRET) == ISSUER
    monkeypatch.setattr(auth.time, "time", lambda: now + 302)
    assert verify_token(token, SECRET) is None


def test_a_correctly_signed_token_without_expiry_is_refused():
    body = _encode({"kind": "admin", "issuer_id": None, "roles": [], "livemode": False, "key_id": None})
    mac = base64.urlsafe_b64encode(__import__("hmac").new(SECRET.encode(), body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    assert verify_token(f"{body}.{mac}", SECRET) is None


@pytest.mark.parametrize("garbage", ["", "abc", "a.b", "....", "ey.!!!", "é.é", sign_token(ISSUER, SECRET).replace(".", "")])
def test_garbage_is_refused_without_raising(garbage):
    assert verify_token(garbage, SECRET) is None


def test_has_role():
    assert Principal(kind="admin").has_role("billing")
    assert ISSUER.has_role("billing") and ISSUER.has_role("x", "invoices")
    assert not ISSUER.has_role("support")
    assert not Principal(kind="staff").has_role("billing")


def test_hash_api_key_is_sha256_hex():
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    key = "tk_live_" + "x" * 43
    assert hash_api_key(key) == hash_api_key(key)
    assert len(hash_api_key(key)) == 64 and key not in hash_api_key(key)


def test_different_keys_hash_differently():
    assert hash_api_key("tk_live_a") != hash_api_key("tk_live_b")
    assert hash_api_key("tk_live_a") != hash_api_key("tk_live_a ")
