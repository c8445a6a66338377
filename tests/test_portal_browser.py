"""The self-invoicing portal (seed 004) in a real headless Chromium against the running platform:
the flow (sucursal → RFC → ticket with its help icons → método de pago → generar → XML, PDF and
"enviar por correo"), every refusal a customer can meet (ticket not found, total that does not
match, a ticket already invoiced, a closed invoicing window, fiscal data that SAT would refuse, the
SAT/PAC being down), the customer panel (register, list, filter, download, edit fiscal data),
password recovery with the captcha and the temporary password read from the SMTP sink, a burst of
wrong lookups being rate-limited, and a phone screen.

Screenshots of every step go to ``$TIMBRA_ARTIFACTS_DIR/portal/<test>/`` (default
``test-artifacts/portal``). Without chromium these tests fail with the command that installs it;
``TIMBRA_ALLOW_NO_BROWSER=1`` turns that into a skip with the same reason."""

import asyncio
import re
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from lxml import etree

from timbra_shared.devstack.scenario import Issuer, TimbraClient
from timbra_shared.web.testing import Browser, artifacts_dir, browser_for_test

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

REPO = Path(__file__).resolve().parents[1]
WHAT = "the portal's browser tests"
MX = ZoneInfo("America/Mexico_City")
CFDI = "{http://www.sat.gob.mx/cfd/4}"
PRODUCT = {"description": "Comida corrida", "product_key": "90101501", "unit_key": "E48", "price": "100.00", "taxes": [{"type": "IVA", "rate": "0.16"}]}


@pytest.fixture(scope="module")
def shots() -> Path:
    return artifacts_dir(REPO, "portal")


@pytest.fixture
def browser(platform, shots: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:  # noqa: ANN001
    yield from browser_for_test(platform.url("ingress"), shots / request.node.name, what=WHAT)


@pytest.fixture
def phone(platform, shots: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:  # noqa: ANN001
    yield from browser_for_test(platform.url("ingress"), shots / request.node.name, what=WHAT, phone=True)


def rfc_fisica() -> str:
    letters = "".join(secrets.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(4))
    return f"{letters}{secrets.randbelow(50) + 50:02d}0{secrets.randbelow(9) + 1}1{secrets.randbelow(9) + 1}{secrets.choice('ABC')}{secrets.choice('XYZ')}{secrets.randbelow(10)}"


async def _ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201, 202), f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:400]}"
    return response.json()


async def shop(client: TimbraClient, name: str, branches: tuple[str, ...] = ("Centro",)) -> tuple[Issuer, list[dict[str, Any]]]:
    """An issuer with branches, once the catalog has learned its portal slug."""
    issuer = await client.onboard(legal_name=name, credits=200)
    made = [await _ok(await client.http.post("/v1/branches", headers=issuer.headers, json={"name": b, "zip": "42501"})) for b in branches]
    deadline = time.monotonic() + 30
    while (await client.http.get(f"/v1/portal/{issuer.slug}")).status_code != 200:
        assert time.monotonic() < deadline, "the catalog never projected the issuer's slug"
        await asyncio.sleep(0.3)
    return issuer, made


async def ticket(client: TimbraClient, issuer: Issuer, branch: dict[str, Any], *, days_ago: int = 0) -> dict[str, Any]:
    body = {"branch_id": branch["id"], "order_number": f"{secrets.randbelow(10**6):06d}", "ticket_number": f"T-{secrets.token_hex(3).upper()}",
            "date": (datetime.now(MX) - timedelta(days=days_ago)).replace(tzinfo=None).isoformat(timespec="seconds"), "total": "116.00", "payment_form": "01",
            "items": [{"product": PRODUCT}]}
    return await _ok(await client.http.post("/v1/tickets", headers=issuer.headers, json=body))


async def mail_to(platform, http: httpx.AsyncClient, to: str, subject: str = "", timeout: float = 60) -> dict[str, Any]:  # noqa: ANN001
    sink = platform.url("smtp-sink")
    deadline = time.monotonic() + timeout
    while True:
        mails = (await http.get(f"{sink}/api/messages", params={"to": to, "subject": subject})).json()
        if mails:
            return (await http.get(f"{sink}/api/messages/{mails[0]['id']}")).json()
        assert time.monotonic() < deadline, f"no e-mail to {to} ({subject}) at the SMTP sink"
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- the flow and its refusals

def start_flow(b: Browser, slug: str, branch: dict[str, Any], rfc: str) -> None:
    b.open(f"/portal/{slug}/")
    b.select("#f-sucursal", branch["id"])
    b.screenshot("1-sucursal")
    b.click("#siguiente")
    b.wait_url("/rfc")
    b.fill("#f-rfc", rfc)
    b.screenshot("2-rfc")
    b.click("#siguiente")
    b.wait_url("/ticket")


def fill_ticket(b: Browser, tk: dict[str, Any], *, ticket_number: str | None = None, total: str | None = None) -> None:
    b.fill("#f-order_number", tk["order_number"])
    b.fill("#f-ticket_number", ticket_number or tk["ticket_number"])
    b.fill("#f-total", total or tk["total"])


def submit(b: Browser, css: str) -> None:
    """Click a button that posts a form and wait for the new page (the old one is marked first)."""
    b.driver.execute_script("document.documentElement.dataset.old = '1'")
    b.click(css)
    b.until(lambda: b.driver.execute_script("return document.readyState === 'complete' && !document.documentElement.dataset.old"), f"the page after {css}", timeout=90)


def refusal(b: Browser) -> tuple[str, str]:
    element = b.find("#portal-error")
    return element.get_attribute("data-code"), element.text


@pytest.mark.timeout(900)  # a long journey on a shared 2-core machine
async def test_portal_flow_with_every_refusal(client: TimbraClient, platform, browser: Browser) -> None:  # noqa: ANN001
    issuer, (branch,) = await shop(client, "TAQUERIA EL PORTAL")
    good, closed = await ticket(client, issuer, branch), await ticket(client, issuer, branch, days_ago=70)
    b, rfc, email = browser, rfc_fisica(), f"cliente.{secrets.token_hex(3)}@example.com"

    start_flow(b, issuer.slug, branch, rfc)
    assert b.exists("#new-customer")  # a new RFC asks for the fiscal data
    # the help icons show where each number is printed on the ticket
    for which in ("order", "ticket", "total"):
        b.click(f"#help-{which} summary")
        assert b.find(f"#help-{which} svg").is_displayed()
        b.screenshot(f"3-ayuda-{which}")
        b.click(f"#help-{which} summary")

    # fiscal data SAT would refuse: the message next to the field
    b.fill("#f-legal_name", "MARIA LOPEZ HERNANDEZ")
    b.select("#f-tax_regime", "601")  # persona moral's régimen for a persona física's RFC
    b.fill("#f-zip", "00001")
    b.select("#f-use", "G03")
    b.fill("#f-email", email)
    fill_ticket(b, good)
    submit(b, "#generar")
    b.wait_text("[data-error-for='tax_regime']", "CFDI40158")
    assert "TIMBRA_ZIP_UNKNOWN" in b.text("[data-error-for='zip']")
    b.screenshot("4-datos-fiscales-invalidos")
    b.select("#f-tax_regime", "612")
    b.fill("#f-zip", "06000")

    fill_ticket(b, good, ticket_number="T-NO-EXISTE")
    submit(b, "#generar")
    code, text = refusal(b)
    assert code == "TIMBRA_TICKET_NOT_FOUND" and "No encontramos un ticket" in text
    b.screenshot("5-ticket-no-encontrado")

    fill_ticket(b, good, total="115.00")
    submit(b, "#generar")
    b.until(lambda: refusal(b)[0] == "TIMBRA_TICKET_TOTAL_MISMATCH", "total mismatch")
    assert "El total no coincide" in refusal(b)[1]
    b.screenshot("6-total-no-coincide")

    fill_ticket(b, closed)
    submit(b, "#generar")
    b.until(lambda: refusal(b)[0] == "TIMBRA_TICKET_WINDOW_CLOSED", "window closed")
    assert "El plazo para facturar este ticket terminó" in refusal(b)[1]
    b.screenshot("7-fuera-de-plazo")

    fill_ticket(b, good)
    b.select("#f-payment_form", "04")
    b.screenshot("8-listo-para-generar")
    submit(b, "#generar")
    b.wait_url("/factura/")
    b.until(lambda: b.find("#result").get_attribute("data-status") == "stamped", "the invoice to be stamped", timeout=90)
    uuid = b.text("#uuid")
    b.screenshot("9-factura-lista")
    b.click("#descargar-xml")
    xml = etree.fromstring(b.wait_download(".xml").read_bytes())
    assert (xml.find(f"{CFDI}Receptor").get("Rfc"), xml.get("FormaPago"), xml.get("Total")) == (rfc, "04", "116.00")
    assert uuid.lower() in etree.tostring(xml).decode().lower()
    b.click("#descargar-pdf")
    assert b.wait_download(".pdf").read_bytes().startswith(b"%PDF")
    copy_to = f"copia.{secrets.token_hex(3)}@example.com"
    b.fill("#f-email", copy_to)
    submit(b, "#enviar-correo")
    b.wait_text("#result-ok", copy_to)
    b.screenshot("10-enviada-por-correo")
    sent = await mail_to(platform, client.http, copy_to)
    assert {a["filename"].rsplit(".", 1)[-1] for a in sent["attachments"]} >= {"xml", "pdf"}
    await mail_to(platform, client.http, email)  # the pipeline also mailed the customer

    # the same ticket from another browser, for another RFC: already invoiced
    start_flow(b, issuer.slug, branch, "EKU9003173C9")
    b.fill("#f-legal_name", "ESCUELA KEMPER URGATE")
    b.select("#f-tax_regime", "601")
    b.fill("#f-zip", "42501")
    b.fill("#f-email", "escuela@example.com")
    fill_ticket(b, good)
    submit(b, "#generar")
    b.until(lambda: refusal(b)[0] == "TIMBRA_TICKET_ALREADY_INVOICED", "already invoiced")
    assert "ya fue facturado" in refusal(b)[1]
    b.screenshot("11-ya-facturado")

    # a known RFC comes back prefilled
    start_flow(b, issuer.slug, branch, rfc.lower())
    assert b.exists("#known-customer")
    assert b.find("#f-legal_name").get_attribute("value") == "MARIA LOPEZ HERNANDEZ"
    assert b.find("#f-zip").get_attribute("value") == "06000"
    b.screenshot("12-rfc-conocido")


@pytest.mark.timeout(900)  # a long journey on a shared 2-core machine
async def test_portal_when_sat_is_down(client: TimbraClient, platform, browser: Browser) -> None:  # noqa: ANN001
    issuer, (branch,) = await shop(client, "PANADERIA SIN SAT")
    tk = await ticket(client, issuer, branch)
    b, rfc, email = browser, rfc_fisica(), f"espera.{secrets.token_hex(3)}@example.com"
    start_flow(b, issuer.slug, branch, rfc)
    b.fill("#f-legal_name", "PEDRO RAMIREZ SOTO")
    b.select("#f-tax_regime", "612")
    b.fill("#f-zip", "06000")
    b.fill("#f-email", email)
    fill_ticket(b, tk)
    async with httpx.AsyncClient(base_url=platform.url("sandbox-pac"), timeout=10) as pac:
        await pac.put("/admin/faults", json={"mode": "outage"})  # the sandbox PAC answers 503 "SAT no disponible"
        try:
            submit(b, "#generar")
            b.wait_url("/factura/")
            b.until(lambda: b.find("#result").get_attribute("data-status") == "waiting_sat", "the SAT-unavailable notice", timeout=60)
            text = b.text("#result-waiting")
            assert "tu factura se generará en cuanto el SAT responda, te la enviaremos por correo" in text, text
            b.screenshot("1-sat-no-responde")
        finally:
            await pac.put("/admin/faults", json={"mode": "none"})
    # the invoice was never dropped: once the PAC answers it is stamped and mailed to the customer
    mail = await mail_to(platform, client.http, email, timeout=180)
    assert any(a["filename"].endswith(".xml") for a in mail["attachments"])
    b.driver.refresh()
    b.wait_ready()
    b.until(lambda: b.find("#result").get_attribute("data-status") == "stamped", "the invoice stamped after the outage", timeout=60)
    b.screenshot("2-timbrada-despues")


# --------------------------------------------------------------------------- the customer panel and recovery

def solve_captcha(b: Browser) -> str:
    """What a person does: read the operation in the image and work it out."""
    question = "".join(t.get_attribute("textContent") for t in b.all("#captcha-img svg text")).rstrip("=")
    a, op, c = re.fullmatch(r"(\d+)([+-])(\d+)", question).groups()  # type: ignore[union-attr]
    return str(int(a) + int(c) if op == "+" else int(a) - int(c))


@pytest.mark.timeout(900)  # a long journey on a shared 2-core machine
async def test_customer_panel_and_password_recovery(client: TimbraClient, platform, browser: Browser) -> None:  # noqa: ANN001
    issuer, (north, south) = await shop(client, "FARMACIA DEL PANEL", ("Norte", "Sur"))
    rfc, email = rfc_fisica(), f"panel.{secrets.token_hex(3)}@example.com"
    person = {"rfc": rfc, "legal_name": "LAURA GOMEZ DIAZ", "tax_regime": "612", "zip": "06000", "use": "G03", "email": email}
    invoices = []
    for branch in (north, south, north):
        tk = await ticket(client, issuer, branch)
        body = {"branch_id": branch["id"], "order_number": tk["order_number"], "ticket_number": tk["ticket_number"], "total": tk["total"], "customer": person}
        invoices.append(await _ok(await client.http.post(f"/v1/portal/{issuer.slug}/invoices", json=body)))
    stranger_tk = await ticket(client, issuer, north)
    stranger = await _ok(await client.http.post(f"/v1/portal/{issuer.slug}/invoices", json={
        "branch_id": north["id"], "order_number": stranger_tk["order_number"], "ticket_number": stranger_tk["ticket_number"], "total": "116.00",
        "customer": {**person, "rfc": rfc_fisica(), "legal_name": "OTRA PERSONA", "email": "otra@example.com"}}))
    for inv in [*invoices, stranger]:
        deadline = time.monotonic() + 90
        while (await _ok(await client.http.get(f"/v1/portal/{issuer.slug}/invoices/{inv['id']}", headers={"X-Portal-Receipt": inv["receipt"]})))["status"] != "stamped":
            assert time.monotonic() < deadline, inv
            await asyncio.sleep(0.5)

    b, password = browser, "Farmacia2026ok"
    b.open(f"/portal/{issuer.slug}/")
    b.click("#nav-entrar")
    b.wait_url("/entrar")
    b.click("#crear-cuenta")
    b.fill("#f-rfc", rfc)
    b.fill("#f-email", "no.es.mio@example.com")
    b.fill("#f-password", password)
    b.fill("#f-password_confirmation", password)
    submit(b, "#registrar")
    b.wait_text("[data-error-for='email']", "TIMBRA_PORTAL_EMAIL_NOT_REGISTERED")
    b.screenshot("1-registro-correo-no-registrado")
    b.fill("#f-email", email)
    b.fill("#f-password", password)
    b.fill("#f-password_confirmation", password)
    submit(b, "#registrar")
    b.wait_url("/panel")
    b.until(lambda: len(b.all("#invoices tbody tr[data-id]")) == 3, "the customer's three invoices")
    listed = {row.get_attribute("data-id") for row in b.all("#invoices tbody tr[data-id]")}
    assert listed == {i["id"] for i in invoices} and stranger["id"] not in listed
    b.screenshot("2-panel-de-facturas")
    b.select("#f-sucursal", south["id"])
    b.click("#filtrar")
    b.until(lambda: [r.get_attribute("data-id") for r in b.all("#invoices tbody tr[data-id]")] == [invoices[1]["id"]], "the Sur branch filter")
    b.screenshot("3-filtro-sucursal")
    b.click(f"#invoices tr[data-id='{invoices[1]['id']}'] a[href$='/xml']")
    xml = etree.fromstring(b.wait_download(".xml").read_bytes())
    assert xml.find(f"{CFDI}Receptor").get("Rfc") == rfc
    # another customer's invoice is not reachable through this session either
    b.open(f"/portal/{issuer.slug}/panel/{stranger['id']}/xml")
    assert b.exists("#error-message") and "no encontrad" in b.text("#error-message").lower()

    b.click("#nav-datos")
    b.wait_url("/datos")
    b.select("#f-tax_regime", "601")
    submit(b, "#guardar")
    b.wait_text("[data-error-for='tax_regime']", "CFDI40158")
    b.screenshot("4-datos-fiscales-error")
    b.select("#f-tax_regime", "626")
    b.fill("#f-zip", "06700")
    b.select("#f-use", "G01")
    submit(b, "#guardar")
    b.find("#fiscal-saved")
    b.screenshot("5-datos-fiscales-guardados")
    customer = (await _ok(await client.http.get("/v1/customers", headers=issuer.headers, params={"q": rfc})))["data"][0]
    assert (customer["tax_regime"], customer["zip"], customer["default_use"]) == ("626", "06700", "G01")
    b.click("#salir")
    b.wait_url("/entrar")

    # recovery: RFC + registered e-mail + captcha, a temporary password by e-mail, a forced change
    b.click("#olvide")
    b.wait_url("/recuperar")
    b.fill("#f-rfc", rfc)
    b.fill("#f-email", email)
    b.fill("#f-captcha_answer", str(int(solve_captcha(b)) + 1))
    b.screenshot("6-recuperar")
    submit(b, "#enviar")
    b.wait_text("[data-error-for='captcha_answer']", "TIMBRA_CAPTCHA_INVALID")
    b.screenshot("7-captcha-incorrecto")
    b.fill("#f-captcha_answer", solve_captcha(b))  # a new operation was drawn
    submit(b, "#enviar")
    b.find("#recover-sent")
    b.screenshot("8-correo-enviado")
    mail = await mail_to(platform, client.http, email, "contraseña temporal")
    temporary = re.search(r"contraseña temporal es: (\S+)", mail["text"]).group(1)  # type: ignore[union-attr]
    b.click("a.btn[href$='/entrar']")
    b.fill("#f-rfc", rfc)
    b.fill("#f-password", password)
    submit(b, "#entrar")
    b.wait_text("#login-error", "incorrectos")  # the old password no longer works
    b.fill("#f-rfc", rfc)
    b.fill("#f-password", temporary)
    submit(b, "#entrar")
    b.wait_url("/contrasena")
    b.find("#must-change")
    b.screenshot("9-cambio-obligatorio")
    b.open(f"/portal/{issuer.slug}/panel")  # nothing else opens until it is changed
    b.wait_url("/contrasena")
    new_password = "NuevaFarmacia2027"
    b.fill("#f-current_password", temporary)
    b.fill("#f-password", new_password)
    b.fill("#f-password_confirmation", new_password)
    submit(b, "#cambiar")
    b.wait_url("/panel")
    b.find("#password-changed")
    assert len(b.all("#invoices tbody tr[data-id]")) == 3
    b.screenshot("10-panel-con-nueva-contrasena")
    cookie = b.cookies()["timbra_portal"]
    assert cookie["httpOnly"] and cookie["path"] == "/portal" and cookie.get("sameSite") == "Lax"


# --------------------------------------------------------------------------- enumeration, phone

@pytest.mark.timeout(900)  # a long journey on a shared 2-core machine
async def test_burst_of_wrong_lookups_is_rate_limited(client: TimbraClient, browser: Browser) -> None:
    issuer, (branch,) = await shop(client, "MINISUPER ENUMERACION")
    tk = await ticket(client, issuer, branch)
    b = browser
    start_flow(b, issuer.slug, branch, rfc_fisica())
    b.fill("#f-legal_name", "ALGUIEN PROBANDO")
    b.select("#f-tax_regime", "612")
    b.fill("#f-zip", "06000")
    b.fill("#f-email", "prueba@example.com")
    codes = []
    for n in range(10):
        fill_ticket(b, tk, ticket_number=f"T-ADIVINA-{n}")
        submit(b, "#generar")
        codes.append(refusal(b)[0])
    assert codes[:8] == ["TIMBRA_TICKET_NOT_FOUND"] * 8 and set(codes[8:]) == {"TIMBRA_PORTAL_RATE_LIMITED"}, codes
    fill_ticket(b, tk)  # even the right ticket must wait now
    submit(b, "#generar")
    assert refusal(b)[0] == "TIMBRA_PORTAL_RATE_LIMITED"
    assert "Demasiadas búsquedas de tickets" in refusal(b)[1] and "espera" in refusal(b)[1]
    b.screenshot("demasiados-intentos")


@pytest.mark.timeout(900)  # a long journey on a shared 2-core machine
async def test_portal_on_a_phone_screen(client: TimbraClient, phone: Browser) -> None:
    issuer, (branch,) = await shop(client, "FONDA EN EL CELULAR")
    tk = await ticket(client, issuer, branch)
    b = phone
    start_flow(b, issuer.slug, branch, rfc_fisica())
    assert not b.overflows_horizontally()
    b.click("#help-total summary")
    assert b.find("#help-total svg").is_displayed()
    assert not b.overflows_horizontally()
    b.screenshot("ticket-en-celular")
    b.click("#help-total summary")
    b.fill("#f-legal_name", "ANA CELULAR RUIZ")
    b.select("#f-tax_regime", "612")
    b.fill("#f-zip", "06000")
    b.fill("#f-email", "celular@example.com")
    fill_ticket(b, tk)
    submit(b, "#generar")
    b.until(lambda: b.find("#result").get_attribute("data-status") == "stamped", "stamped on the phone", timeout=90)
    assert not b.overflows_horizontally()
    b.screenshot("factura-en-celular")
    b.open(f"/portal/{issuer.slug}/recuperar")
    assert not b.overflows_horizontally()
    b.screenshot("recuperar-en-celular")
