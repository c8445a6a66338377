"""Envelope encryption of secrets at rest (``adapters/vault.py``)."""

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from timbra_issuer_profile.adapters.vault import Vault, parse_master_key

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
SECRET = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFDjBABgkqhkiG9w0BBQ0wMzAbBgkqhkiG9w0BBQwwDgQI\n-----END ENCRYPTED PRIVATE KEY-----\n"
CONTEXT = "csd-key:iss_1"


def _data_key(master: bytes, blob: dict) -> bytes:
    return AESGCM(master).decrypt(blob["wrap_nonce"], blob["wrapped_key"], blob["context"].encode())


def test_round_trip():
    vault = Vault(K1)
    blob = vault.seal(SECRET, context=CONTEXT)
    assert vault.open(blob) == SECRET
    assert blob["kek_id"] == vault.key_id and blob["context"] == CONTEXT


@given(st.binary(max_size=2048), st.text(min_size=1, max_size=60))
def test_round_trip_any_secret_and_context(plaintext, context):
    vault = Vault(K1)
    assert vault.open(vault.seal(plaintext, context=context)) == plaintext


def test_each_secret_gets_its_own_data_key_and_nonces():
    vault = Vault(K1)
    a = vault.seal(SECRET, context=CONTEXT)
    b = vault.seal(SECRET, context=CONTEXT)
    assert a["ciphertext"] != b["ciphertext"]
    assert a["nonce"] != b["nonce"] and a["wrap_nonce"] != b["wrap_nonce"]
    key_a, key_b = _data_key(K1, a), _data_key(K1, b)
    assert len(key_a) == len(key_b) == 32
    assert key_a != key_b
    assert key_a != K1 and key_b != K1


def test_ciphertext_never_contains_the_plaintext_or_the_keys():
    vault = Vault(K1)
    blob = vault.seal(SECRET, context=CONTEXT)
    data_key = _data_key(K1, blob)
    for value in blob.values():
        raw = value if isinstance(value, bytes) else str(value).encode()
        assert SECRET not in raw
        assert SECRET[30:60] not in raw
        assert data_key not in raw
        assert K1 not in raw
    assert b"PRIVATE KEY" not in blob["ciphertext"]
    assert len(blob["ciphertext"]) == len(SECRET) + 16  # GCM tag


def test_a_blob_moved_to_another_context_cannot_be_opened():
    vault = Vault(K1)
    blob = vault.seal(SECRET, context="csd-key:iss_1")
    with pytest.raises(InvalidTag):
        vault.open(blob | {"context": "csd-key:iss_2"})


def test_ciphertexts_cannot_be_swapped_between_secrets():
    vault = Vault(K1)
    a = vault.seal(b"password-of-a", context=CONTEXT)
    b = vault.seal(b"password-of-b", context=CONTEXT)
    with pytest.raises(InvalidTag):
        vault.open(a | {"ciphertext": b["ciphertext"], "nonce": b["nonce"]})


def test_a_flipped_bit_is_detected():
    vault = Vault(K1)
    blob = vault.seal(SECRET, context=CONTEXT)
    tampered = bytearray(blob["ciphertext"])
    tampered[0] ^= 1
    with pytest.raises(InvalidTag):
        vault.open(blob | {"ciphertext": bytes(tampered)})


def test_another_master_key_cannot_open():
    blob = Vault(K1).seal(SECRET, context=CONTEXT)
    with pytest.raises(KeyError):
        Vault(K2).open(blob)
    with pytest.raises(InvalidTag):
        Vault(K2).open(blob | {"kek_id": Vault(K2).key_id})


def test_rotation_keeps_old_secrets_readable_and_rewrap_moves_them_to_the_new_key():
    old = Vault(K1)
    blob = old.seal(SECRET, context=CONTEXT)
    rotated = Vault(K2, previous_keys=(K1,))
    assert rotated.open(blob) == SECRET

    rewrapped = rotated.rewrap(blob)
    assert rewrapped["kek_id"] == rotated.key_id != blob["kek_id"]
    assert rewrapped["ciphertext"] == blob["ciphertext"] and rewrapped["nonce"] == blob["nonce"]  # the secret is not re-encrypted
    assert rewrapped["wrapped_key"] != blob["wrapped_key"]
    assert _data_key(K2, rewrapped) == _data_key(K1, blob)
    assert Vault(K2).open(rewrapped) == SECRET  # no longer needs the old key
    assert blob["kek_id"] == old.key_id  # the input is not modified


def test_rewrap_of_a_current_blob_is_a_no_op():
    vault = Vault(K1)
    blob = vault.seal(SECRET, context=CONTEXT)
    assert vault.rewrap(blob) is blob


def test_key_ids_identify_keys_without_revealing_them():
    assert Vault(K1).key_id != Vault(K2).key_id
    assert Vault(K1).key_id == Vault(K1, previous_keys=(K2,)).key_id
    assert len(Vault(K1).key_id) == 16
    assert K1.hex()[:16] != Vault(K1).key_id


def test_parse_master_key():
    assert parse_master_key(base64.b64encode(K1).decode()) == K1


@pytest.mark.parametrize("value", [base64.b64encode(os.urandom(16)).decode(), base64.b64encode(os.urandom(33)).decode(), "not base64 at all!", ""])
def test_parse_master_key_refuses_bad_keys(value):
    with pytest.raises(ValueError, match="32 bytes"):
        parse_master_key(value)
