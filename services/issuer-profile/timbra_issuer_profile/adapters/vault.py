"""Envelope encryption for secrets at rest (CSD keys and passwords, SMTP passwords).

Each secret gets its own random data key (AES-256-GCM); the data key is wrapped by the master
key from ``TIMBRA_MASTER_KEY``. Rotation re-wraps data keys only, so no secret is re-encrypted
and no service needs downtime.
"""

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _key_id(master: bytes) -> str:
    return hashlib.sha256(b"timbra-kek:" + master).hexdigest()[:16]


def parse_master_key(value: str) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ValueError("TIMBRA_MASTER_KEY must be 32 bytes, base64-encoded") from exc
    if len(key) != 32:
        raise ValueError("TIMBRA_MASTER_KEY must be 32 bytes, base64-encoded")
    return key


@dataclass
class Vault:
    master_key: bytes
    previous_keys: tuple[bytes, ...] = ()

    @property
    def key_id(self) -> str:
        return _key_id(self.master_key)

    def _kek(self, key_id: str) -> bytes:
        for key in (self.master_key, *self.previous_keys):
            if _key_id(key) == key_id:
                return key
        raise KeyError(f"no master key with id {key_id}")

    def seal(self, plaintext: bytes, *, context: str) -> dict[str, Any]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce, wrap_nonce = os.urandom(12), os.urandom(12)
        return {
            "ciphertext": AESGCM(data_key).encrypt(nonce, plaintext, context.encode()),
            "nonce": nonce,
            "wrapped_key": AESGCM(self.master_key).encrypt(wrap_nonce, data_key, context.encode()),
            "wrap_nonce": wrap_nonce,
            "kek_id": self.key_id,
            "context": context,
        }

    def open(self, blob: dict[str, Any]) -> bytes:
        context = blob["context"].encode()
        data_key = AESGCM(self._kek(blob["kek_id"])).decrypt(blob["wrap_nonce"], blob["wrapped_key"], context)
        return AESGCM(data_key).decrypt(blob["nonce"], blob["ciphertext"], context)

    def rewrap(self, blob: dict[str, Any]) -> dict[str, Any]:
        if blob["kek_id"] == self.key_id:
            return blob
        context = blob["context"].encode()
        data_key = AESGCM(self._kek(blob["kek_id"])).decrypt(blob["wrap_nonce"], blob["wrapped_key"], context)
        wrap_nonce = os.urandom(12)
        return blob | {
            "wrapped_key": AESGCM(self.master_key).encrypt(wrap_nonce, data_key, context),
            "wrap_nonce": wrap_nonce,
            "kek_id": self.key_id,
        }


def parse_previous_keys(value: str | None) -> tuple[bytes, ...]:
    """``TIMBRA_MASTER_KEY_PREVIOUS``: comma-separated base64 keys still accepted for opening."""
    return tuple(parse_master_key(part.strip()) for part in (value or "").split(",") if part.strip())


def vault_from_env(master: str, previous: str | None) -> Vault:
    return Vault(parse_master_key(master), parse_previous_keys(previous))


def blob_paths(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every sealed blob inside a document, with its dotted path (for rotation)."""
    found = []
    for name, value in doc.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            if {"wrapped_key", "kek_id", "context", "ciphertext"} <= value.keys():
                found.append((path, value))
            else:
                found.extend(blob_paths(value, path + "."))
    return found
