"""The panel's HTTP edge on the real platform, without a browser: the session cookie's flags, CSRF on
every POST, tampered cookies, tenant isolation, staff users kept out, logout, and the static files."""

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from timbra_shared.devstack.scenario import Issuer, TimbraClient, sample_invoice

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PASSWORD = "Panel2026seguro"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)


async def user_for(client: TimbraClient, issuer: Issuer) -> str:
    username = "http_" + secrets.token_hex(4)
    response = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Luis Gómez", "email": f"{username}@example.com", "username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return username


@asynccontextmanager
async def logged_in(platform: Any, username: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client with a panel session, and that session's CSRF token."""
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60) as http:
        page = await http.get("/panel/entrar")
        response = await http.post("/panel/entrar", data={"csrf": csrf_of(page.text), "username": username, "password": PASSWORD, "next": ""})
        assert response.status_code == 303, response.text[:500]
        home = await http.get("/panel/", follow_redirects=True)
        yield http, csrf_of(home.text)


async def test_login_cookie_flags_and_csrf(platform, client: TimbraClient, issuer: Issuer) -> None:  # noqa: ANN001
    username = await user_for(client, issuer)
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60) as http:
        assert (await http.get("/panel")).headers["location"] == "/panel/"
        first = await http.get("/panel/", follow_redirects=True)
        assert first.url.path == "/panel/entrar" and "Iniciar sesión" in first.text
        token = csrf_of(first.text)
        refused = await http.post("/panel/entrar", data={"username": username, "password": PASSWORD})
        assert refused.status_code == 403 and "timbra_panel" not in refused.cookies
        forged = await http.post("/panel/entrar", data={"csrf": "0" * 40, "username": username, "password": PASSWORD})
        assert forged.status_code == 403
        wrong = await http.post("/panel/entrar", data={"csrf": token, "username": username, "password": "otra-clave-123"})
        assert wrong.status_code == 401 and "Usuario o contraseña incorrectos" in wrong.text
        ok = await http.post("/panel/entrar", data={"csrf": token, "username": username, "password": PASSWORD})
        assert ok.status_code == 303
        cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith("timbra_panel="))
        flags = cookie.lower()
        assert "httponly" in flags and "samesite=lax" in flags and "path=/panel" in flags and "secure" not in flags
        assert "tk_sess_" not in cookie, "the API session token travels encrypted"
    # behind a TLS proxy (X-Forwarded-Proto: https) both cookies are Secure; httpx keeps Secure
    # cookies away from http://, so the pre-login cookie is sent by hand
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60, headers={"X-Forwarded-Proto": "https"}) as http:
        page = await http.get("/panel/entrar")
        pre = next(h for h in page.headers.get_list("set-cookie") if h.startswith("timbra_pre="))
        assert "secure" in pre.lower()
        ok = await http.post("/panel/entrar", data={"csrf": csrf_of(page.text), "username": username, "password": PASSWORD}, headers={"Cookie": pre.split(";")[0]})
        assert ok.status_code == 303, ok.text[:300]
        assert "secure" in next(h for h in ok.headers.get_list("set-cookie") if h.startswith("timbra_panel=")).lower()


async def test_every_post_needs_the_sessions_csrf_token(platform, client: TimbraClient, issuer: Issuer) -> None:  # noqa: ANN001
    username = await user_for(client, issuer)
    async with logged_in(platform, username) as (http, token), logged_in(platform, username) as (_other, other_token):
        for path in ("/panel/configuracion/aviso", "/panel/clientes/nuevo", "/panel/facturas/nueva", "/panel/creditos/constancias", "/panel/salir"):
            assert (await http.post(path, data={"privacy_notice": "1"})).status_code == 403, path
            assert (await http.post(path, data={"csrf": other_token, "privacy_notice": "1"})).status_code == 403, f"{path}: another session's token"
        saved = await http.post("/panel/configuracion/aviso", data={"csrf": token, "privacy_notice": "1"})
        assert saved.status_code == 303
        htmx = await http.post("/panel/facturas/nueva/uso", headers={"HX-Request": "true", "X-CSRF-Token": token}, data={"use": "G03"})
        assert htmx.status_code == 200, "htmx requests send the token in a header"


async def test_tampered_or_foreign_cookie_is_no_session(platform, client: TimbraClient, issuer: Issuer) -> None:  # noqa: ANN001
    username = await user_for(client, issuer)
    async with logged_in(platform, username) as (http, _):
        value = http.cookies.get("timbra_panel", path="/panel")
        tampered = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
        async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60, cookies={"timbra_panel": tampered}) as forged:
            response = await forged.get("/panel/facturas")
            assert response.status_code == 303 and response.headers["location"].startswith("/panel/entrar")


async def test_another_issuers_invoice_is_not_found(platform, client: TimbraClient, issuer: Issuer) -> None:  # noqa: ANN001
    other = await client.onboard(credits=0)
    created = await client.create_invoice(other, sample_invoice())
    assert created.status_code == 202
    foreign = created.json()["id"]
    username = await user_for(client, issuer)
    async with logged_in(platform, username) as (http, _):
        for path in (f"/panel/facturas/{foreign}", f"/panel/facturas/{foreign}/xml", f"/panel/facturas/{foreign}/pdf"):
            response = await http.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert foreign not in response.text or "no existe" in response.text.lower()


async def test_staff_users_are_sent_to_the_console(platform, client: TimbraClient) -> None:  # noqa: ANN001
    username = "staff_" + secrets.token_hex(4)
    created = await client.http.post("/v1/staff/users", headers=client.admin, json={"name": "Operadora", "email": f"{username}@timbra.example", "username": username, "password": PASSWORD, "role": "operator"})
    assert created.status_code == 201, created.text
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60) as http:
        page = await http.get("/panel/entrar")
        response = await http.post("/panel/entrar", data={"csrf": csrf_of(page.text), "username": username, "password": PASSWORD})
        assert response.status_code == 401 and "/console" in response.text and "timbra_panel" not in response.cookies


async def test_logout_ends_the_session(platform, client: TimbraClient, issuer: Issuer) -> None:  # noqa: ANN001
    username = await user_for(client, issuer)
    async with logged_in(platform, username) as (http, token):
        out = await http.post("/panel/salir", data={"csrf": token})
        assert out.status_code == 303 and out.headers["location"] == "/panel/entrar"
        assert "timbra_panel" not in http.cookies
        assert (await http.get("/panel/facturas")).headers["location"].startswith("/panel/entrar")


async def test_static_files_are_served_locally(platform) -> None:  # noqa: ANN001
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=30) as http:
        htmx = await http.get("/static/htmx.min.js")
        assert htmx.status_code == 200 and "javascript" in htmx.headers["content-type"] and "htmx" in htmx.text[:200]
        css = await http.get("/static/timbra.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        page = await http.get("/panel/entrar")
        assert "cdn" not in page.text.lower() and "/static/htmx.min.js" in page.text
        assert (await http.get("/")).headers["location"] == "/panel/"
