"""The operator console and the billing back-office in a real headless Chromium against the running
platform: an operator logs in, watches the pipeline, finds a poison message in the dead-letter
queue, fixes it and replays it, and follows the invoice's timeline to ``emailed``; billing staff
upload a bank statement, see the matched deposit, and resolve the exceptions queue by hand.

Screenshots of every step go to ``$TIMBRA_ARTIFACTS_DIR/console/<test>/`` (default
``test-artifacts/console``). Without chromium these tests fail with the command that installs it;
``TIMBRA_ALLOW_NO_BROWSER=1`` turns that into a skip with the same reason."""

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from timbra_shared import topics
from timbra_shared.devstack.scenario import sample_invoice
from timbra_shared.ids import new_id
from timbra_shared.web.testing import Browser, artifacts_dir, browser_for_test

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Consola2026segura"


@pytest.fixture(scope="module")
def shots() -> Path:
    return artifacts_dir(REPO, "console")


@pytest.fixture(scope="module")
def api(platform) -> Iterator["Api"]:  # noqa: ANN001
    with httpx.Client(base_url=platform.url("ingress"), timeout=60) as http:
        yield Api(http, platform.admin_key, platform)


@pytest.fixture
def browser(platform, shots: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:  # noqa: ANN001
    yield from browser_for_test(platform.url("ingress"), shots / request.node.name, what="the console's browser tests")


class Api:
    """The public API, to arrange what the browser does not drive and to check outcomes."""

    def __init__(self, http: httpx.Client, admin_key: str, platform: Any) -> None:
        self.http, self.admin, self.platform = http, {"Authorization": f"Bearer {admin_key}"}, platform

    def staff(self, role: str) -> str:
        username = f"{role}_{secrets.token_hex(4)}"
        created = self.http.post("/v1/staff/users", headers=self.admin, json={"name": f"Ana {role}", "email": f"{username}@timbra.example", "username": username, "password": PASSWORD, "role": role})
        assert created.status_code == 201, created.text
        return username

    def issuer(self, credits: int = 0) -> dict[str, Any]:
        created = self.http.post("/v1/issuers", headers=self.admin, json={"rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE", "tax_regime": "601", "zip": "42501", "email": "emisor@example.com"})
        assert created.status_code == 201, created.text
        body = created.json()
        key = {"Authorization": f"Bearer {body['api_key']}"}
        from timbra_shared.cfdi.testing import make_csd

        cer, pem = make_csd(rfc="EKU9003173C9", name="ESCUELA KEMPER URGATE")
        assert self.http.put("/v1/issuers/me/acceptances", headers=key, json={"privacy_notice": True, "carta_manifiesto": True}).status_code == 200
        uploaded = self.http.put("/v1/issuers/me/csd", headers=key, files={"cer": ("c.cer", cer), "key": ("c.key", pem)}, data={"password": "12345678a"})
        assert uploaded.status_code == 200, uploaded.text
        if credits:
            assert self.http.post("/v1/billing/credits", headers=self.admin, json={"issuer_id": body["id"], "stamps": credits, "months": 12}).status_code == 201
        return {"id": body["id"], "headers": key}

    def invoice(self, issuer: dict[str, Any], invoice_id: str) -> dict[str, Any] | None:
        response = self.http.get(f"/v1/invoices/{invoice_id}", headers=issuer["headers"])
        return response.json() if response.status_code == 200 else None


def produce(platform: Any, topic: str, payload: bytes, key: bytes) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait(topic, payload, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def login(browser: Browser, username: str) -> None:
    browser.open("/console/")
    browser.wait_url("/console/entrar")
    browser.screenshot("login")
    browser.fill("#f-username", username)
    browser.fill("#f-password", PASSWORD)
    browser.click("#entrar")


def reload_until(browser: Browser, check: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
        browser.driver.refresh()
        browser.wait_ready()
    browser.screenshot(f"timeout-{what}")
    raise AssertionError(f"waited {timeout:.0f}s for {what}")


# --------------------------------------------------------------------------- operator


def test_operator_timeline_and_dead_letter_replay(api: Api, browser: Browser) -> None:
    issuer = api.issuer(credits=50)
    operator = api.staff("operator")
    invoice_id = new_id("inv_")
    poison = {"invoice_id": invoice_id, "request": sample_invoice(email=None)}  # no issuer_id: the builder cannot tie it to anyone
    produce(api.platform, topics.INVOICE_REQUESTED, json.dumps(poison).encode(), invoice_id.encode())

    login(browser, operator)
    browser.wait_url("/console/operacion")
    browser.find("#stages")
    browser.find("#lag-table")  # consumer lag, read from the broker
    browser.find("#stamp-retrying")
    browser.screenshot("pipeline")

    browser.click("nav.menu a[href='/console/operacion/mensajes']")
    browser.wait_url("/console/operacion/mensajes")
    row = f"#letters tr[data-id] a[href='/console/operacion/facturas/{invoice_id}']"
    reload_until(browser, lambda: browser.exists(row), "the poison message in the queue")
    browser.screenshot("dead-letter-queue")
    # the builder's letter (other consumer groups of the topic dead-letter it too)
    links = [r.find_element("css selector", "td a").get_attribute("href") for r in browser.all("#letters tr[data-id]")
             if invoice_id in r.text and "cfdi-builder" in r.text]
    assert links, "the cfdi-builder dead-lettered the message"
    browser.open(links[0])
    browser.wait_text("#letter-status", "abierto")
    assert "issuer_id" in browser.text("#letter-reason") or "emisor" in browser.text("#letter-reason")
    browser.screenshot("dead-letter")

    # a broken correction is refused next to the field, and nothing is sent
    browser.fill("#f-payload", "{esto no es json")
    browser.click("#replay")
    browser.wait_text(".field-error", "no es JSON válido")
    browser.screenshot("replay-refused")
    assert api.invoice(issuer, invoice_id) is None

    fixed = json.dumps(poison | {"issuer_id": issuer["id"], "event_type": "invoice.requested"}, ensure_ascii=False)
    browser.fill("#f-payload", fixed)
    browser.fill("#f-note", "Faltaba issuer_id; corregido a mano")
    browser.click("#replay")
    browser.wait_text("#replayed", "Reenviado")
    browser.wait_text("#letter-status", "reenviado")
    assert "Faltaba issuer_id" in browser.text("#replays")
    browser.screenshot("replayed")

    browser.click("#letter-invoice")
    browser.wait_url(f"/console/operacion/facturas/{invoice_id}")
    reload_until(browser, lambda: browser.exists("#timeline tr[data-status='emailed']"), "the replayed invoice emailed")
    steps = [r.get_attribute("data-status") for r in browser.all("#timeline tr[data-status]")]
    assert steps[:5] == ["requested", "built", "sealed", "funded", "stamped"], steps
    services = browser.text("#timeline")
    for service in ("cfdi-builder", "issuer-profile", "billing", "stamping", "notifier"):
        assert service in services
    assert len(browser.text("#inv-trace")) >= 16, "the trace id is shown"
    uuid = browser.text("#inv-uuid")
    assert len(uuid) == 36
    assert browser.exists("#inv-letters a")
    browser.screenshot("timeline")
    state = api.invoice(issuer, invoice_id)
    assert state and state["status"] == "emailed"

    # search by UUID (lower case) lands on the same timeline; by RFC lists the issuer
    browser.click("nav.menu a[href='/console/operacion/buscar']")
    browser.fill("#q", uuid.lower())
    browser.click("#buscar")
    browser.wait_url(f"/console/operacion/facturas/{invoice_id}")
    browser.open("/console/operacion/buscar?q=EKU9003173C9")
    browser.wait_text("#issuers", issuer["id"])
    assert invoice_id in browser.text("#results")
    browser.screenshot("search-rfc")

    # on a phone screen the pipeline and the timeline fit the width (tables scroll inside their box)
    browser.driver.set_window_size(390, 844)
    for path in ("/console/operacion", f"/console/operacion/facturas/{invoice_id}"):
        browser.open(path)
        assert not browser.overflows_horizontally(), path
    browser.screenshot("phone-timeline")
    browser.driver.set_window_size(1280, 1000)

    # a rejected invoice (no credits) shows its failure reason on the timeline
    broke = api.issuer(credits=0)
    rejected = api.http.post("/v1/invoices", headers=broke["headers"], json=sample_invoice(email=None))
    assert rejected.status_code == 202, rejected.text
    rejected_id = rejected.json()["id"]
    browser.open(f"/console/operacion/facturas/{rejected_id}")
    reload_until(browser, lambda: browser.exists("#inv-failure"), "the failure reason")
    assert "rejected" in browser.text("#inv-status") and "TIMBRA_NO_CREDITS" in browser.text("#inv-failure")
    browser.screenshot("timeline-rejected")


# --------------------------------------------------------------------------- billing


def _typo(reference: str) -> str:
    for i in range(len(reference) - 1):
        if reference[i] != reference[i + 1]:
            return reference[:i] + reference[i + 1] + reference[i] + reference[i + 2:]
    raise AssertionError(reference)


def test_billing_exceptions_queue_resolved_by_hand_after_a_statement_upload(api: Api, browser: Browser, tmp_path: Path) -> None:
    issuer = api.issuer()
    billing = api.staff("billing")

    def sheet(code: str) -> dict[str, Any]:
        created = api.http.post("/v1/billing/payment-references", headers=issuer["headers"], json={"items": [{"code": code, "quantity": 1}]})
        assert created.status_code == 201, created.text
        return created.json()

    paid, short, mistyped = sheet("TIM0100"), sheet("TIM0500"), sheet("TIM0100")
    day = time.strftime("%d/%m/%Y")
    statement = tmp_path / f"banco-{secrets.token_hex(3)}.csv"
    statement.write_text(
        "Banco de prueba;;;;;\n"
        "Fecha;Concepto;Referencia;Cargo;Abono;Saldo\n"
        f"{day};SPEI RECIBIDO {secrets.token_hex(3)};{paid['reference']};;{paid['total']};1000.00\n"
        f"{day};DEPOSITO {secrets.token_hex(3)};{short['reference']};;1000.00;2000.00\n"
        f"{day};SPEI REF {_typo(mistyped['reference'])} {secrets.token_hex(3)};;;{mistyped['total']};3000.00\n"
        f"{day};COMISION;;15.00;;2985.00\n",
        encoding="utf-8",
    )
    before = api.http.get("/v1/billing/balance", headers=issuer["headers"]).json()

    login(browser, billing)
    browser.wait_url("/console/cobranza")
    browser.find("#accounts") if browser.exists("#accounts") else browser.find("#f-emisor")
    browser.screenshot("balances")
    browser.click("nav.menu a[href='/console/cobranza/estados']")
    browser.wait_url("/console/cobranza/estados")
    browser.upload("#f-file", statement)
    browser.screenshot("statement-chosen")
    browser.click("#upload")
    browser.wait_text("#matched-count", "1")
    assert browser.text("#exception-count") == "2"
    assert paid["reference"] in browser.text("#matched")
    assert "Pago menor" in browser.text("#new-exceptions") and "Referencia desconocida" in browser.text("#new-exceptions")
    browser.screenshot("statement-reconciled")
    granted = api.http.get("/v1/billing/balance", headers=issuer["headers"]).json()
    assert granted["available"] - before["available"] == 100, "the matched deposit activated its package"

    browser.click("#to-exceptions")
    browser.wait_url("/console/cobranza/excepciones")
    exceptions = {e["kind"]: e for e in api.http.get("/v1/billing/exceptions", headers=api.admin, params={"status": "open"}).json()["data"]
                  if e.get("reference") == short["reference"] or _typo(mistyped["reference"]) in (e.get("description") or "")}
    assert set(exceptions) == {"underpayment", "unknown_reference"}, exceptions
    browser.screenshot("exceptions-queue")

    # the mistyped reference: activate it by hand, giving the right reference; an empty note is refused first
    unknown = exceptions["unknown_reference"]["id"]
    card = browser.find(f"#exc-{unknown}")
    browser.select(f"#a-{unknown}", "activate")
    browser.fill(f"#r-{unknown}", mistyped["reference"])
    browser.driver.execute_script(f"document.getElementById('n-{unknown}').removeAttribute('required'); document.getElementById('n-{unknown}').removeAttribute('minlength')")
    browser.fill(f"#n-{unknown}", "x")
    browser.click(f"#resolve-{unknown}", within=None)
    browser.find(f"#exc-{unknown} .field-error")
    browser.screenshot("resolve-refused")
    browser.select(f"#a-{unknown}", "activate")
    browser.fill(f"#r-{unknown}", mistyped["reference"])
    browser.fill(f"#n-{unknown}", "El cliente invirtió dos dígitos; confirmado por teléfono")
    browser.click(f"#resolve-{unknown}")
    browser.wait_text("#done", unknown)
    assert not browser.exists(f"#exc-{unknown}"), "the resolved exception left the open queue"
    browser.screenshot("activated")
    assert card is not None

    # the underpayment: refund it
    under = exceptions["underpayment"]["id"]
    browser.select(f"#a-{under}", "refund")
    browser.fill(f"#n-{under}", "Se devuelve el depósito; pagará el total")
    browser.click(f"#resolve-{under}")
    browser.wait_text("#done", under)
    browser.screenshot("refunded")

    browser.open("/console/cobranza/excepciones?estado=resolved")
    browser.wait_text(f"#exc-{unknown}", "activate")
    assert "refund" in browser.text(f"#exc-{under}")
    browser.screenshot("resolved")

    after = api.http.get("/v1/billing/balance", headers=issuer["headers"]).json()
    assert after["available"] - before["available"] == 200, "the hand-activated sheet granted its 100 stamps too"
    references = {r["reference"]: r["status"] for r in api.http.get("/v1/billing/payment-references", headers=issuer["headers"]).json()["data"]}
    assert references[paid["reference"]] == "paid" and references[mistyped["reference"]] == "paid" and references[short["reference"]] == "pending"

    browser.open(f"/console/cobranza/emisores/{issuer['id']}")
    browser.wait_text("#available", str(after["available"]))
    ledger = browser.text("#ledger")
    assert mistyped["reference"] in ledger and paid["reference"] in ledger and "grant" in ledger
    browser.screenshot("issuer-ledger")
