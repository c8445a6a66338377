"""The SMTP "test connection" against real in-process SMTP servers, and the vault's rotation
helpers (finding every sealed blob in a document; previous keys from the environment)."""

import asyncio
import base64
import os
import socket

import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from timbra_issuer_profile.adapters.smtp_probe import SmtpTarget, probe_async
from timbra_issuer_profile.adapters.vault import Vault, blob_paths, parse_previous_keys, vault_from_env


class Server:
    def __init__(self, accept: bool, *, auth: bool = True) -> None:
        self.accept, self.auth, self.logins = accept, auth, []

    async def __aenter__(self) -> int:
        loop = asyncio.get_running_loop()

        def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
            self.logins.append((auth_data.login, auth_data.password))
            return AuthResult(success=self.accept, handled=False)

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802
                return "250 OK"

        kwargs = {"auth_require_tls": False, "authenticator": authenticator} if self.auth else {}
        self.server = await loop.create_server(lambda: SMTP(Handler(), loop=loop, **kwargs), "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_login_accepted():
    server = Server(accept=True)
    async with server as port:
        result = await probe_async(SmtpTarget("127.0.0.1", port, "none", "facturas@empresa.mx", "s3creta"))
    assert (result.ok, result.code) == (True, "ok")
    assert server.logins == [(b"facturas@empresa.mx", b"s3creta")]


async def test_login_refused_and_the_password_is_not_echoed():
    async with Server(accept=False) as port:
        result = await probe_async(SmtpTarget("127.0.0.1", port, "none", "facturas@empresa.mx", "s3creta"))
    assert (result.ok, result.code) == (False, "TIMBRA_SMTP_AUTH_FAILED")
    assert "s3creta" not in result.message and "rechazó" in result.message


async def test_server_without_auth_or_starttls():
    async with Server(accept=True, auth=False) as port:
        no_auth = await probe_async(SmtpTarget("127.0.0.1", port, "none", "user", "pw"))
        no_tls = await probe_async(SmtpTarget("127.0.0.1", port, "starttls", "user", "pw"))
        anonymous = await probe_async(SmtpTarget("127.0.0.1", port, "none", None, None))
    assert no_auth.code == "TIMBRA_SMTP_AUTH_UNSUPPORTED"
    assert no_tls.code == "TIMBRA_SMTP_STARTTLS_UNSUPPORTED"
    assert anonymous.ok


async def test_connection_refused_unknown_host_and_ssl_to_a_plain_server():
    assert (await probe_async(SmtpTarget("127.0.0.1", _free_port(), "none", "u", "p"))).code == "TIMBRA_SMTP_CONNECT_FAILED"
    assert (await probe_async(SmtpTarget("no-existe.invalid", 25, "none", "u", "p"))).code == "TIMBRA_SMTP_HOST_UNKNOWN"
    async with Server(accept=True) as port:
        result = await probe_async(SmtpTarget("127.0.0.1", port, "ssl", "u", "p", timeout=3))
    assert not result.ok and result.code in ("TIMBRA_SMTP_TLS_FAILED", "TIMBRA_SMTP_CONNECT_FAILED", "TIMBRA_SMTP_TIMEOUT")


def test_blob_paths_finds_nested_secrets_only():
    vault = Vault(os.urandom(32))
    doc = {"_id": "iss_1", "smtp": {"host": "x", "password": vault.seal(b"pw", context="c")}, "key": vault.seal(b"k", context="k"), "other": {"a": {"b": 1}}}
    assert [p for p, _ in blob_paths(doc)] == ["smtp.password", "key"]


def test_previous_keys_from_the_environment():
    k1, k2, k3 = (os.urandom(32) for _ in range(3))
    assert parse_previous_keys(None) == () and parse_previous_keys("") == ()
    assert parse_previous_keys(f"{base64.b64encode(k2).decode()}, {base64.b64encode(k3).decode()}") == (k2, k3)
    old = Vault(k2).seal(b"secret", context="c")
    assert vault_from_env(base64.b64encode(k1).decode(), base64.b64encode(k2).decode()).open(old) == b"secret"
    with pytest.raises(ValueError, match="32 bytes"):
        parse_previous_keys("bm90LWEta2V5")
