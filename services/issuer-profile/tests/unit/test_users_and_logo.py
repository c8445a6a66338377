"""Users (scrypt hashing, profile and password rules) and logo validation (a real JPEG/PNG parser)."""

import struct
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from timbra_issuer_profile.domain.logo import MAX_LOGO_BYTES, sniff_image, validate_logo
from timbra_issuer_profile.domain.users import (
    DUMMY_HASH,
    after_failed_login,
    hash_password,
    initials_of,
    login_locked_for,
    needs_rehash,
    validate_password,
    validate_user,
    verify_password,
)

FAST = {"n": 2**10, "r": 8, "p": 1}


def test_scrypt_hash_verifies_and_is_salted():
    a, b = hash_password("Clave-segura-1", **FAST), hash_password("Clave-segura-1", **FAST)
    assert a != b and a.startswith("scrypt$1024$8$1$")
    assert verify_password("Clave-segura-1", a) and verify_password("Clave-segura-1", b)
    assert not verify_password("Clave-segura-2", a)
    assert "Clave-segura-1" not in a


def test_default_cost_is_owasp_scrypt_and_old_costs_ask_for_a_rehash():
    stored = hash_password("Clave-segura-1")
    assert stored.startswith("scrypt$32768$8$3$")  # OWASP: N=2^15, r=8, p=3 (32 MiB)
    assert not needs_rehash(stored) and not needs_rehash(DUMMY_HASH)  # unknown users cost a login the same
    assert needs_rehash(hash_password("Clave-segura-1", **FAST))


@pytest.mark.parametrize("stored", ["", "bcrypt$x", "scrypt$1$2", "scrypt$abc$8$1$AA==$AA=="])
def test_malformed_hashes_never_verify(stored):
    assert not verify_password("x", stored)


@pytest.mark.parametrize(
    ("password", "confirmation", "code"),
    [("corta1", None, "TIMBRA_PASSWORD_WEAK"), ("solamenteletras", None, "TIMBRA_PASSWORD_WEAK"), ("1234567890123", None, "TIMBRA_PASSWORD_WEAK"),
     ("Clave-segura-1", "Clave-segura-2", "TIMBRA_PASSWORD_MISMATCH"), ("ana-lopez-2025", None, "TIMBRA_PASSWORD_WEAK")],
)
def test_password_rules(password, confirmation, code):
    assert code in [p.code for p in validate_password(password, confirmation, username="ana-lopez")]


def test_good_password():
    assert validate_password("Clave-segura-1", "Clave-segura-1", username="ana") == []


def test_user_rules():
    good = {"name": "Ana López", "email": "ana@example.com", "username": "ana.lopez", "role": "owner", "initials": "AL"}
    assert validate_user(good, allowed_roles=("owner",)) == []
    problems = validate_user({**good, "email": "no-email", "alt_email": "x", "username": "A B", "initials": "12", "role": "billing", "name": " "}, allowed_roles=("owner",))
    assert {p.path for p in problems} == {"email", "alt_email", "username", "initials", "role", "name"}
    assert validate_user({**good, "role": "billing"}, allowed_roles=("operator", "billing")) == []


def test_initials():
    assert initials_of("Ana María López") == "AML"
    assert initials_of("  josé  ") == "J"


# --------------------------------------------------------------------------- logo


def png(width: int, height: int, *, corrupt_crc: bool = False, drop_iend: bool = False) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) ^ (1 if corrupt_crc and kind == b"IDAT" else 0)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + b"\x00\x80\xff" * width for _ in range(height))
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw))
    return body if drop_iend else body + chunk(b"IEND", b"")


def jpeg(width: int, height: int, *, eoi: bool = True) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + sof + sos + b"\x12\x34\x56" + (b"\xff\xd9" if eoi else b"")


def test_png_and_jpeg_dimensions():
    assert (sniff_image(png(300, 90)).content_type, sniff_image(png(300, 90)).width, sniff_image(png(300, 90)).height) == ("image/png", 300, 90)
    info = sniff_image(jpeg(640, 200))
    assert (info.content_type, info.width, info.height) == ("image/jpeg", 640, 200)


def test_real_encoders_output_is_accepted():
    image = pytest.importorskip("PIL.Image")
    import io

    for fmt, extra in (("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True})):
        buffer = io.BytesIO()
        image.new("RGB", (123, 45)).save(buffer, fmt, **extra)
        info, problems = validate_logo(buffer.getvalue())
        assert problems == [] and (info.width, info.height) == (123, 45)


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a....", b"%PDF-1.7", b"\xff\xd8\xff\xe0 not a jpeg", jpeg(100, 100, eoi=False), png(100, 100, corrupt_crc=True), png(100, 100, drop_iend=True), png(100, 100)[:40],
     b"\x89PNG\r\n\x1a\n" + b"\x00" * 30],
)
def test_fakes_and_truncated_files_are_refused(data):
    _info, problems = validate_logo(data)
    assert [p.code for p in problems] == ["TIMBRA_LOGO_INVALID"]


def test_size_and_dimension_limits():
    assert [p.code for p in validate_logo(b"\x89PNG" + b"\x00" * MAX_LOGO_BYTES)[1]] == ["TIMBRA_LOGO_TOO_LARGE"]
    assert [p.code for p in validate_logo(png(8, 200))[1]] == ["TIMBRA_LOGO_DIMENSIONS"]
    assert [p.code for p in validate_logo(jpeg(5000, 100))[1]] == ["TIMBRA_LOGO_DIMENSIONS"]
    assert validate_logo(png(16, 4000))[1] == []


def test_five_failures_within_the_window_lock_the_username_for_a_while():
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    record = None
    for minute in range(4):
        record = after_failed_login(record, now + timedelta(minutes=minute))
        assert login_locked_for(record, now + timedelta(minutes=minute)) == 0
    record = after_failed_login(record, now + timedelta(minutes=4))
    assert login_locked_for(record, now + timedelta(minutes=4)) == 15 * 60
    assert login_locked_for(record, now + timedelta(minutes=18, seconds=30)) == 30
    assert login_locked_for(record, now + timedelta(minutes=19)) == 0
    assert record["count"] == 0  # after the lock ends, five more failures are needed


def test_failures_spread_beyond_the_window_never_lock():
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    record = None
    for attempt in range(12):
        at = now + timedelta(minutes=8 * attempt)
        record = after_failed_login(record, at)
        assert login_locked_for(record, at) == 0
    assert record["count"] <= 2
