"""The self-invoicing portal's public API (``/v1/portal/{slug}``) and its pages over plain HTTP,
against the running platform: ticket lookup with each refusal, an invoice through the pipeline,
receipts and isolation, customer accounts, password recovery through the SMTP sink, the lookup
throttle, CSRF and cookies. The real browser drives the same in tests/test_portal_browser.py."""

import asyncio
import re
import secrets
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from lxml import etree

from timbra_shared.devstack.scenario import Issuer, TimbraClient

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

MX = ZoneInfo("America/Mexico_City")
CUSTOMER = {"rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO DE CUAUTITLAN IZCALLI", "tax_regime": "603", "zip": "54700", "use": "G03"}
PRODUCT = {"description": "Comida corrida", "product_key": "90101501", "unit_key": "E48", "price": "100.00", "taxes": [{"type": "IVA", "rate": "0.16"}]}


def rfc_fisica() -> str:
    letters = "".join(secrets.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(4))
    return f"{letters}{secrets.randbelow(50) + 50:02d}0{secrets.randbelow(9) + 1}1{secrets.randbelow(9) + 1}{secrets.choice('ABC')}{secrets.choice('XYZ')}{secrets.randbelow(10)}"


async def _ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201, 202), f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:500]}"
    return response.json()


async def portal_issuer(client: TimbraClient, name: str) -> Issuer:
    issuer = await client.onboard(legal_name=name, credits=200)
    deadline = time.monotonic() + 30  # the catalog learns the slug from issuer.profile
    while (await client.http.get(f"/v1/portal/{issuer.slug}")).status_code != 200:
        assert time.monotonic() < deadline, "the catalog never projected the issuer's slug"
        await asyncio.sleep(0.3)
    return issuer


async def branch_of(client: TimbraClient, issuer: Issuer, name: str = "Centro") -> dict[str, Any]:
    return await _ok(await client.http.post("/v1/branches", headers=issuer.headers, json={"name": name, "zip": "42501"}))


async def ticket_of(client: TimbraClient, issuer: Issuer, branch: dict[str, Any], *, when: datetime | None = None, quantity: str = "1") -> dict[str, Any]:
    total = f"{116 * int(quantity)}.00"
    body = {"branch_id": branch["id"], "order_number": f"O-{secrets.randbelow(10**6)}", "ticket_number": f"T-{secrets.token_hex(4).upper()}",
            "date": (when or datetime.now(MX)).replace(tzinfo=None).isoformat(timespec="seconds"), "total": total, "payment_form": "04",
            "items": [{"product": PRODUCT, "quantity": quantity}]}
    return await _ok(await client.http.post("/v1/tickets", headers=issuer.headers, json=body))


def lookup(branch: dict[str, Any], ticket: dict[str, Any], customer: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    body = {"branch_id": branch["id"], "order_number": ticket["order_number"], "ticket_number": ticket["ticket_number"], "total": ticket["total"],
            "payment_form": "28", "customer": {**(customer or CUSTOMER), "email": "cliente.portal@example.com"}}
    body.update(changes)
    return body


async def until_final(http: httpx.AsyncClient, slug: str, invoice_id: str, headers: dict[str, str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = await _ok(await http.get(f"/v1/portal/{slug}/invoices/{invoice_id}", headers=headers))
        if state["status"] in ("stamped", "failed", "waiting_sat") or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.4)


@pytest.mark.timeout(900)  # the pipeline and scrypt on a shared 2-core machine
async def test_portal_invoice_errors_downloads_and_isolation(client: TimbraClient, platform) -> None:  # noqa: ANN001
    issuer = await portal_issuer(client, "ABARROTES PORTAL HTTP")
    other = await portal_issuer(client, "OTRO COMERCIO PORTAL")
    branch = await branch_of(client, issuer)
    ticket = await ticket_of(client, issuer, branch)
    http, slug = client.http, issuer.slug

    info = await _ok(await http.get(f"/v1/portal/{slug}"))
    assert [b["id"] for b in info["branches"]] == [branch["id"]] and info["legal_name"] == "ABARROTES PORTAL HTTP"
    assert (await http.get("/v1/portal/no-existe-este-portal")).status_code == 404

    unknown = await _ok(await http.get(f"/v1/portal/{slug}/customers/{CUSTOMER['rfc']}"))
    assert unknown == {"known": False, "rfc": CUSTOMER["rfc"]}
    bad_rfc = await http.get(f"/v1/portal/{slug}/customers/XYZ")
    assert bad_rfc.status_code == 422 and bad_rfc.json()["code"] == "CFDI40143"

    # a new customer's fiscal data are validated with coded messages next to their fields
    invalid = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket, {**CUSTOMER, "tax_regime": "999", "zip": "00001"}))
    assert invalid.status_code == 422
    assert {(e["path"], e["code"]) for e in invalid.json()["errors"]} >= {("tax_regime", "CFDI40157"), ("zip", "TIMBRA_ZIP_UNKNOWN")}

    not_found = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket, ticket_number="T-NOPE"))
    assert (not_found.status_code, not_found.json()["code"]) == (404, "TIMBRA_TICKET_NOT_FOUND"), not_found.text
    assert "No encontramos un ticket" in not_found.json()["message"]
    wrong_order = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket, order_number="O-WRONG"))
    assert wrong_order.json()["code"] == "TIMBRA_TICKET_NOT_FOUND"  # the order number cannot be probed apart
    mismatch = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket, total="115.99"))
    assert (mismatch.status_code, mismatch.json()["code"]) == (422, "TIMBRA_TICKET_TOTAL_MISMATCH")
    assert "El total no coincide" in mismatch.json()["message"]

    old = await ticket_of(client, issuer, branch, when=datetime.now(MX) - timedelta(days=70))
    closed = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, old))
    assert (closed.status_code, closed.json()["code"]) == (422, "TIMBRA_TICKET_WINDOW_CLOSED"), closed.text
    assert "El plazo para facturar este ticket terminó" in closed.json()["message"]

    # the invoice: "1,160"-style totals are accepted as printed
    created = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket, total=f"${ticket['total']}"))
    assert created.status_code == 202, created.text
    invoice, receipt = created.json(), created.json()["receipt"]
    mine = {"X-Portal-Receipt": receipt}
    again = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket))
    assert (again.status_code, again.json()["id"]) == (200, invoice["id"])  # a double click is the same invoice
    taken = await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket, {**CUSTOMER, "rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE", "tax_regime": "601", "zip": "42501"}))
    assert (taken.status_code, taken.json()["code"]) == (409, "TIMBRA_TICKET_ALREADY_INVOICED")

    state = await until_final(http, slug, invoice["id"], mine)
    assert state["status"] == "stamped" and state["uuid"], state
    xml = await http.get(f"/v1/portal/{slug}/invoices/{invoice['id']}/xml", headers=mine)
    assert xml.status_code == 200
    root = etree.fromstring(xml.content)
    receptor = root.find("{http://www.sat.gob.mx/cfd/4}Receptor")
    assert (receptor.get("Rfc"), receptor.get("UsoCFDI"), root.get("Total"), root.get("FormaPago")) == (CUSTOMER["rfc"], "G03", "116.00", "28")
    pdf = await http.get(f"/v1/portal/{slug}/invoices/{invoice['id']}/pdf", headers=mine)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    # nobody else sees it: no receipt, a forged one, another issuer's portal
    for path, headers in ((f"/v1/portal/{slug}/invoices/{invoice['id']}", {}), (f"/v1/portal/{slug}/invoices/{invoice['id']}/xml", {"X-Portal-Receipt": "0" * 40}),
                          (f"/v1/portal/{other.slug}/invoices/{invoice['id']}", mine), (f"/v1/portal/{other.slug}/invoices/{invoice['id']}/pdf", mine)):
        assert (await http.get(path, headers=headers)).status_code == 404, path

    sent = await _ok(await http.post(f"/v1/portal/{slug}/invoices/{invoice['id']}/email", headers=mine, json={"email": "otra.copia@example.com"}))
    assert sent["sent_to"] == "otra.copia@example.com"
    sink = platform.url("smtp-sink") if hasattr(platform, "url") else None
    assert sink
    deadline = time.monotonic() + 30
    while not (mails := (await http.get(f"{sink}/api/messages", params={"to": "otra.copia@example.com"})).json()):
        assert time.monotonic() < deadline, "the resent invoice never reached the SMTP sink"
        await asyncio.sleep(0.5)
    assert {a["filename"].rsplit(".", 1)[-1] for a in mails[0]["attachments"]} >= {"xml", "pdf"}

    # the ticket is invoiced now; the RFC is known (prefill shows the data, the e-mail masked)
    deadline = time.monotonic() + 20
    while (again := await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, ticket, {**CUSTOMER, "rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE", "tax_regime": "601", "zip": "42501"}))).json().get("code") != "TIMBRA_TICKET_ALREADY_INVOICED":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)
    known = await _ok(await http.get(f"/v1/portal/{slug}/customers/{CUSTOMER['rfc']}"))
    assert known["known"] and known["legal_name"] == CUSTOMER["legal_name"] and known["email_hint"] == "c***l@example.com"
    assert (await _ok(await http.get(f"/v1/portal/{other.slug}/customers/{CUSTOMER['rfc']}")))["known"] is False


@pytest.mark.timeout(900)  # the pipeline and scrypt on a shared 2-core machine
async def test_portal_waits_for_sat_when_the_pac_is_down(client: TimbraClient, platform) -> None:  # noqa: ANN001
    issuer = await portal_issuer(client, "CAFETERIA SAT CAIDO")
    branch = await branch_of(client, issuer)
    ticket = await ticket_of(client, issuer, branch)
    async with httpx.AsyncClient(base_url=platform.url("sandbox-pac"), timeout=10) as pac:
        await pac.put("/admin/faults", json={"mode": "outage"})  # 503 "SAT no disponible"
        try:
            created = await _ok(await client.http.post(f"/v1/portal/{issuer.slug}/invoices", json=lookup(branch, ticket, customer={**CUSTOMER, "rfc": rfc_fisica(), "legal_name": "ROSA MARIA LOPEZ", "tax_regime": "612", "zip": "06000"})))
            state = await until_final(client.http, issuer.slug, created["id"], {"X-Portal-Receipt": created["receipt"]})
            assert state["status"] == "waiting_sat", state
            assert "se generará en cuanto el SAT responda" in state["message"] and "cliente.portal@example.com" in state["message"]
        finally:
            await pac.put("/admin/faults", json={"mode": "none"})
    state = await until_final(client.http, issuer.slug, created["id"], {"X-Portal-Receipt": created["receipt"]}, timeout=120)
    deadline = time.monotonic() + 120
    while state["status"] in ("waiting_sat", "processing") and time.monotonic() < deadline:  # the stamping service retries with back-off
        await asyncio.sleep(1)
        state = await _ok(await client.http.get(f"/v1/portal/{issuer.slug}/invoices/{created['id']}", headers={"X-Portal-Receipt": created["receipt"]}))
    assert state["status"] == "stamped", state


def captcha_answer(svg: str) -> str:
    """Reads the arithmetic of the portal's captcha (its weakness, by design: it only stops blind posting)."""
    question = "".join(re.findall(r">([^<])</text>", svg)).rstrip("=")
    a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)", question).groups()  # type: ignore[union-attr]
    return str(int(a) + int(b) if op == "+" else int(a) - int(b))


@pytest.mark.timeout(900)  # the pipeline and scrypt on a shared 2-core machine
async def test_customer_accounts_recovery_and_isolation(client: TimbraClient, platform) -> None:  # noqa: ANN001
    issuer = await portal_issuer(client, "FARMACIA CUENTAS")
    branch = await branch_of(client, issuer, "Norte")
    second = await branch_of(client, issuer, "Sur")
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=180) as http:  # scrypt on a loaded 2-core box takes seconds
        await _accounts(client, platform, http, issuer, branch, second)


async def _accounts(client: TimbraClient, platform, http: httpx.AsyncClient, issuer: Issuer, branch: dict[str, Any], second: dict[str, Any]) -> None:  # noqa: ANN001
    slug = issuer.slug
    rfc, email = rfc_fisica(), f"cliente.{secrets.token_hex(3)}@example.com"
    person = {"rfc": rfc, "legal_name": "JUAN PEREZ GARCIA", "tax_regime": "612", "zip": "06000", "use": "G03"}
    receipts = []
    for b in (branch, second):
        ticket = await ticket_of(client, issuer, b)
        created = await _ok(await http.post(f"/v1/portal/{slug}/invoices", json={**lookup(b, ticket, person), "customer": {**person, "email": email}}))
        receipts.append(created)
    # an invoice for someone else at the same issuer
    stranger_ticket = await ticket_of(client, issuer, branch)
    stranger = await _ok(await http.post(f"/v1/portal/{slug}/invoices", json=lookup(branch, stranger_ticket)))
    for created in [*receipts, stranger]:
        assert (await until_final(http, slug, created["id"], {"X-Portal-Receipt": created["receipt"]}))["status"] == "stamped"

    password = "Cuenta2026segura"
    refused = await http.post(f"/v1/portal/{slug}/accounts", json={"rfc": rfc, "email": "otro@example.com", "password": password, "password_confirmation": password})
    assert (refused.status_code, refused.json()["code"]) == (422, "TIMBRA_PORTAL_EMAIL_NOT_REGISTERED")
    weak = await http.post(f"/v1/portal/{slug}/accounts", json={"rfc": rfc, "email": email, "password": "corta", "password_confirmation": "corta"})
    assert weak.status_code == 422 and weak.json()["errors"][0]["code"] == "TIMBRA_PASSWORD_WEAK"
    account = await _ok(await http.post(f"/v1/portal/{slug}/accounts", json={"rfc": rfc.lower(), "email": email.upper(), "password": password, "password_confirmation": password}))
    assert account["rfc"] == rfc and account["token"].startswith("tp_")
    assert (await http.post(f"/v1/portal/{slug}/accounts", json={"rfc": rfc, "email": email, "password": password})).json()["code"] == "TIMBRA_PORTAL_ACCOUNT_EXISTS"

    wrong = await http.post(f"/v1/portal/{slug}/sessions", json={"rfc": rfc, "password": "NoEsLaClave123"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "TIMBRA_PORTAL_LOGIN_FAILED")
    session = {"X-Portal-Session": (await _ok(await http.post(f"/v1/portal/{slug}/sessions", json={"rfc": rfc, "password": password})))["token"]}
    # another issuer's portal does not know this session
    other = await portal_issuer(client, "OTRA FARMACIA")
    assert (await http.get(f"/v1/portal/{other.slug}/me", headers=session)).status_code == 401

    deadline = time.monotonic() + 20
    while (listing := await _ok(await http.get(f"/v1/portal/{slug}/me/invoices", headers=session)))["total_results"] < 2:
        assert time.monotonic() < deadline, listing
        await asyncio.sleep(0.3)
    assert {i["id"] for i in listing["data"]} == {r["id"] for r in receipts}  # not the stranger's
    assert {i["branch_name"] for i in listing["data"]} == {"Norte", "Sur"}
    only_south = await _ok(await http.get(f"/v1/portal/{slug}/me/invoices", headers=session, params={"branch_id": second["id"]}))
    assert [i["id"] for i in only_south["data"]] == [receipts[1]["id"]]
    by_uuid = await _ok(await http.get(f"/v1/portal/{slug}/me/invoices", headers=session, params={"q": listing["data"][0]["uuid"].lower()}))
    assert [i["id"] for i in by_uuid["data"]] == [listing["data"][0]["id"]]
    tomorrow = (datetime.now(MX) + timedelta(days=2)).date().isoformat()
    assert (await _ok(await http.get(f"/v1/portal/{slug}/me/invoices", headers=session, params={"from": tomorrow})))["total_results"] == 0
    assert (await http.get(f"/v1/portal/{slug}/invoices/{receipts[0]['id']}/xml", headers=session)).status_code == 200
    assert (await http.get(f"/v1/portal/{slug}/invoices/{stranger['id']}/xml", headers=session)).status_code == 404

    # fiscal data: coded errors, then saved on the catalog's customer
    bad = await http.put(f"/v1/portal/{slug}/me", headers=session, json={"legal_name": "JUAN PEREZ GARCIA", "tax_regime": "601", "zip": "06000", "use": "G03"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["code"] == "CFDI40158"
    saved = await _ok(await http.put(f"/v1/portal/{slug}/me", headers=session, json={"legal_name": "JUAN PÉREZ GARCÍA", "tax_regime": "626", "zip": "06700", "use": "G01"}))
    assert (saved["legal_name"], saved["tax_regime"], saved["zip"], saved["use"]) == ("JUAN PÉREZ GARCÍA", "626", "06700", "G01")
    customers = await _ok(await http.get("/v1/customers", headers=issuer.headers, params={"q": rfc}))
    assert customers["data"][0]["tax_regime"] == "626"

    # recovery: a wrong captcha is refused; a right one mails a temporary password
    captcha = await _ok(await http.get(f"/v1/portal/{slug}/captcha"))
    wrong_captcha = await http.post(f"/v1/portal/{slug}/password-recovery", json={"rfc": rfc, "email": email, "captcha_id": captcha["captcha_id"], "captcha_answer": "999"})
    assert (wrong_captcha.status_code, wrong_captcha.json()["code"]) == (422, "TIMBRA_CAPTCHA_INVALID")
    reused = await http.post(f"/v1/portal/{slug}/password-recovery", json={"rfc": rfc, "email": email, "captcha_id": captcha["captcha_id"], "captcha_answer": captcha_answer(captcha["svg"])})
    assert reused.status_code == 422  # a captcha is good for one try
    captcha = await _ok(await http.get(f"/v1/portal/{slug}/captcha"))
    done = await _ok(await http.post(f"/v1/portal/{slug}/password-recovery", json={"rfc": rfc, "email": email, "captcha_id": captcha["captcha_id"], "captcha_answer": captcha_answer(captcha["svg"])}))
    assert "te enviamos una contraseña temporal" in done["message"]
    sink = platform.url("smtp-sink")
    deadline = time.monotonic() + 30
    while not (mails := (await http.get(f"{sink}/api/messages", params={"to": email, "subject": "contraseña temporal"})).json()):
        assert time.monotonic() < deadline, "no recovery e-mail at the sink"
        await asyncio.sleep(0.5)
    text = (await http.get(f"{sink}/api/messages/{mails[0]['id']}")).json()["text"]
    temporary = re.search(r"contraseña temporal es: (\S+)", text).group(1)  # type: ignore[union-attr]
    assert (await http.get(f"/v1/portal/{slug}/me", headers=session)).status_code == 401  # recovery ended the old sessions
    assert (await http.post(f"/v1/portal/{slug}/sessions", json={"rfc": rfc, "password": password})).status_code == 401
    temp = await _ok(await http.post(f"/v1/portal/{slug}/sessions", json={"rfc": rfc, "password": temporary}))
    assert temp["must_change"] is True
    forced = {"X-Portal-Session": temp["token"]}
    blocked = await http.get(f"/v1/portal/{slug}/me/invoices", headers=forced)
    assert (blocked.status_code, blocked.json()["code"]) == (403, "TIMBRA_PORTAL_PASSWORD_CHANGE_REQUIRED")
    new_password = "NuevaClave2027x"
    await _ok(await http.put(f"/v1/portal/{slug}/me/password", headers=forced, json={"current_password": temporary, "password": new_password, "password_confirmation": new_password}))
    assert (await http.get(f"/v1/portal/{slug}/me/invoices", headers=forced)).status_code == 200
    assert (await http.post(f"/v1/portal/{slug}/sessions", json={"rfc": rfc, "password": new_password})).status_code == 201
    # an unknown RFC gets the same answer (no account enumeration) and no mail
    captcha = await _ok(await http.get(f"/v1/portal/{slug}/captcha"))
    same = await _ok(await http.post(f"/v1/portal/{slug}/password-recovery", json={"rfc": rfc_fisica(), "email": email, "captcha_id": captcha["captcha_id"], "captcha_answer": captcha_answer(captcha["svg"])}))
    assert same["message"] == done["message"]


async def test_burst_of_wrong_lookups_is_throttled_per_address_and_issuer(client: TimbraClient) -> None:
    issuer = await portal_issuer(client, "TIENDA ENUMERACION")
    calm = await portal_issuer(client, "TIENDA TRANQUILA")
    branch, calm_branch = await branch_of(client, issuer), await branch_of(client, calm)
    ticket, calm_ticket = await ticket_of(client, issuer, branch), await ticket_of(client, calm, calm_branch)
    codes = []
    for n in range(12):
        response = await client.http.post(f"/v1/portal/{issuer.slug}/invoices", json=lookup(branch, ticket, ticket_number=f"T-GUESS-{n}"))
        codes.append(response.json()["code"])
    assert codes[:8] == ["TIMBRA_TICKET_NOT_FOUND"] * 8 and set(codes[8:]) == {"TIMBRA_PORTAL_RATE_LIMITED"}, codes
    limited = await client.http.post(f"/v1/portal/{issuer.slug}/invoices", json=lookup(branch, ticket))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 60
    assert "Demasiadas búsquedas de tickets" in limited.json()["message"]
    # another issuer's portal is not affected, nor is the same address's right lookup there
    fine = await client.http.post(f"/v1/portal/{calm.slug}/invoices", json=lookup(calm_branch, calm_ticket))
    assert fine.status_code == 202, fine.text
    # a client cannot pick its own address: the ingress overwrites x-timbra-client-ip without the proof
    spoofed = await client.http.post(f"/v1/portal/{issuer.slug}/invoices", json=lookup(branch, ticket), headers={"x-timbra-client-ip": "203.0.113.9", "x-timbra-client-proof": "nope"})
    assert spoofed.status_code == 429


async def test_portal_pages_cookies_and_csrf(client: TimbraClient, platform) -> None:  # noqa: ANN001
    issuer = await portal_issuer(client, "PAGINAS PORTAL")
    branch = await branch_of(client, issuer, "Poniente")
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60) as web:
        home = await web.get(f"/portal/{issuer.slug}/")
        assert (await web.get("/portal/no-existe-este-portal/")).status_code == 404
        assert home.status_code == 200 and "Poniente" in home.text and "PAGINAS PORTAL" in home.text
        ticket_page = await web.get(f"/portal/{issuer.slug}/ticket", params={"sucursal": branch["id"], "rfc": "MCI7306249Y1"})
        assert ticket_page.status_code == 200 and 'id="help-total"' in ticket_page.text
        pre = next(c for c in home.headers.get_list("set-cookie") if c.startswith("timbra_pre="))
        assert "HttpOnly" in pre and "Path=/portal" in pre and "SameSite=lax" in pre
        token = re.search(r'name="csrf" value="([^"]+)"', ticket_page.text).group(1)  # type: ignore[union-attr]
        form = {"branch_id": branch["id"], "rfc": "MCI7306249Y1", "legal_name": "X", "tax_regime": "603", "zip": "54700", "use": "G03", "email": "a@example.com",
                "order_number": "1", "ticket_number": "1", "total": "1"}
        refused = await web.post(f"/portal/{issuer.slug}/facturar", data=form)
        assert refused.status_code == 403 and "El formulario venció" in refused.text
        forged = await web.post(f"/portal/{issuer.slug}/facturar", data={**form, "csrf": "0" * 40})
        assert forged.status_code == 403
        answered = await web.post(f"/portal/{issuer.slug}/facturar", data={**form, "csrf": token})
        assert answered.status_code == 404 and "TIMBRA_TICKET_NOT_FOUND" in answered.text  # the form came back with the message
        # a receipt cookie from one browser is useless in another, and HTTPS makes the cookies Secure
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60) as fresh:
        https = await fresh.get(f"/portal/{issuer.slug}/entrar", headers={"X-Forwarded-Proto": "https"})
        cookies = https.headers.get_list("set-cookie")
        assert cookies and all("Secure" in c for c in cookies), cookies
