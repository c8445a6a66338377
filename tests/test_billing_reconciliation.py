"""Payment references and bank-deposit reconciliation against the real platform: the seed's sheet
to the cent (JSON and PDF), a realistic bank statement with deposits that match, underpay,
overpay, carry a mistyped reference and repeat; idempotent import; the exceptions queue resolved
by hand with an audit trail; the period report; billing-staff access only."""

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from timbra_billing.domain import reference as refs
from timbra_shared.auth import Principal, sign_token
from timbra_shared.devstack.scenario import TimbraClient

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

STATEMENT = Path(__file__).parent / "test_billing_data" / "estado_de_cuenta_bbva_mayo_2025.csv"


def _typo(reference: str) -> str:
    """Swap two adjacent different digits, the commonest typing mistake."""
    for i in range(len(reference) - 1):
        if reference[i] != reference[i + 1]:
            return reference[:i] + reference[i + 1] + reference[i] + reference[i + 2:]
    raise AssertionError(reference)


async def _sheet(client: TimbraClient, issuer, codes: list[str]) -> dict:  # noqa: ANN001
    response = await client.http.post("/v1/billing/payment-references", headers=issuer.headers, json={"items": [{"code": c, "quantity": 1} for c in codes]})
    assert response.status_code == 201, response.text
    return response.json()


async def _sink_messages(platform) -> list[dict]:  # noqa: ANN001
    async with httpx.AsyncClient(base_url=platform.url("smtp-sink"), timeout=30) as sink:
        return (await sink.get("/api/messages")).json()


async def _wait_mail(platform, message_id: str, timeout: float = 30) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in await _sink_messages(platform) if m["message_id"].strip() == f"<{message_id}@timbra.local>"]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def payer(client: TimbraClient):  # noqa: ANN201
    """An issuer without credits whose profile billing has already projected (for its emails)."""
    issuer = await client.onboard(rfc="PAG010101AA1", legal_name="PAGADOR DE PRUEBA", tax_regime="601", zip_code="06000", credits=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = (await client.http.get("/v1/billing/payment-references", headers=issuer.headers)).json()
        probe = listed["data"][0] if listed["data"] else await _sheet(client, issuer, ["SP0800"])
        if probe["issuer"]["rfc"] == "PAG010101AA1":
            return issuer
        await asyncio.sleep(0.3)
    raise AssertionError("billing never projected the issuer's profile")


async def test_default_catalog_has_the_seed_products(client, issuer) -> None:
    response = await client.http.get("/v1/billing/products", headers=issuer.headers)
    products = {p["code"]: p for p in response.json()["data"]}
    assert (products["SP0800"]["description"], products["SP0800"]["price"], products["SP0800"]["iva_rate"]) == ("Actualización NIVEL A", "575.00", "0.16")
    assert (products["I05077"]["description"], products["I05077"]["price"]) == ("Anualidad NIVEL 1", "550.00")
    assert {p["months"] for p in products.values()} <= {12, 24}


async def test_seed_payment_sheet_to_the_cent_as_json_and_pdf(client, payer) -> None:
    sheet = await _sheet(client, payer, ["SP0800", "I05077"])
    assert [(i["code"], i["quantity"], i["unit_price"], i["amount"]) for i in sheet["items"]] == [("SP0800", 1, "575.00", "575.00"), ("I05077", 1, "550.00", "550.00")]
    assert (sheet["subtotal"], sheet["iva"], sheet["total"]) == ("1125.00", "180.00", "1305.00")
    assert sheet["status"] == "pending" and refs.is_valid(sheet["reference"])
    assert sheet["payee"]["beneficiary"] and sheet["payee"]["account"] and len(sheet["payee"]["clabe"]) == 18
    assert "$ 1,305.00" in sheet["message"]

    fetched = (await client.http.get(f"/v1/billing/payment-references/{sheet['reference']}", headers=payer.headers)).json()
    assert (fetched["reference"], fetched["total"]) == (sheet["reference"], "1305.00")
    pdf = await client.http.get(f"/v1/billing/payment-references/{sheet['reference']}/pdf", headers=payer.headers)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf.content, capture_output=True, check=True).stdout.decode()
    for expected in ("SP0800", "I05077", "$ 1,125.00", "$ 180.00", "$ 1,305.00", sheet["reference"], sheet["payee"]["clabe"]):
        assert expected in text, expected


async def test_a_mistyped_reference_is_detected_and_another_issuers_is_not_found(client, payer, issuer) -> None:
    sheet = await _sheet(client, payer, ["TIM0100"])
    typo = await client.http.get(f"/v1/billing/payment-references/{_typo(sheet['reference'])}", headers=payer.headers)
    assert typo.status_code == 422 and typo.json()["code"] == "TIMBRA_REFERENCE_CHECK_DIGIT"
    other = await client.http.get(f"/v1/billing/payment-references/{sheet['reference']}", headers=issuer.headers)
    assert other.status_code == 404
    unknown = await client.http.post("/v1/billing/payment-references", headers=payer.headers, json={"items": [{"code": "NOPE99"}]})
    assert unknown.status_code == 422 and unknown.json()["code"] == "TIMBRA_UNKNOWN_PRODUCT"


async def test_billing_operations_refuse_an_issuer_key(client, payer, platform) -> None:
    csv = STATEMENT.read_bytes()
    for method, path, kwargs in [
        ("POST", "/v1/billing/statements", {"files": {"file": ("s.csv", csv, "text/csv")}}),
        ("GET", "/v1/billing/exceptions", {}),
        ("GET", "/v1/billing/reconciliation/report?from=2025-05-01&to=2025-05-31", {}),
        ("POST", "/v1/billing/credits", {"json": {"issuer_id": payer.id, "stamps": 1000}}),
        ("GET", "/v1/billing/books/check", {}),
    ]:
        response = await client.http.request(method, path, headers=payer.headers, **kwargs)
        assert response.status_code == 403, (path, response.text)
    # even a principal claiming the billing role is refused when it is an issuer's (forged roles)
    secret = platform.env_for("billing")["TIMBRA_INTERNAL_SECRET"]
    async with httpx.AsyncClient(base_url=platform.url("billing"), timeout=30) as billing:
        forged = sign_token(Principal(kind="issuer", issuer_id=payer.id, roles=("billing",)), secret)
        assert (await billing.get("/v1/billing/exceptions", headers={"x-timbra-principal": forged})).status_code == 403
        staff = sign_token(Principal(kind="staff", roles=("billing",), key_id="key_staff_test"), secret)
        assert (await billing.get("/v1/billing/exceptions", headers={"x-timbra-principal": staff})).status_code == 200
        operator = sign_token(Principal(kind="staff", roles=("operator",), key_id="key_operator_test"), secret)
        assert (await billing.get("/v1/billing/exceptions", headers={"x-timbra-principal": operator})).status_code == 403
    assert (await client.http.get("/v1/billing/balance", headers=payer.headers)).json()["available"] == 0


async def test_bank_statement_reconciliation_end_to_end(client, payer, platform) -> None:
    exact = await _sheet(client, payer, ["SP0800", "I05077"])  # 1,305.00, 100 stamps
    column = await _sheet(client, payer, ["TIM0100"])  # 406.00, 100 stamps
    under = await _sheet(client, payer, ["TIM0500"])  # 1,740.00
    over = await _sheet(client, payer, ["TIM0100"])  # 406.00
    typo_sheet = await _sheet(client, payer, ["TIM0100"])  # 406.00
    assert (under["total"], over["total"]) == ("1740.00", "406.00")
    typo = _typo(typo_sheet["reference"])
    csv = STATEMENT.read_text(encoding="utf-8").format(REF_EXACT=exact["reference"], REF_COLUMN=column["reference"], REF_UNDER=under["reference"], REF_OVER=over["reference"], REF_TYPO=typo).encode()
    balance_before = (await client.http.get("/v1/billing/balance", headers=payer.headers)).json()

    response = await client.http.post("/v1/billing/statements", headers=client.admin, files={"file": ("bbva-mayo.csv", csv, "text/csv")})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["deposits"], result["new"], result["skipped"], len(result["ignored"]), result["already_imported"]) == (8, 8, 0, 4, False)
    assert sorted(m["reference"] for m in result["matched"]) == sorted([exact["reference"], column["reference"]])
    kinds = sorted((e["outcome"], e["reference"]) for e in result["exceptions"])
    assert kinds == sorted([
        ("duplicate_deposit", exact["reference"]), ("already_paid", exact["reference"]),
        ("underpayment", under["reference"]), ("overpayment", over["reference"]),
        ("unknown_reference", None), ("unknown_reference", None),
    ])
    mistyped = next(e for e in result["exceptions"] if e["outcome"] == "unknown_reference" and "dígito verificador" in e["detail"])
    assert typo in mistyped["detail"]
    assert result["credits_granted"] == 200

    balance = (await client.http.get("/v1/billing/balance", headers=payer.headers)).json()
    assert balance["available"] - balance_before["available"] == 200 and balance["granted"] - balance_before["granted"] == 200
    assert balance["message"] == f"Timbres disponibles: {balance['available']}"
    paid = {s["reference"] for s in (await client.http.get("/v1/billing/payment-references?status=paid", headers=payer.headers)).json()["data"]}
    pending = {s["reference"] for s in (await client.http.get("/v1/billing/payment-references?status=pending", headers=payer.headers)).json()["data"]}
    assert {exact["reference"], column["reference"]} <= paid
    assert {under["reference"], over["reference"], typo_sheet["reference"]} <= pending and not paid & pending
    ledger = (await client.http.get("/v1/billing/ledger", headers=payer.headers)).json()["data"]
    grants = [e for e in ledger if e["entry"] == "grant" and e["reference"] in (exact["reference"], column["reference"])]
    assert len(grants) == 2 and all(e["actor"] == "admin" and "pago de la referencia" in e["reason"] for e in grants)

    # the same file again changes nothing
    again = (await client.http.post("/v1/billing/statements", headers=client.admin, files={"file": ("bbva-mayo.csv", csv, "text/csv")})).json()
    assert (again["already_imported"], again["new"], again["skipped"], again["matched"], again["exceptions"], again["credits_granted"]) == (True, 0, 8, [], [], 0)
    assert (await client.http.get("/v1/billing/balance", headers=payer.headers)).json() == balance
    open_exceptions = (await client.http.get("/v1/billing/exceptions?status=open", headers=client.admin)).json()["data"]
    assert len([e for e in open_exceptions if e["deposit_id"] in {x["deposit_id"] for x in result["exceptions"]}]) == 6

    # the payer is told once per activated reference, though the file came twice
    for ref in (exact["reference"], column["reference"]):
        mails = await _wait_mail(platform, f"billing-paid-{ref}")
        assert len(mails) == 1 and mails[0]["to"] == ["emisor@example.com"] and ref in mails[0]["subject"]

    # staff resolve by hand: the mistyped deposit is assigned to the right reference; the overpayment is refunded
    resolved = await client.http.post(f"/v1/billing/exceptions/{mistyped['exception_id']}/resolve", headers=client.admin,
                                      json={"action": "activate", "reference": typo_sheet["reference"], "note": "El cliente capturó mal la referencia; comprobante recibido por correo."})
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["status"] == "resolved" and body["resolution"]["credits_granted"] == 100 and body["resolution"]["actor"] == "admin"
    assert [h["action"] for h in body["history"]] == ["opened", "activate"]
    assert [a["action"] for a in body["audit"]] == ["exception.opened", "exception.activate"] and body["audit"][1]["note"].startswith("El cliente")
    twice = await client.http.post(f"/v1/billing/exceptions/{mistyped['exception_id']}/resolve", headers=client.admin, json={"action": "activate", "reference": typo_sheet["reference"], "note": "otra vez"})
    assert twice.status_code == 409
    overpaid = next(e for e in result["exceptions"] if e["outcome"] == "overpayment")
    await client.http.post(f"/v1/billing/exceptions/{overpaid['exception_id']}/resolve", headers=client.admin, json={"action": "note", "note": "Se llamó al cliente para confirmar la cuenta de devolución."})
    refunded = (await client.http.post(f"/v1/billing/exceptions/{overpaid['exception_id']}/resolve", headers=client.admin, json={"action": "refund", "note": "Se devolvieron $54.00 por SPEI."})).json()
    assert [h["action"] for h in refunded["history"]] == ["opened", "note", "refund"]
    duplicate = next(e for e in result["exceptions"] if e["outcome"] == "duplicate_deposit")
    no_double = await client.http.post(f"/v1/billing/exceptions/{duplicate['exception_id']}/resolve", headers=client.admin, json={"action": "activate", "note": "intento de activar dos veces"})
    assert no_double.status_code == 409 and no_double.json()["code"] == "TIMBRA_REFERENCE_ALREADY_PAID"
    assert (await client.http.get("/v1/billing/balance", headers=payer.headers)).json()["available"] == balance["available"] + 100

    report = (await client.http.get("/v1/billing/reconciliation/report", headers=client.admin, params={"from": "2025-05-01", "to": "2025-05-31"})).json()
    assert report["deposits"] == {"count": 8, "amount": "8887.00"}
    assert report["matched"]["count"] == 2 and report["matched"]["amount"] == "1711.00"
    assert report["exceptions"]["count"] == 6 and report["exceptions"]["open"] == 4
    assert {k: v["count"] for k, v in report["exceptions"]["by_kind"].items()} == {"already_paid": 1, "duplicate_deposit": 1, "overpayment": 1, "underpayment": 1, "unknown_reference": 2}
    assert report["exceptions"]["resolutions"] == {"activate": 1, "refund": 1}
    assert report["credits_granted"] == 300
    empty = (await client.http.get("/v1/billing/reconciliation/report", headers=client.admin, params={"from": "2025-06-01", "to": "2025-06-30"})).json()
    assert (empty["deposits"]["count"], empty["credits_granted"]) == (0, 0)

    books = (await client.http.get("/v1/billing/books/check", headers=client.admin)).json()
    assert books["ok"], books["mismatches"]


async def test_staff_issue_a_sheet_for_an_issuer_and_configure_csv_columns(client, payer) -> None:
    response = await client.http.post("/v1/billing/payment-references", headers=client.admin, json={"issuer_id": payer.id, "items": [{"code": "TIM1000"}]})
    assert response.status_code == 201, response.text
    sheet = response.json()
    assert (sheet["issuer_id"], sheet["total"], sheet["stamps"]) == (payer.id, "3016.00", 1000)
    missing = await client.http.post("/v1/billing/payment-references", headers=client.admin, json={"items": [{"code": "TIM1000"}]})
    assert missing.status_code == 422
    csv = f"Operation date;Narrative;Credit amount\n2025-06-03;WIRE FROM CLIENT REF {sheet['reference']};3016.00\n".encode()
    result = (await client.http.post("/v1/billing/statements", headers={**client.admin, "content-type": "text/csv"}, content=csv,
                                     params={"date_column": "Operation date", "description_column": "Narrative", "amount_column": "Credit amount"})).json()
    assert [m["reference"] for m in result["matched"]] == [sheet["reference"]] and result["credits_granted"] == 1000
    packages = (await client.http.get("/v1/billing/packages", headers=payer.headers)).json()["data"]
    assert any(p["reference"] == sheet["reference"] and p["months"] == 24 and p["stamps"] == 1000 for p in packages)
