"""The invoice resource of the public API on the real platform: list filters and pagination,
?wait=true, idempotency under concurrent duplicates and conflicts, the ZIP, inline vs catalog
customer and products, and the uniform error body of every service and the ingress."""

import asyncio
import io
import zipfile
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from timbra_shared.cfdi import verify
from timbra_shared.devstack.scenario import sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

FINAL = {"emailed", "rejected", "stamp_failed", "canceled"}


def assert_error_body(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and isinstance(body["message"], str) and body["message"] and isinstance(body["errors"], list), body
    assert set(body) == {"ok", "message", "code", "errors"}, body
    if code:
        assert body["code"] == code, body
    return body


async def post_waiting(client, issuer, body: dict, timeout: float = 25) -> httpx.Response:  # noqa: ANN001
    return await client.http.post("/v1/invoices", headers=issuer.headers, json=body, params={"wait": "true", "timeout": timeout}, timeout=timeout + 30)


async def test_wait_true_answers_the_final_status(client, issuer) -> None:
    body = sample_invoice(email=None, idempotency_key=new_id("wait-"))
    response = await post_waiting(client, issuer, body)
    # 200 with a final status, or 202 when the bounded wait ran out first (a cold, busy machine)
    assert (response.status_code, response.json()["status"] in FINAL) in ((200, True), (202, False)), response.text
    for _ in range(4):  # a replay of the same key may wait again
        if response.json()["status"] in FINAL:
            break
        response = await post_waiting(client, issuer, body)
    final = response.json()
    assert final["status"] == "emailed", final
    assert final["uuid"] and [s["status"] for s in final["timeline"]][-1] == "emailed"


async def test_wait_is_bounded(client, issuer) -> None:
    too_long = await client.create_invoice(issuer, sample_invoice(), wait="true", timeout=31)
    assert_error_body(too_long, 422, "invalid_request")
    assert too_long.json()["errors"][0]["path"] == "timeout"
    started = asyncio.get_running_loop().time()
    quick = await client.create_invoice(issuer, sample_invoice(), wait="true", timeout=0.01)
    assert quick.status_code == 202 and quick.json()["status"] not in FINAL, quick.text
    assert asyncio.get_running_loop().time() - started < 10


async def test_twenty_concurrent_duplicates_make_one_invoice(client, issuer) -> None:
    key = new_id("idem-")
    body = sample_invoice(email=None)
    half = [client.create_invoice(issuer, {**body, "idempotency_key": key}) for _ in range(10)]
    header = [client.http.post("/v1/invoices", headers={**issuer.headers, "Idempotency-Key": key}, json=body) for _ in range(10)]
    responses = await asyncio.gather(*half, *header)
    assert {r.status_code for r in responses} <= {200, 202}, [r.text for r in responses if r.status_code not in (200, 202)]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1, ids
    assert [r.status_code for r in responses].count(202) == 1
    listed = await client.http.get("/v1/invoices", headers=issuer.headers, params={"idempotency_key": key})
    assert [d["id"] for d in listed.json()["data"]] == list(ids)
    final = (await client.wait_final(issuer, list(ids), timeout=60))[ids.pop()]
    assert final["status"] == "emailed"


async def test_same_key_with_another_body_is_a_409_with_a_spanish_code(client, issuer) -> None:
    key = new_id("idem-")
    first = await client.create_invoice(issuer, sample_invoice(idempotency_key=key))
    assert first.status_code == 202
    changed = sample_invoice(idempotency_key=key)
    changed["items"][0]["quantity"] = "3"
    conflict = await client.create_invoice(issuer, changed)
    body = assert_error_body(conflict, 409, "TIMBRA_IDEMPOTENCY_CONFLICT")
    assert "idempotencia" in body["message"] and first.json()["id"] in body["message"]
    assert body["errors"][0]["path"] == "idempotency_key"
    mismatch = await client.http.post("/v1/invoices", headers={**issuer.headers, "Idempotency-Key": "otra"}, json=sample_invoice(idempotency_key=key))
    assert_error_body(mismatch, 422, "TIMBRA_IDEMPOTENCY_KEY_MISMATCH")


async def test_list_filters_and_cursor_pagination(client, issuer) -> None:
    other = await client.onboard(rfc="LIS010101AB1", legal_name="EMISOR LISTADO", tax_regime="601", zip_code="06000", credits=20)
    ppd = sample_invoice(email=None, payment_method="PPD", payment_form="99", customer={
        "rfc": "XEXX010101000", "legal_name": "CLIENTE EXTRANJERO", "tax_regime": "616", "zip": "06000", "use": "S01", "tax_residence": "USA", "tax_id": "123456789"})
    bodies = [sample_invoice(email=None) for _ in range(4)] + [ppd]
    created = [await client.create_invoice(other, body) for body in bodies]
    ids = [r.json()["id"] for r in created]
    states = await client.wait_final(other, ids, timeout=90)
    assert all(s["status"] == "emailed" for s in states.values()), states

    async def listing(**params) -> dict:
        response = await client.http.get("/v1/invoices", headers=other.headers, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    everything = await listing(limit=100)
    assert [d["id"] for d in everything["data"]] == ids[::-1]  # newest first, only this issuer's
    assert everything["has_more"] is False and everything["next_cursor"] is None

    pages, cursor = [], None
    while True:
        page = await listing(limit=2, **({"starting_after": cursor} if cursor else {}))
        pages.append([d["id"] for d in page["data"]])
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
        assert cursor == page["data"][-1]["id"]
    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:5]]

    assert [d["id"] for d in (await listing(customer_rfc="xexx010101000"))["data"]] == [ids[4]]
    assert len((await listing(customer_rfc="MCI7306249Y1"))["data"]) == 4
    assert len((await listing(status="emailed"))["data"]) == 5
    assert (await listing(status="rejected"))["data"] == []
    target = states[ids[1]]
    assert [d["id"] for d in (await listing(uuid=target["uuid"].lower()))["data"]] == [ids[1]]
    if target["serie"]:
        assert [d["id"] for d in (await listing(serie=target["serie"], folio=target["folio"]))["data"]] == [ids[1]]
    assert [d["id"] for d in (await listing(folio=target["folio"]))["data"]] == [ids[1]]
    today = datetime.now(UTC).date()
    assert len((await listing(created_from=today.isoformat(), created_to=today.isoformat()))["data"]) == 5
    assert (await listing(created_to=(today - timedelta(days=1)).isoformat()))["data"] == []
    assert (await listing(created_from=(today + timedelta(days=1)).isoformat()))["data"] == []
    assert len((await listing(created_from=(datetime.now(UTC) - timedelta(hours=1)).isoformat()))["data"]) == 5
    assert_error_body(await client.http.get("/v1/invoices", headers=other.headers, params={"created_from": "ayer"}), 422, "invalid_request")
    assert [d["type"] for d in (await listing(type="I"))["data"]] == ["I"] * 5

    bad_status = await client.http.get("/v1/invoices", headers=other.headers, params={"status": "perdida"})
    assert_error_body(bad_status, 422, "invalid_request")
    foreign_cursor = await client.http.get("/v1/invoices", headers=issuer.headers, params={"starting_after": ids[0]})
    assert_error_body(foreign_cursor, 422, "TIMBRA_INVALID_CURSOR")
    mine = await client.http.get("/v1/invoices", headers=issuer.headers, params={"limit": 100})
    assert not set(ids) & {d["id"] for d in mine.json()["data"]}


async def test_zip_holds_the_stamped_xml_and_the_pdf(client, issuer) -> None:
    created = await client.create_invoice(issuer, sample_invoice(email=None))
    state = (await client.wait_final(issuer, [created.json()["id"]], timeout=60))[created.json()["id"]]
    assert state["status"] == "emailed", state
    archive = await client.http.get(f"/v1/invoices/{state['id']}/zip", headers=issuer.headers)
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert sorted(z.namelist()) == sorted([f"{state['uuid']}.xml", f"{state['uuid']}.pdf"])
        xml, pdf = z.read(f"{state['uuid']}.xml"), z.read(f"{state['uuid']}.pdf")
    assert xml == (await client.http.get(f"/v1/invoices/{state['id']}/xml", headers=issuer.headers)).content
    assert verify(xml).valid and pdf.startswith(b"%PDF")
    other = await client.onboard(rfc="ZIP010101AB1", legal_name="OTRO ZIP", tax_regime="601", zip_code="06000", credits=0)
    assert_error_body(await client.http.get(f"/v1/invoices/{state['id']}/zip", headers=other.headers), 404, "not_found")


async def test_customer_and_products_inline_or_by_id(client, issuer) -> None:
    customer = await client.http.post("/v1/customers", headers=issuer.headers, json={
        "rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO DE CUAUTITLAN IZCALLI", "tax_regime": "603", "zip": "54700", "default_use": "G03"})
    assert customer.status_code == 201, customer.text
    product = await client.http.post("/v1/products", headers=issuer.headers, json={
        "description": "Licencia anual", "product_key": "43232408", "unit_key": "E48", "price": "1000.00", "taxes": [{"type": "IVA", "rate": "0.16"}]})
    assert product.status_code == 201, product.text
    by_id = {"type": "I", "customer_id": customer.json()["id"], "payment_form": "03", "payment_method": "PUE",
             "items": [{"product_id": product.json()["id"], "quantity": "1"}, sample_invoice()["items"][0]]}
    inline = sample_invoice(email=None)
    responses = [await client.create_invoice(issuer, body) for body in (by_id, inline)]
    states = await client.wait_final(issuer, [r.json()["id"] for r in responses], timeout=60)
    assert [s["status"] for s in states.values()] == ["emailed", "emailed"], states
    by_id_xml = (await client.http.get(f"/v1/invoices/{responses[0].json()['id']}/xml", headers=issuer.headers)).text
    assert "Licencia anual" in by_id_xml and "Servicio de consultoría 1" in by_id_xml and 'Rfc="MCI7306249Y1"' in by_id_xml
    listed = await client.http.get("/v1/invoices", headers=issuer.headers, params={"customer_id": customer.json()["id"]})
    assert [d["id"] for d in listed.json()["data"]] == [responses[0].json()["id"]]
    unknown = await client.create_invoice(issuer, {**by_id, "customer_id": "cus_doesnotexist"})
    state = (await client.wait_final(issuer, [unknown.json()["id"]], timeout=60))[unknown.json()["id"]]
    assert state["status"] == "rejected" and state["errors"][0]["code"] == "TIMBRA_CUSTOMER_NOT_FOUND", state


async def test_every_service_and_the_ingress_answer_errors_in_one_format(client, issuer, platform) -> None:
    ingress = client.http
    assert_error_body(await ingress.get("/v1/nada", headers=issuer.headers), 404)
    assert_error_body(await ingress.get("/no/existe"), 404)
    assert_error_body(await ingress.request("OPTIONS", "/v1/invoices"), 405)
    assert_error_body(await ingress.get("/v1/invoices"), 401)
    assert_error_body(await ingress.get("/v1/invoices", headers={"Authorization": "Bearer tk_test_nope"}), 401, "unauthorized")
    assert_error_body(await ingress.get("/v1/invoices/%1E%00x", headers=issuer.headers), 404)
    assert_error_body(await ingress.get("/v1/invoices", headers=issuer.headers, params={"limit": "mucho"}), 422, "invalid_request")
    assert_error_body(await ingress.post("/v1/invoices", headers={**issuer.headers, "content-type": "application/json"}, content=b"{"), 400, "invalid_json")
    # found by schemathesis: an explicit null for a required fiscal field was a 500
    nulled = assert_error_body(await ingress.patch("/v1/issuers/me", headers=issuer.headers, json={"rfc": None, "zip": "00000"}), 422, "invalid_request")
    assert [e["path"] for e in nulled["errors"]] == ["rfc"]
    async with httpx.AsyncClient(timeout=30) as direct:
        for name in ("issuer-profile", "catalog", "cfdi-builder", "stamping", "cancellation", "billing", "notifier"):
            base = platform.url(name)
            assert_error_body(await direct.get(f"{base}/v1/no-such-route"), 404, "http_404")
            assert_error_body(await direct.request("PATCH", f"{base}/healthz"), 405, "http_405")


async def test_billing_for_issuers_balance_references_and_history(client, issuer) -> None:
    other = await client.onboard(rfc="BIL010101AB1", legal_name="EMISOR COBRO", tax_regime="601", zip_code="06000", credits=7)
    balance = (await client.http.get("/v1/billing/balance", headers=other.headers)).json()
    assert (balance["available"], balance["granted"]) == (7, 7) and balance["message"] == "Timbres disponibles: 7"
    ledger = (await client.http.get("/v1/billing/ledger", headers=other.headers)).json()["data"]
    assert [(e["entry"], e["quantity"]) for e in ledger] == [("grant", 7)], ledger  # the history
    products = (await client.http.get("/v1/billing/products", headers=other.headers)).json()["data"]
    assert products, "the billing product catalog is seeded"
    created = await client.http.post("/v1/billing/payment-references", headers=other.headers, json={"items": [{"code": products[0]["code"], "quantity": 1}]})
    assert created.status_code == 201, created.text
    reference = created.json()["reference"]
    assert {"reference", "subtotal", "iva", "total"} <= set(created.json())
    listed = (await client.http.get("/v1/billing/payment-references", headers=other.headers)).json()["data"]
    assert reference in [r["reference"] for r in listed]
    pdf = await client.http.get(f"/v1/billing/payment-references/{reference}/pdf", headers=other.headers)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert_error_body(await client.http.get(f"/v1/billing/payment-references/{reference}", headers=issuer.headers), 404)
    assert_error_body(await client.http.post("/v1/billing/credits", headers=other.headers, json={"issuer_id": other.id, "stamps": 5, "months": 1}), 403, "forbidden")
