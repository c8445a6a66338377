"""Issuer onboarding on the real platform: from nothing to stamped, every CSD rejection with real
bad input, several certificates, expiry notices by email, users and sessions, API keys and their
revocation, logo, SMTP settings, document types, series, and cross-tenant refusals."""

import asyncio
import base64
import os
import secrets
import string
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, PrivateFormat
from cryptography.x509.oid import NameOID
from pymongo import AsyncMongoClient

from timbra_shared.cfdi.testing import make_csd, sat_serial
from timbra_shared.devstack import servers
from timbra_shared.devstack.scenario import Issuer, TimbraClient, sample_invoice

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PASSWORD = "12345678a"
SHARED = Path(os.environ.get("TIMBRA_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
FISCAL_ADDRESS = {"street": "Av. Juárez", "exterior": "100", "interior": "3B", "neighborhood": "Centro", "zip": "42501", "municipality": "Pachuca de Soto", "state": "HID", "country": "MEX"}


# --------------------------------------------------------------------------- helpers


def random_rfc() -> str:
    """A persona-moral RFC nobody else in the run uses."""
    letters = "".join(secrets.choice(string.ascii_uppercase) for _ in range(3))
    tail = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(2)) + secrets.choice(string.digits)
    return f"{letters}900101{tail}"


_key_cache: dict[str, rsa.RSAPrivateKey] = {}


def csd_valid(rfc: str, name: str, *, not_before: datetime, not_after: datetime, password: str = PASSWORD) -> tuple[bytes, bytes]:
    """A SAT-shaped CSD with the validity we need (make_csd only knows valid/expired/not yet valid)."""
    key = _key_cache.setdefault(rfc, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ca = _key_cache.setdefault("__ca__", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    serial, _ = sat_serial(f"{rfc}|{not_before.isoformat()}|{not_after.isoformat()}")
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
        x509.NameAttribute(x509.ObjectIdentifier("2.5.4.45"), f"{rfc} / XIQB891116QE4"),
    ])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AC UAT TIMBRA PRUEBAS")])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(serial).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False), critical=False)
        .sign(ca, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER), key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, BestAvailableEncryption(password.encode()))


async def new_issuer(client: TimbraClient, *, rfc: str | None = None, name: str = "EMPRESA DE PRUEBA", email: str | None = None) -> Issuer:
    rfc = rfc or random_rfc()
    response = await client.http.post("/v1/issuers", headers=client.admin, json={"rfc": rfc, "legal_name": name, "tax_regime": "601", "zip": "42501", "email": email or f"{rfc.lower()}@example.com"})
    assert response.status_code == 201, response.text
    body = response.json()
    return Issuer(id=body["id"], api_key=body["api_key"], slug=body["slug"], rfc=rfc)


async def upload(client: TimbraClient, issuer: Issuer, cer: bytes, key: bytes, password: str = PASSWORD) -> httpx.Response:
    return await client.http.put("/v1/issuers/me/csd", headers=issuer.headers, files={"cer": ("a.cer", cer), "key": ("a.key", key)}, data={"password": password})


async def accept(client: TimbraClient, issuer: Issuer, **which: bool) -> httpx.Response:
    return await client.http.put("/v1/issuers/me/acceptances", headers=issuer.headers, json=which or {"privacy_notice": True, "carta_manifiesto": True})


async def ready_issuer(client: TimbraClient, *, credits: int = 0, name: str = "EMPRESA DE PRUEBA") -> Issuer:
    issuer = await new_issuer(client, name=name)
    assert (await accept(client, issuer)).status_code == 200
    cer, key = make_csd(rfc=issuer.rfc, name=name)
    assert (await upload(client, issuer, cer, key)).status_code == 200
    if credits:
        grant = await client.http.post("/v1/billing/credits", headers=client.admin, json={"issuer_id": issuer.id, "stamps": credits, "months": 12})
        assert grant.status_code < 300, grant.text
    return issuer


async def me(client: TimbraClient, issuer: Issuer) -> dict:
    response = await client.http.get("/v1/issuers/me", headers=issuer.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def final(client: TimbraClient, issuer: Issuer, body: dict | None = None, timeout: float = 60) -> dict:
    created = await client.create_invoice(issuer, body)
    assert created.status_code == 202, created.text
    invoice_id = created.json()["id"]
    return (await client.wait_final(issuer, [invoice_id], timeout=timeout))[invoice_id]


async def wait_projection(platform, issuer_id: str, predicate, timeout: float = 20) -> dict:  # noqa: ANN001
    """The builder's local projection of issuer.profile, once it satisfies ``predicate``."""
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            doc = await mongo.timbra_cfdi_builder.issuers.find_one({"_id": issuer_id})
            if doc and predicate(doc):
                return doc
            await asyncio.sleep(0.2)
        raise AssertionError(f"the builder's projection never matched: {doc}")
    finally:
        await mongo.close()


async def sink_messages(platform, to: str, timeout: float = 20, expect: int = 1) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:  # httpx's 5 s is short on a loaded CI machine
        while True:
            messages = [m for m in (await sink.get("/api/messages", params={"to": to})).json() if to in m["to"]]
            if len(messages) >= expect or time.monotonic() > deadline:
                return messages
            await asyncio.sleep(0.3)


# --------------------------------------------------------------------------- from nothing to stamped


async def test_new_issuer_goes_through_the_wizard_and_gets_an_invoice_stamped(client, platform) -> None:
    issuer = await new_issuer(client, name="COMERCIALIZADORA DEL NORTE")
    profile = await me(client, issuer)
    assert profile["onboarding"]["acceptances"] is False and profile["onboarding"]["csd"] is False
    assert "Falta aceptar el aviso de privacidad antes de timbrar." in profile["warnings"]
    assert "Aún no has cargado tu certificado de sello digital (CSD)." in profile["warnings"]

    # Paso 4: datos fiscales; 5 y 6: direcciones ("copiar de la dirección fiscal")
    patched = await client.http.patch("/v1/issuers/me", headers=issuer.headers, json={"phone": "771 123 4567", "legal_name": "COMERCIALIZADORA DEL NORTE"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["phone"] == "7711234567"
    addresses = await client.http.put("/v1/issuers/me/addresses", headers=issuer.headers, json={"fiscal": FISCAL_ADDRESS, "issuing_same_as_fiscal": True})
    assert addresses.status_code == 200, addresses.text
    assert addresses.json()["issuing_address"] == addresses.json()["fiscal_address"]
    assert addresses.json()["issuing_address"]["street"] == "Av. Juárez"
    # Paso 7: usuario
    user = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={
        "name": "Ana María López", "email": "ana@example.com", "alt_email": "ana.alt@example.com", "phone": "5512345678",
        "username": f"ana-{issuer.rfc.lower()}", "password": "Cl4ve-segura-2025", "password_confirmation": "Cl4ve-segura-2025",
    })
    assert user.status_code == 201, user.text
    assert user.json()["initials"] == "AML" and user.json()["role"] == "owner"
    # Paso 2 y 3: aceptaciones, con fecha y quién
    accepted = await accept(client, issuer)
    assert accepted.status_code == 200
    for name in ("privacy_notice", "carta_manifiesto"):
        record = accepted.json()["acceptances"][name]
        assert datetime.fromisoformat(record["accepted_at"]) > datetime.now(UTC) - timedelta(minutes=1)
        assert record["by"]["key_id"].startswith("key_")
    # Paso 9: CSD
    cer, key = make_csd(rfc=issuer.rfc, name="COMERCIALIZADORA DEL NORTE")
    uploaded = await upload(client, issuer, cer, key)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["active"] is True
    # Paso 11: documentos; series
    assert (await client.http.put("/v1/issuers/me/document-types", headers=issuer.headers, json={"enabled_types": ["I", "E", "P"]})).status_code == 200
    assert (await client.http.put("/v1/issuers/me/series", headers=issuer.headers, json={"series": {"I": "CN"}})).status_code == 200

    profile = await me(client, issuer)
    assert profile["csd"]["serial"] == uploaded.json()["serial"]
    assert profile["csd"]["days_left"] > 1000
    assert profile["notices"] == [] and profile["warnings"] == []
    assert {k for k, v in profile["onboarding"].items() if not v} == {"logo", "smtp"}

    grant = await client.http.post("/v1/billing/credits", headers=client.admin, json={"issuer_id": issuer.id, "stamps": 3, "months": 12})
    assert grant.status_code < 300
    await wait_projection(platform, issuer.id, lambda d: d.get("series") == {"I": "CN"})
    state = await final(client, issuer)
    assert state["status"] == "emailed", state
    assert state["serie"] == "CN" and state["folio"] == "1"
    xml = await client.http.get(f"/v1/invoices/{state['id']}/xml", headers=issuer.headers)
    assert f'NoCertificado="{uploaded.json()["serial"]}"'.encode() in xml.content


async def test_stamping_is_refused_until_both_acceptances_naming_the_missing_one(client) -> None:
    issuer = await new_issuer(client)
    cer, key = make_csd(rfc=issuer.rfc, name="EMPRESA DE PRUEBA")
    assert (await upload(client, issuer, cer, key)).status_code == 200
    assert (await accept(client, issuer, privacy_notice=True)).status_code == 200
    state = await final(client, issuer)
    assert state["status"] == "rejected"
    assert [e["code"] for e in state["errors"]] == ["TIMBRA_CARTA_MANIFIESTO_PENDING"]
    assert "carta manifiesto" in state["message"]

    assert (await accept(client, issuer, carta_manifiesto=True)).status_code == 200
    state = await final(client, issuer)
    assert state["status"] == "rejected"
    assert [e["code"] for e in state["errors"]] == ["TIMBRA_NO_CREDITS"] or "Sin folios" in state["message"]  # sealed; billing stops it


# --------------------------------------------------------------------------- CSD rejections with real bad input


def _bad_inputs(rfc: str) -> dict[str, tuple[bytes, bytes, str]]:
    name = "EMPRESA DE PRUEBA"
    cer, key = make_csd(rfc=rfc, name=name)
    other_cer, other_key = make_csd(rfc="OTR850101AB1", name="OTRA EMPRESA")
    fiel_cer, fiel_key = make_csd(rfc=rfc, name=name, fiel=True)
    expired_cer, expired_key = make_csd(rfc=rfc, name=name, expired=True)
    future_cer, future_key = make_csd(rfc=rfc, name=name, not_yet_valid=True)
    return {
        "wrong_password": (cer, key, "contraseña-equivocada"),
        "key_mismatch": (cer, other_key, PASSWORD),  # a swapped .key
        "fiel_not_csd": (fiel_cer, fiel_key, PASSWORD),
        "rfc_mismatch": (other_cer, other_key, PASSWORD),
        "expired": (expired_cer, expired_key, PASSWORD),
        "not_yet_valid": (future_cer, future_key, PASSWORD),
        "invalid_certificate": (b"esto no es un certificado", key, PASSWORD),
    }


async def test_each_bad_csd_is_refused_with_its_own_spanish_message(client) -> None:
    issuer = await new_issuer(client)
    messages = {}
    for code, (cer, key, password) in _bad_inputs(issuer.rfc).items():
        response = await upload(client, issuer, cer, key, password)
        assert response.status_code == 422, (code, response.text)
        body = response.json()
        assert body["ok"] is False and body["code"] == code, body
        assert body["errors"][0]["code"] == code
        messages[code] = body["message"]
    assert len(set(messages.values())) == len(messages)  # each its own message
    assert "contraseña" in messages["wrong_password"]
    assert "no corresponde" in messages["key_mismatch"]
    assert "e.firma (FIEL)" in messages["fiel_not_csd"]
    assert "OTR850101AB1" in messages["rfc_mismatch"] and issuer.rfc in messages["rfc_mismatch"]
    assert "vencido" in messages["expired"]
    assert "aún no es vigente" in messages["not_yet_valid"]
    for message in messages.values():
        assert "contraseña-equivocada" not in message
    assert (await me(client, issuer))["csd"] is None  # nothing was stored


@pytest.mark.skipif(not (SHARED / "fixtures" / "csd" / "EKU9003173C9.cer").exists(), reason="../shared is absent (SAT's test CSDs)")
async def test_sat_test_csd_stamps_end_to_end_and_the_expired_one_is_refused(client) -> None:
    csd_dir = SHARED / "fixtures" / "csd"
    issuer = await new_issuer(client, rfc="EKU9003173C9", name="ESCUELA KEMPER URGATE")
    uploaded = await upload(client, issuer, (csd_dir / "EKU9003173C9.cer").read_bytes(), (csd_dir / "EKU9003173C9.key").read_bytes(), "12345678a")
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["serial"].startswith("3000100000")
    assert (await accept(client, issuer)).status_code == 200
    await client.http.post("/v1/billing/credits", headers=client.admin, json={"issuer_id": issuer.id, "stamps": 2, "months": 12})
    state = await final(client, issuer)
    assert state["status"] == "emailed", state

    expired = sorted(csd_dir.glob("CACX7605101P8-expired*"))
    if len(expired) >= 2:
        fisica = await client.http.post("/v1/issuers", headers=client.admin, json={"rfc": "CACX7605101P8", "legal_name": "XOCHILT CASAS CHAVEZ", "tax_regime": "612", "zip": "42501"})
        assert fisica.status_code == 201, fisica.text
        headers = {"Authorization": f"Bearer {fisica.json()['api_key']}"}
        cer = next(p for p in expired if p.suffix == ".cer").read_bytes()
        key = next(p for p in expired if p.suffix == ".key").read_bytes()
        response = await client.http.put("/v1/issuers/me/csd", headers=headers, files={"cer": ("a.cer", cer), "key": ("a.key", key)}, data={"password": "12345678a"})
        assert response.status_code == 422 and response.json()["code"] == "expired", response.text


# --------------------------------------------------------------------------- several certificates, expiry


async def test_the_renewed_certificate_takes_over_and_expiry_follows_the_longest_lasting(client, platform) -> None:
    issuer = await ready_issuer(client, name="RENOVADORA")
    now = datetime.now(UTC).replace(microsecond=0)
    first = (await me(client, issuer))["csd"]
    cer, key = csd_valid(issuer.rfc, "RENOVADORA", not_before=now - timedelta(hours=1), not_after=now + timedelta(days=20, hours=1))
    second = await upload(client, issuer, cer, key)
    assert second.status_code == 200 and second.json()["active"] is True
    listed = {c["serial"]: c["status"] for c in (await client.http.get("/v1/issuers/me/csds", headers=issuer.headers)).json()["data"]}
    assert listed == {second.json()["serial"]: "active", first["serial"]: "standby"}
    # the old one still lasts 4 years, so no warning yet
    assert (await me(client, issuer))["notices"] == []
    state = await final(client, issuer)
    assert state["status"] == "rejected" and state["errors"][0]["code"] == "TIMBRA_NO_CREDITS"  # sealed, then billing stops it
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        seal = await mongo.timbra_issuer_profile.seals.find_one({"_id": state["id"]})
    finally:
        await mongo.close()
    assert seal["no_certificado"] == second.json()["serial"]

    # without the long-lived one, the 20-day certificate is what matters: the profile warns and one email goes out
    deleted = await client.http.delete(f"/v1/issuers/me/csds/{first['serial']}", headers=issuer.headers)
    assert deleted.status_code == 200
    profile = await me(client, issuer)
    (notice,) = profile["notices"]
    assert notice["title"] == "Aviso de sellos vencidos" and notice["code"] == "csd_expiring" and notice["severity"] == "warning"
    assert notice["days_left"] == 20 and notice["help_url"].startswith("https://www.sat.gob.mx/")
    assert "vence en 20 días" in " ".join(profile["warnings"])
    async with httpx.AsyncClient(base_url=platform.url("issuer-profile"), timeout=30) as internal:
        for _ in range(3):  # the daily check, run three times: one email
            checked = await internal.post("/internal/v1/csd-expiry/check", params={"issuer_id": issuer.id}, headers={"x-timbra-internal": platform.config.internal_secret})
            assert checked.status_code == 200
        assert (await internal.post("/internal/v1/csd-expiry/check")).status_code == 403
    mails = await sink_messages(platform, f"{issuer.rfc.lower()}@example.com")
    await asyncio.sleep(1.5)
    mails = await sink_messages(platform, f"{issuer.rfc.lower()}@example.com")
    assert len(mails) == 1, mails
    assert "vence en 20 días" in mails[0]["subject"]


async def test_a_certificate_near_expiry_warns_at_seven_days_once_and_expired_seals_are_refused(client, platform) -> None:
    issuer = await new_issuer(client, name="POR VENCER")
    assert (await accept(client, issuer)).status_code == 200
    now = datetime.now(UTC).replace(microsecond=0)
    cer, key = csd_valid(issuer.rfc, "POR VENCER", not_before=now - timedelta(days=300), not_after=now + timedelta(days=5, hours=1))
    assert (await upload(client, issuer, cer, key)).status_code == 200  # the upload runs the check at once
    async with httpx.AsyncClient(base_url=platform.url("issuer-profile"), timeout=30) as internal:
        assert (await internal.post("/internal/v1/csd-expiry/check", headers={"x-timbra-internal": platform.config.internal_secret})).status_code == 200
    (notice,) = (await me(client, issuer))["notices"]
    assert notice["severity"] == "critical" and notice["days_left"] == 5
    mails = await sink_messages(platform, f"{issuer.rfc.lower()}@example.com")
    await asyncio.sleep(1.5)
    mails = await sink_messages(platform, f"{issuer.rfc.lower()}@example.com")
    assert [m["subject"] for m in mails] == [f"Tu CSD vence en 5 días ({issuer.rfc})"]  # 7 days; not also the 30-day one


# --------------------------------------------------------------------------- fiscal data and addresses


async def test_fiscal_data_is_validated_with_coded_errors(client) -> None:
    issuer = await ready_issuer(client)
    cases = [
        ({"rfc": "NO-ES-UN-RFC"}, "TIMBRA_RFC_INVALID", "rfc"),
        ({"tax_regime": "612"}, "CFDI40141", "tax_regime"),  # persona física regime for a persona moral
        ({"zip": "00001"}, "CFDI40126", "zip"),
        ({"phone": "12"}, "TIMBRA_PHONE_INVALID", "phone"),
    ]
    for body, code, path in cases:
        response = await client.http.patch("/v1/issuers/me", headers=issuer.headers, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == code and response.json()["errors"][0]["path"] == path
    locked = await client.http.patch("/v1/issuers/me", headers=issuer.headers, json={"rfc": random_rfc()})
    assert locked.status_code == 409 and locked.json()["code"] == "TIMBRA_RFC_LOCKED"
    created = await client.http.post("/v1/issuers", headers=client.admin, json={"rfc": "EKU9003173C9", "legal_name": "X", "tax_regime": "612", "zip": "42501"})
    assert created.status_code == 422 and created.json()["code"] == "CFDI40141"
    address = await client.http.put("/v1/issuers/me/addresses", headers=issuer.headers, json={"fiscal": {**FISCAL_ADDRESS, "zip": "00001", "street": ""}})
    assert address.status_code == 422
    assert {(e["code"], e["path"]) for e in address.json()["errors"]} == {("TIMBRA_ADDRESS_INCOMPLETE", "fiscal.street"), ("CFDI40126", "fiscal.zip")}
    separate = await client.http.put("/v1/issuers/me/addresses", headers=issuer.headers, json={"fiscal": FISCAL_ADDRESS, "issuing": {**FISCAL_ADDRESS, "street": "Sucursal Sur", "zip": "06000", "municipality": "Cuauhtémoc", "state": "CMX"}})
    assert separate.status_code == 200, separate.text
    assert separate.json()["issuing_address"]["street"] == "Sucursal Sur" and separate.json()["issuing_same_as_fiscal"] is False


# --------------------------------------------------------------------------- users and sessions


async def test_users_have_hashed_passwords_and_log_in(client, platform) -> None:
    issuer = await ready_issuer(client)
    username = f"owner-{issuer.rfc.lower()}"
    password = "Contraseña-9876-" + secrets.token_hex(4)
    weak = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Luis", "email": "luis@example.com", "username": username, "password": "corta1"})
    assert weak.status_code == 422 and weak.json()["code"] == "TIMBRA_PASSWORD_WEAK"
    mismatch = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Luis", "email": "luis@example.com", "username": username, "password": password, "password_confirmation": password + "x"})
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "TIMBRA_PASSWORD_MISMATCH"
    staff_role = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Luis", "email": "luis@example.com", "username": username, "password": password, "role": "billing"})
    assert staff_role.status_code == 422 and staff_role.json()["code"] == "TIMBRA_ROLE_INVALID"
    created = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Luis Pérez", "email": "Luis@Example.com", "username": username, "password": password})
    assert created.status_code == 201, created.text
    assert "password" not in created.text.lower().replace("password_", "") and password not in created.text
    again = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Otro", "email": "o@example.com", "username": username, "password": password})
    assert again.status_code == 409 and again.json()["code"] == "TIMBRA_USERNAME_TAKEN"

    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        stored = await mongo.timbra_issuer_profile.users.find_one({"username": username})
    finally:
        await mongo.close()
    assert stored["password_hash"].startswith("scrypt$32768$8$3$") and password not in str(stored)

    wrong = await client.http.post("/v1/sessions", json={"username": username, "password": password + "!"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "TIMBRA_LOGIN_FAILED"
    nobody = await client.http.post("/v1/sessions", json={"username": "nadie-" + username, "password": password})
    assert nobody.status_code == 401 and nobody.json()["message"] == wrong.json()["message"]
    login = await client.http.post("/v1/sessions", json={"username": username.upper(), "password": password})
    assert login.status_code == 201, login.text
    token = login.json()["token"]
    assert token.startswith("tk_sess_")
    session_headers = {"Authorization": f"Bearer {token}"}
    profile = await client.http.get("/v1/issuers/me", headers=session_headers)
    assert profile.status_code == 200 and profile.json()["id"] == issuer.id
    accepted = await client.http.put("/v1/issuers/me/acceptances", headers=session_headers, json={"privacy_notice": True})
    assert accepted.json()["acceptances"]["privacy_notice"]["by"]["user_id"] == created.json()["id"]


async def test_repeated_wrong_passwords_lock_the_username_for_a_while(client, platform) -> None:
    issuer = await ready_issuer(client)
    username, password = f"lock-{issuer.rfc.lower()}", "Contraseña-1234-" + secrets.token_hex(4)
    created = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Ana", "email": "ana@example.com", "username": username, "password": password})
    assert created.status_code == 201, created.text
    for _ in range(5):
        wrong = await client.http.post("/v1/sessions", json={"username": username, "password": "adivinanza-123"})
        assert wrong.status_code == 401, wrong.text
    locked = await client.http.post("/v1/sessions", json={"username": username, "password": password})
    assert locked.status_code == 429 and locked.json()["code"] == "TIMBRA_LOGIN_LOCKED", locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60 and "intentos fallidos" in locked.json()["message"]
    unknown = [await client.http.post("/v1/sessions", json={"username": "nadie-" + username, "password": "x"}) for _ in range(6)]
    assert [r.status_code for r in unknown] == [401] * 5 + [429], "unknown usernames lock the same way (no user enumeration)"

    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        failures = mongo.timbra_issuer_profile.login_failures
        assert (await failures.find_one({"_id": username}))["locked_until"] is not None
        await failures.update_one({"_id": username}, {"$set": {"locked_until": datetime.now(UTC) - timedelta(seconds=1)}})  # the lock has run out
        login = await client.http.post("/v1/sessions", json={"username": username, "password": password})
        assert login.status_code == 201, login.text
        assert await failures.find_one({"_id": username}) is None, "a successful login clears the failures"
    finally:
        await mongo.close()


# --------------------------------------------------------------------------- API keys


async def test_api_keys_are_shown_once_stored_hashed_and_listed(client, platform) -> None:
    issuer = await ready_issuer(client)
    live = await client.http.post("/v1/issuers/me/keys", headers=issuer.headers, json={"livemode": True, "name": "ERP"})
    assert live.status_code == 201, live.text
    key = live.json()["key"]
    assert key.startswith("tk_live_") and len(key) > 40
    listed = (await client.http.get("/v1/issuers/me/keys", headers=issuer.headers)).json()["data"]
    assert {k["livemode"] for k in listed} == {True, False}
    assert key not in str(listed) and all(k["prefix"] in (key[:12], issuer.api_key[:12]) for k in listed)
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        docs = await mongo.timbra_issuer_profile.api_keys.find({"issuer_id": issuer.id}).to_list(None)
    finally:
        await mongo.close()
    assert key not in str(docs) and issuer.api_key not in str(docs)
    import hashlib

    assert hashlib.sha256(key.encode()).hexdigest() in {d["hash"] for d in docs}
    live_headers = {"Authorization": f"Bearer {key}"}
    created = await client.create_invoice(Issuer(issuer.id, key, issuer.slug, issuer.rfc))
    assert created.status_code == 202 and created.json()["livemode"] is True
    assert (await client.http.get("/v1/issuers/me", headers=live_headers)).status_code == 200


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fast_ingress(platform):  # noqa: ANN001, ANN201
    """A second ingress in front of the same services, with a 1-second key cache (TIMBRA_KEY_CACHE_TTL)."""
    port = servers.free_port()
    env = {**os.environ, **platform.env_for("ingress"), "TIMBRA_HTTP_PORT": str(port), "TIMBRA_KEY_CACHE_TTL": "1"}
    log = open(platform.config.log_dir / "ingress-fastcache.log", "ab")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "timbra_shared.ingress"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # patient: a loaded 2-core machine starts Python slowly
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                try:
                    if (await http.get(url + "/healthz")).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and process.poll() is None, "the second ingress did not start (see ingress-fastcache.log)"
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def test_a_revoked_key_stops_working_within_the_cache_ttl(client, fast_ingress) -> None:
    issuer = await ready_issuer(client)
    created = await client.http.post("/v1/issuers/me/keys", headers=issuer.headers, json={"livemode": False, "name": "temporal"})
    key_id, key = created.json()["id"], created.json()["key"]
    async with httpx.AsyncClient(base_url=fast_ingress, timeout=60) as http:
        headers = {"Authorization": f"Bearer {key}"}
        assert (await http.get("/v1/issuers/me", headers=headers)).status_code == 200  # now cached
        revoked = await http.delete(f"/v1/issuers/me/keys/{key_id}", headers=issuer.headers)
        assert revoked.status_code == 200 and revoked.json()["active"] is False
        await asyncio.sleep(1.3)
        refused = await http.get("/v1/issuers/me", headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert (await http.get("/v1/issuers/me", headers=issuer.headers)).status_code == 200  # the other key still works

        # a session ends the same way at logout
        user = {"name": "Eva Ruiz", "email": "eva@example.com", "username": f"eva-{issuer.rfc.lower()}", "password": "Sesion-segura-42"}
        assert (await http.post("/v1/issuers/me/users", headers=issuer.headers, json=user)).status_code == 201
        token = (await http.post("/v1/sessions", json={"username": user["username"], "password": user["password"]})).json()["token"]
        session = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/v1/issuers/me", headers=session)).status_code == 200
        assert (await http.delete("/v1/sessions/current", headers=session)).status_code == 200
        await asyncio.sleep(1.3)
        assert (await http.get("/v1/issuers/me", headers=session)).status_code == 401


async def test_staff_keys_carry_their_role(client) -> None:
    created = await client.http.post("/v1/staff/keys", headers=client.admin, json={"role": "billing", "name": "cobranza"})
    assert created.status_code == 201, created.text
    staff = {"Authorization": f"Bearer {created.json()['key']}"}
    issuer = await new_issuer(client)
    assert (await client.http.post("/v1/billing/credits", headers=staff, json={"issuer_id": issuer.id, "stamps": 1, "months": 12})).status_code < 300
    assert (await client.http.get("/v1/issuers/me", headers=staff)).status_code == 403
    assert (await client.http.post("/v1/staff/keys", headers=issuer.headers, json={"role": "billing"})).status_code == 403
    bad = await client.http.post("/v1/staff/keys", headers=client.admin, json={"role": "owner"})
    assert bad.status_code == 422 and bad.json()["code"] == "TIMBRA_ROLE_INVALID"


# --------------------------------------------------------------------------- cross-tenant


async def test_another_tenants_resources_answer_404(client, platform) -> None:
    a = await ready_issuer(client, credits=1)
    b = await ready_issuer(client)
    b_user = await client.http.post("/v1/issuers/me/users", headers=b.headers, json={"name": "Beto", "email": "b@example.com", "username": f"beto-{b.rfc.lower()}", "password": "Beto-clave-123"})
    b_keys = (await client.http.get("/v1/issuers/me/keys", headers=b.headers)).json()["data"]
    b_csd = (await me(client, b))["csd"]["serial"]
    b_invoice = (await client.create_invoice(b)).json()["id"]

    assert (await client.http.get(f"/v1/invoices/{b_invoice}", headers=a.headers)).status_code == 404
    assert (await client.http.get(f"/v1/invoices/{b_invoice}/xml", headers=a.headers)).status_code == 404
    assert (await client.http.get(f"/v1/issuers/me/users/{b_user.json()['id']}", headers=a.headers)).status_code == 404
    assert (await client.http.patch(f"/v1/issuers/me/users/{b_user.json()['id']}", headers=a.headers, json={"name": "x"})).status_code == 404
    assert (await client.http.delete(f"/v1/issuers/me/users/{b_user.json()['id']}", headers=a.headers)).status_code == 404
    assert (await client.http.delete(f"/v1/issuers/me/keys/{b_keys[0]['id']}", headers=a.headers)).status_code == 404
    assert (await client.http.delete(f"/v1/issuers/me/csds/{b_csd}", headers=a.headers)).status_code == 404
    assert (await client.http.post(f"/v1/issuers/{b.id}/keys", headers=a.headers, json={})).status_code == 403
    assert all(u["id"] != b_user.json()["id"] for u in (await client.http.get("/v1/issuers/me/users", headers=a.headers)).json()["data"])
    # B is untouched
    assert (await client.http.get("/v1/issuers/me", headers=b.headers)).status_code == 200
    assert (await me(client, b))["csd"]["serial"] == b_csd
    async with httpx.AsyncClient(base_url=platform.url("issuer-profile"), timeout=30) as internal:
        assert (await internal.get(f"/internal/v1/issuers/{b.id}/smtp")).status_code == 403
        assert (await internal.get(f"/internal/v1/issuers/{b.id}/logo", headers={"x-timbra-internal": "guess"})).status_code == 403


# --------------------------------------------------------------------------- logo


def _png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


async def test_logo_is_validated_stored_and_published_for_the_pdf(client, platform) -> None:
    issuer = await ready_issuer(client)
    fake = await client.http.put("/v1/issuers/me/logo", headers=issuer.headers, files={"file": ("logo.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")})
    assert fake.status_code == 422 and fake.json()["code"] == "TIMBRA_LOGO_INVALID"
    text = await client.http.put("/v1/issuers/me/logo", headers=issuer.headers, files={"file": ("logo.png", b"hola")})
    assert text.status_code == 422 and text.json()["code"] == "TIMBRA_LOGO_INVALID"
    tiny = await client.http.put("/v1/issuers/me/logo", headers=issuer.headers, files={"file": ("logo.png", _png(4, 4))})
    assert tiny.status_code == 422 and tiny.json()["code"] == "TIMBRA_LOGO_DIMENSIONS"
    huge = await client.http.put("/v1/issuers/me/logo", headers=issuer.headers, files={"file": ("logo.png", b"\x89PNG\r\n\x1a\n" + os.urandom(1024 * 1024 + 10))})
    assert huge.status_code == 413 and huge.json()["code"] == "TIMBRA_LOGO_TOO_LARGE"

    image = _png(240, 80)
    stored = await client.http.put("/v1/issuers/me/logo", headers=issuer.headers, files={"file": ("logo.png", image)}, data={"placement": "center"})
    assert stored.status_code == 200, stored.text
    assert stored.json() | {"id": None} == {"id": None, "content_type": "image/png", "width": 240, "height": 80, "size": len(image), "placement": "center", "url": "/v1/issuers/me/logo"}
    assert (await client.http.get("/v1/issuers/me/logo", headers=issuer.headers)).content == image
    moved = await client.http.put("/v1/issuers/me/logo/placement", headers=issuer.headers, json={"placement": "right"})
    assert moved.status_code == 200 and moved.json()["placement"] == "right"
    projected = await wait_projection(platform, issuer.id, lambda d: d.get("logo_placement") == "right")
    assert projected["logo_id"] == stored.json()["id"]
    async with httpx.AsyncClient(base_url=platform.url("issuer-profile"), timeout=30) as internal:
        fetched = await internal.get(projected["logo_url"], headers={"x-timbra-internal": platform.config.internal_secret})
    assert fetched.status_code == 200 and fetched.content == image and fetched.headers["content-type"] == "image/png"
    try:
        from PIL import Image
    except ImportError:
        return
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (300, 120), (10, 20, 200)).save(buffer, "JPEG")
    jpeg = await client.http.put("/v1/issuers/me/logo", headers=issuer.headers, files={"file": ("logo.jpg", buffer.getvalue())})
    assert jpeg.status_code == 200 and (jpeg.json()["content_type"], jpeg.json()["width"], jpeg.json()["placement"]) == ("image/jpeg", 300, "right")


# --------------------------------------------------------------------------- SMTP


class _RejectingAuth:
    """An SMTP server (aiosmtpd) that refuses every login: a real authentication failure."""

    async def __aenter__(self) -> int:
        from aiosmtpd.smtp import SMTP, AuthResult

        loop = asyncio.get_running_loop()

        def deny(*_args) -> AuthResult:  # noqa: ANN002
            return AuthResult(success=False, handled=False)

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802
                return "250 OK"

        self.server = await loop.create_server(lambda: SMTP(Handler(), auth_require_tls=False, authenticator=deny, loop=loop), "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_smtp_settings_keep_the_password_encrypted_and_test_the_connection(client, platform) -> None:
    issuer = await ready_issuer(client)
    password = "smtp-" + secrets.token_hex(8)
    settings = {"address": "facturas@empresa.mx", "sender_name": "Facturación Empresa", "username": "facturas@empresa.mx", "password": password, "host": "127.0.0.1", "port": platform.config.smtp_port, "security": "none"}
    saved = await client.http.put("/v1/issuers/me/smtp", headers=issuer.headers, json=settings)
    assert saved.status_code == 200, saved.text
    assert saved.json()["password_set"] is True and password not in saved.text
    assert password not in (await client.http.get("/v1/issuers/me", headers=issuer.headers)).text

    tested = await client.http.post("/v1/issuers/me/smtp/test", headers=issuer.headers)
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text
    assert (await me(client, issuer))["smtp"]["last_test"]["ok"] is True
    closed = await client.http.post("/v1/issuers/me/smtp/test", headers=issuer.headers, json={**settings, "port": servers.free_port()})
    assert closed.status_code == 422 and closed.json()["code"] == "TIMBRA_SMTP_CONNECT_FAILED"
    starttls = await client.http.post("/v1/issuers/me/smtp/test", headers=issuer.headers, json={**settings, "security": "starttls"})
    assert starttls.status_code == 422 and starttls.json()["code"] == "TIMBRA_SMTP_STARTTLS_UNSUPPORTED"
    async with _RejectingAuth() as port:
        denied = await client.http.post("/v1/issuers/me/smtp/test", headers=issuer.headers, json={**settings, "port": port})
    assert denied.status_code == 422 and denied.json()["code"] == "TIMBRA_SMTP_AUTH_FAILED", denied.text
    assert password not in denied.text

    # keeping the saved password when the form leaves it empty
    kept = await client.http.put("/v1/issuers/me/smtp", headers=issuer.headers, json={**settings, "password": None, "sender_name": "Otra"})
    assert kept.status_code == 200 and kept.json()["password_set"] is True
    async with httpx.AsyncClient(base_url=platform.url("issuer-profile"), timeout=30) as internal:
        assert (await internal.get(f"/internal/v1/issuers/{issuer.id}/smtp")).status_code == 403
        for_notifier = await internal.get(f"/internal/v1/issuers/{issuer.id}/smtp", headers={"x-timbra-internal": platform.config.internal_secret})
    assert for_notifier.json()["settings"] | {"password": None} == {**settings, "sender_name": "Otra", "password": None}
    assert for_notifier.json()["settings"]["password"] == password
    mongo = AsyncMongoClient(platform.mongodb_url, tz_aware=True)
    try:
        doc = await mongo.timbra_issuer_profile.issuers.find_one({"_id": issuer.id})
    finally:
        await mongo.close()
    assert password.encode() not in doc["smtp"]["password"]["ciphertext"] and password not in str(doc)
    projected = await wait_projection(platform, issuer.id, lambda d: d.get("smtp_configured") is True)
    assert password not in str(projected)
    assert (await client.http.delete("/v1/issuers/me/smtp", headers=issuer.headers)).json() == {"configured": False}
    await wait_projection(platform, issuer.id, lambda d: d.get("smtp_configured") is False)


# --------------------------------------------------------------------------- document types and series


async def test_disabled_document_types_are_refused_by_the_builder(client, platform) -> None:
    issuer = await ready_issuer(client)
    bad = await client.http.put("/v1/issuers/me/document-types", headers=issuer.headers, json={"enabled_types": ["X"]})
    assert bad.status_code == 422 and bad.json()["code"] == "TIMBRA_TYPE_UNKNOWN"
    none = await client.http.put("/v1/issuers/me/document-types", headers=issuer.headers, json={"enabled_types": []})
    assert none.status_code == 422 and none.json()["code"] == "TIMBRA_TYPE_REQUIRED"
    changed = await client.http.put("/v1/issuers/me/document-types", headers=issuer.headers, json={"enabled_types": ["E", "P"]})
    assert changed.json()["enabled_types"] == ["E", "P"]
    await wait_projection(platform, issuer.id, lambda d: d.get("enabled_types") == ["E", "P"])
    state = await final(client, issuer)
    assert state["status"] == "rejected" and state["errors"][0]["code"] == "TIMBRA_TYPE_DISABLED"
    assert "no está habilitado" in state["message"]

    await client.http.put("/v1/issuers/me/document-types", headers=issuer.headers, json={"enabled_types": ["I"]})
    await wait_projection(platform, issuer.id, lambda d: d.get("enabled_types") == ["I"])
    state = await final(client, issuer)
    assert state["errors"][0]["code"] != "TIMBRA_TYPE_DISABLED" and state["serie"] is None and state["folio"]


async def test_parallel_requests_never_share_a_serie_and_folio(client, platform) -> None:
    issuer = await ready_issuer(client)  # no credits: every invoice is built (and gets its folio), then stops at billing
    serie = "C" + secrets.token_hex(2).upper()
    assert (await client.http.put("/v1/issuers/me/series", headers=issuer.headers, json={"series": {"I": serie}})).status_code == 200
    bad = await client.http.put("/v1/issuers/me/series", headers=issuer.headers, json={"series": {"I": "A|B"}})
    assert bad.status_code == 422 and bad.json()["code"] == "TIMBRA_SERIE_INVALID"
    await wait_projection(platform, issuer.id, lambda d: d.get("series", {}).get("I") == serie)
    count = 40
    responses = await asyncio.gather(*(client.create_invoice(issuer) for _ in range(count)))
    ids = [r.json()["id"] for r in responses]
    states = await client.wait_final(issuer, ids, timeout=300)
    folios = [(s["serie"], s["folio"]) for s in states.values()]
    assert all(s["status"] == "rejected" for s in states.values()), {s["status"] for s in states.values()}
    assert len(set(folios)) == count, sorted(folios)
    assert sorted(int(f) for _, f in folios) == list(range(1, count + 1))
    assert {s for s, _ in folios} == {serie}
