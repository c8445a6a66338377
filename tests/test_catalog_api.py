"""The catalog on the real platform: customers and products by id on stamped invoices, validation
over HTTP, CSV import, soft delete, tenant isolation, branches, store tickets (HTTP and the
``pos.tickets`` topic) and the global invoice."""

import asyncio
import random
import string
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from lxml import etree

from timbra_shared import topics
from timbra_shared.cfdi import verify
from timbra_shared.events import TicketIn, TicketSubmitted
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CFDI = "{http://www.sat.gob.mx/cfd/4}"
INLINE = {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991", "use": "G03"}
CUSTOMER = {"rfc": "ure-180429-tm6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA S.A. DE C.V.", "tax_regime": "601", "zip": "86991", "default_use": "G03", "email": "pagos@ure.example.com"}
SERVICE = {"sku": "CONS-1", "description": "Servicio de consultoría", "product_key": "81111500", "unit_key": "E48", "unit_name": "Servicio", "price": "1000.00"}
BOOK = {"sku": "LIB-1", "description": "Libro de texto", "product_key": "55101500", "unit_key": "H87", "unit_name": "Pieza", "price": "116.00",
        "tax_included": True, "taxes": [{"type": "IVA", "rate": "0.16"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def other(client):  # noqa: ANN001, ANN201
    """A second issuer (tenant B)."""
    return await client.onboard(rfc="URE180429TM6", legal_name="UNIVERSIDAD ROBOTICA ESPAÑOLA", tax_regime="601", zip_code="86991", credits=10)


async def _post(client, issuer, path, body, status=201):  # noqa: ANN001, ANN202
    response = await client.http.post(path, headers=issuer.headers, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def _stamped(client, issuer, body):  # noqa: ANN001, ANN202
    created = await client.create_invoice(issuer, body)
    assert created.status_code == 202, created.text
    invoice_id = created.json()["id"]
    state = (await client.wait_final(issuer, [invoice_id], timeout=90))[invoice_id]
    assert state["status"] == "emailed", state
    xml = await client.http.get(f"/v1/invoices/{invoice_id}/xml", headers=issuer.headers)
    assert xml.status_code == 200
    return state, xml.content


async def _rejected(client, issuer, body):  # noqa: ANN001, ANN202
    created = await client.create_invoice(issuer, body)
    assert created.status_code == 202, created.text
    invoice_id = created.json()["id"]
    state = (await client.wait_final(issuer, [invoice_id], timeout=60))[invoice_id]
    assert state["status"] == "rejected", state
    return state


def _random_rfc() -> str:
    """A well-formed persona-moral RFC that no other test uses."""
    letters = "".join(random.choices(string.ascii_uppercase, k=3))
    homoclave = "".join(random.choices(string.ascii_uppercase + string.digits, k=2))
    return f"{letters}180429{homoclave}6"


# --------------------------------------------------------------------------- by id, end to end


async def test_customer_and_products_by_id_are_stamped_end_to_end(client, issuer) -> None:
    customer = await _post(client, issuer, "/v1/customers", {**CUSTOMER, "rfc": _random_rfc()})
    assert customer["legal_name"] == "UNIVERSIDAD ROBOTICA ESPAÑOLA" and customer["id"].startswith("cus_")
    service = await _post(client, issuer, "/v1/products", SERVICE)
    book = await _post(client, issuer, "/v1/products", BOOK)

    body = {"customer_id": customer["id"], "items": [{"product_id": service["id"], "quantity": "2"}, {"product_id": book["id"], "quantity": "3"}],
            "payment_form": "03", "payment_method": "PUE"}
    state, xml = await _stamped(client, issuer, body)
    assert verify(xml).valid
    root = etree.fromstring(xml)
    receptor = root.find(f"{CFDI}Receptor")
    assert (receptor.get("Rfc"), receptor.get("Nombre"), receptor.get("UsoCFDI")) == (customer["rfc"], "UNIVERSIDAD ROBOTICA ESPAÑOLA", "G03")
    conceptos = root.findall(f"{CFDI}Conceptos/{CFDI}Concepto")
    assert [(c.get("NoIdentificacion"), c.get("ClaveProdServ"), c.get("ClaveUnidad")) for c in conceptos] == [("CONS-1", "81111500", "E48"), ("LIB-1", "55101500", "H87")]
    # 2 x 1000 + 16% = 2320.00; 3 books at 116.00 with IVA included = 348.00 exactly
    assert root.get("Total") == "2668.00"
    assert state["total"] == "2668.00"


async def test_editing_a_customer_leaves_past_invoices_unchanged(client, issuer) -> None:
    customer = await _post(client, issuer, "/v1/customers", {**CUSTOMER, "rfc": _random_rfc()})
    product = await _post(client, issuer, "/v1/products", SERVICE)
    body = {"customer_id": customer["id"], "items": [{"product_id": product["id"]}], "payment_form": "03", "payment_method": "PUE", "use": "G01"}
    first, first_xml = await _stamped(client, issuer, body)

    deadline = time.monotonic() + 15
    while (await client.http.get(f"/v1/customers/{customer['id']}", headers=issuer.headers)).json()["default_use"] != "G01" and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    edited = await client.http.put(f"/v1/customers/{customer['id']}", headers=issuer.headers, json={"legal_name": "UNIVERSIDAD ROBOTICA DEL SURESTE"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["default_use"] == "G01"  # remembered from the stamped invoice (seed 000)
    price = await client.http.put(f"/v1/products/{product['id']}", headers=issuer.headers, json={"price": "2000.00"})
    assert price.status_code == 200

    deadline = time.monotonic() + 20
    while True:  # the builder's projection follows the catalog.* topics (customers and products separately)
        second, second_xml = await _stamped(client, issuer, {**body, "use": None})
        root = etree.fromstring(second_xml)
        if (root.find(f"{CFDI}Receptor").get("Nombre"), root.get("SubTotal")) == ("UNIVERSIDAD ROBOTICA DEL SURESTE", "2000.00") or time.monotonic() > deadline:
            break
    new_root = etree.fromstring(second_xml)
    assert new_root.find(f"{CFDI}Receptor").get("Nombre") == "UNIVERSIDAD ROBOTICA DEL SURESTE"
    assert new_root.find(f"{CFDI}Receptor").get("UsoCFDI") == "G01"
    assert new_root.get("SubTotal") == "2000.00"

    again = await client.http.get(f"/v1/invoices/{first['id']}/xml", headers=issuer.headers)
    assert again.content == first_xml
    old_root = etree.fromstring(again.content)
    assert old_root.find(f"{CFDI}Receptor").get("Nombre") == "UNIVERSIDAD ROBOTICA ESPAÑOLA"
    assert old_root.get("SubTotal") == "1000.00"


async def test_an_unknown_or_deleted_customer_is_rejected_with_a_code(client, issuer) -> None:
    product = await _post(client, issuer, "/v1/products", SERVICE)
    state = await _rejected(client, issuer, {"customer_id": "cus_doesnotexist", "items": [{"product_id": product["id"]}], "payment_form": "03", "payment_method": "PUE"})
    assert [e["code"] for e in state["errors"]] == ["TIMBRA_CUSTOMER_NOT_FOUND"]

    customer = await _post(client, issuer, "/v1/customers", {**CUSTOMER, "rfc": _random_rfc()})
    deleted = await client.http.delete(f"/v1/customers/{customer['id']}", headers=issuer.headers)
    assert deleted.status_code == 200 and deleted.json()["deleted_at"]
    assert (await client.http.get(f"/v1/customers/{customer['id']}", headers=issuer.headers)).status_code == 404
    await asyncio.sleep(1)
    state = await _rejected(client, issuer, {"customer_id": customer["id"], "items": [{"product_id": product["id"]}], "payment_form": "03", "payment_method": "PUE"})
    assert [e["code"] for e in state["errors"]] == ["TIMBRA_CUSTOMER_NOT_FOUND"]


# --------------------------------------------------------------------------- validation over HTTP


@pytest.mark.parametrize(
    ("overrides", "code", "path"),
    [
        ({"rfc": "URE18042"}, "CFDI40143", "rfc"),
        ({"tax_regime": "605"}, "CFDI40158", "tax_regime"),
        ({"default_use": "D01"}, "CFDI40161", "default_use"),
        ({"zip": "00100"}, "TIMBRA_ZIP_UNKNOWN", "zip"),
        ({"rfc": "XAXX010101000", "legal_name": "MOSTRADOR"}, "CFDI40145", "legal_name"),
        ({"rfc": "XEXX010101000", "tax_regime": "616", "default_use": "S01"}, "TIMBRA_TAX_RESIDENCE_REQUIRED", "tax_residence"),
    ],
)
async def test_bad_customers_answer_422_with_the_code(client, issuer, overrides, code, path) -> None:
    response = await client.http.post("/v1/customers", headers=issuer.headers, json={**CUSTOMER, "rfc": _random_rfc(), **overrides})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["ok"] is False and (code, path) in {(e["code"], e["path"]) for e in body["errors"]}


async def test_bad_products_answer_422_with_the_code(client, issuer) -> None:
    response = await client.http.post("/v1/products", headers=issuer.headers, json={**SERVICE, "product_key": "99999999", "taxes": [{"type": "IVA", "rate": "0.15"}]})
    assert response.status_code == 422
    assert {(e["code"], e["path"]) for e in response.json()["errors"]} == {("CFDI40162", "product_key"), ("CFDI40180", "taxes[0].rate")}


async def test_a_live_rfc_is_unique_per_issuer(client, issuer) -> None:
    rfc = _random_rfc()
    await _post(client, issuer, "/v1/customers", {**CUSTOMER, "rfc": rfc})
    again = await client.http.post("/v1/customers", headers=issuer.headers, json={**CUSTOMER, "rfc": rfc})
    assert again.status_code == 409 and again.json()["code"] == "TIMBRA_CUSTOMER_DUPLICATE"


# --------------------------------------------------------------------------- list, search, import


async def test_csv_import_reports_every_row_and_list_searches_and_pages(client, issuer) -> None:
    tag = new_id()[-6:].lower()
    good = [_random_rfc() for _ in range(3)]
    csv_text = (
        "rfc,legal_name,tax_regime,zip,default_use,emails\n"
        f"{good[0]},Cafetería Ñandú {tag} S.A. de C.V.,601,86991,G03,a@x.mx;b@x.mx\n"
        f"{good[1]},Papelería {tag},601,86991,G01,\n"
        "URE18,MAL RFC,601,86991,G03,\n"
        f"{good[2]},Ferretería {tag},605,86991,G03,\n"
    )
    report = await client.http.post("/v1/customers/import", headers={**issuer.headers, "content-type": "text/csv"}, content=csv_text.encode())
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["created"], body["failed"]) == (2, 2)
    assert [(r["row"], r["ok"]) for r in body["rows"]] == [(2, True), (3, True), (4, False), (5, False)]
    assert body["rows"][2]["errors"][0]["code"] == "CFDI40143"
    assert body["rows"][3]["errors"][0]["code"] == "CFDI40158"

    found = (await client.http.get("/v1/customers", headers=issuer.headers, params={"q": f"cafeteria nandu {tag}"})).json()
    assert [c["legal_name"] for c in found["data"]] == [f"Cafetería Ñandú {tag}"]
    assert found["data"][0]["emails"] == ["a@x.mx", "b@x.mx"]
    page1 = (await client.http.get("/v1/customers", headers=issuer.headers, params={"q": tag, "limit": 1})).json()
    page2 = (await client.http.get("/v1/customers", headers=issuer.headers, params={"q": tag, "limit": 1, "page": 2})).json()
    assert (page1["total_results"], page1["total_pages"]) == (2, 2)
    assert {page1["data"][0]["id"], page2["data"][0]["id"]} == {r["id"] for r in body["rows"] if r["ok"]}


async def test_product_csv_import(client, issuer) -> None:
    tag = new_id()[-6:].lower()
    csv_text = (
        "sku,description,product_key,unit_key,unit_name,price,tax_included,taxability,iva,ieps,isr_withholding\n"
        f"A-{tag},Refresco {tag},50202306,H87,Pieza,18.00,true,02,0.16,0.08,\n"
        f"B-{tag},Honorarios {tag},80111600,E48,Servicio,5000,false,02,0.16,,0.10\n"
        f"C-{tag},Libro {tag},55101500,H87,Pieza,250,false,02,exento,,\n"
        f"D-{tag},Mal {tag},99999999,H87,Pieza,1,false,02,0.16,,\n"
    )
    report = (await client.http.post("/v1/products/import", headers=issuer.headers, files={"file": ("productos.csv", csv_text.encode())})).json()
    assert [(r["row"], r["ok"]) for r in report["rows"]] == [(2, True), (3, True), (4, True), (5, False)]
    listed = (await client.http.get("/v1/products", headers=issuer.headers, params={"q": tag})).json()
    taxes = {p["sku"]: p["taxes"] for p in listed["data"]}
    assert [t["type"] for t in taxes[f"A-{tag}"]] == ["IVA", "IEPS"]
    assert taxes[f"B-{tag}"][1] == {"type": "ISR", "rate": "0.10", "factor": "Tasa", "withholding": True}
    assert taxes[f"C-{tag}"] == [{"type": "IVA", "rate": None, "factor": "Exento", "withholding": False}]


async def test_sat_catalog_search_is_accent_insensitive_by_code_or_text(client, issuer) -> None:
    async def search(catalog, q):  # noqa: ANN001, ANN202
        response = await client.http.get(f"/v1/catalogs/{catalog}", headers=issuer.headers, params={"q": q})
        assert response.status_code == 200
        return response.json()["data"]

    assert (await search("unit_keys", "pieza"))[0] == {"code": "H87", "description": "Pieza"}
    assert any(r["code"] == "G03" for r in await search("uses", "gastos en general"))
    assert any("Camión" in r["description"] for r in await search("product_keys", "camion"))
    assert (await search("zip_codes", "86991"))[0]["code"] == "86991"
    assert (await search("tax_regimes", "601"))[0]["code"] == "601"
    assert any(r["code"] == "04" for r in await search("payment_forms", "credito"))
    assert (await search("currencies", "MXN"))[0]["code"] == "MXN"
    assert (await client.http.get("/v1/catalogs/nope", headers=issuer.headers)).status_code == 404


# --------------------------------------------------------------------------- tenant isolation


async def test_another_issuer_cannot_read_or_use_customers_products_or_tickets(client, issuer, other) -> None:
    customer = await _post(client, issuer, "/v1/customers", {**CUSTOMER, "rfc": _random_rfc()})
    product = await _post(client, issuer, "/v1/products", SERVICE)
    branch = await _post(client, issuer, "/v1/branches", {"name": "Centro"})
    ticket = await _post(client, issuer, "/v1/tickets", {"branch_id": branch["id"], "ticket_number": new_id(), "date": datetime.now(ZoneInfo("America/Mexico_City")).isoformat(),
                                                          "total": "1160.00", "payment_form": "01", "items": [{"product_id": product["id"]}]})
    for path in (f"/v1/customers/{customer['id']}", f"/v1/products/{product['id']}", f"/v1/tickets/{ticket['id']}", f"/v1/branches/{branch['id']}"):
        assert (await client.http.get(path, headers=other.headers)).status_code == 404, path
    assert (await client.http.put(f"/v1/customers/{customer['id']}", headers=other.headers, json={"legal_name": "X"})).status_code == 404
    assert (await client.http.delete(f"/v1/products/{product['id']}", headers=other.headers)).status_code == 404
    assert customer["id"] not in {c["id"] for c in (await client.http.get("/v1/customers", headers=other.headers, params={"limit": 100})).json()["data"]}
    foreign = await client.http.post("/v1/tickets", headers=other.headers, json={"branch_id": branch["id"], "ticket_number": "1", "date": "2026-01-01T10:00:00",
                                                                                  "total": "1", "items": [{"product_id": product["id"]}]})
    assert foreign.status_code == 422 and foreign.json()["code"] == "TIMBRA_BRANCH_NOT_FOUND"

    state = await _rejected(client, other, {"customer_id": customer["id"], "items": [{"product_id": product["id"]}], "payment_form": "03", "payment_method": "PUE"})
    assert {e["code"] for e in state["errors"]} == {"TIMBRA_CUSTOMER_NOT_FOUND", "TIMBRA_PRODUCT_NOT_FOUND"}
    state = await _rejected(client, other, {"customer": INLINE, "ticket_id": ticket["id"], "payment_method": "PUE"})
    assert [e["code"] for e in state["errors"]] == ["TIMBRA_TICKET_NOT_FOUND"]
    assert (await client.http.get(f"/v1/customers/{customer['id']}", headers=issuer.headers)).status_code == 200


# --------------------------------------------------------------------------- branches, tickets, global invoice


async def test_a_ticket_is_invoiced_once_and_marked_with_the_invoice(client, issuer) -> None:
    product = await _post(client, issuer, "/v1/products", BOOK)
    customer = await _post(client, issuer, "/v1/customers", {**CUSTOMER, "rfc": _random_rfc()})
    branch = await _post(client, issuer, "/v1/branches", {"name": "Sucursal Pachuca", "zip": "42501"})
    number = new_id()
    body = {"branch_id": branch["id"], "order_number": "O-77", "ticket_number": number, "date": datetime.now(ZoneInfo("America/Mexico_City")).replace(tzinfo=None).isoformat(),
            "total": "232.00", "payment_form": "04", "items": [{"product_id": product["id"], "quantity": "2"}]}
    ticket = await _post(client, issuer, "/v1/tickets", body)
    assert ticket["status"] == "open"
    assert (await client.http.post("/v1/tickets", headers=issuer.headers, json=body)).status_code == 200  # a retry is the same ticket

    state, xml = await _stamped(client, issuer, {"customer_id": customer["id"], "ticket_id": ticket["id"], "payment_method": "PUE"})
    root = etree.fromstring(xml)
    assert (root.get("Total"), root.get("FormaPago")) == ("232.00", "04")
    deadline = time.monotonic() + 15
    while (marked := (await client.http.get(f"/v1/tickets/{ticket['id']}", headers=issuer.headers)).json())["status"] != "invoiced" and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    assert (marked["status"], marked["invoice_id"]) == ("invoiced", state["id"])

    again = await _rejected(client, issuer, {"customer_id": customer["id"], "ticket_id": ticket["id"], "payment_method": "PUE"})
    assert [e["code"] for e in again["errors"]] == ["TIMBRA_TICKET_ALREADY_INVOICED"]


async def test_tickets_from_the_topic_and_the_global_invoice_of_last_month(client, issuer, platform) -> None:
    product = await _post(client, issuer, "/v1/products", BOOK)
    cash = await _post(client, issuer, "/v1/products", {**SERVICE, "description": "Comida", "product_key": "90101501", "unit_key": "E48", "price": "50.00", "tax_included": True,
                                                       "taxes": [{"type": "IVA", "rate": "0"}]})
    branch = await _post(client, issuer, "/v1/branches", {"name": "Sucursal Norte", "zip": "42501"})
    zone = ZoneInfo("America/Mexico_City")
    now = datetime.now(zone)
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=10, hour=12, minute=0, second=0, microsecond=0)
    numbers = [new_id() for _ in range(3)]
    for n, number in enumerate(numbers[:2]):
        await _post(client, issuer, "/v1/tickets", {"branch_id": branch["id"], "ticket_number": number, "date": (last_month + timedelta(days=n)).isoformat(), "total": "166.00",
                                                     "payment_form": "01" if n == 0 else "04", "items": [{"product_id": product["id"]}, {"product_id": cash["id"]}]})
    # the third arrives from a point-of-sale system over Kafka
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        event = TicketSubmitted(issuer_id=issuer.id, ticket=TicketIn(branch_id=branch["id"], ticket_number=numbers[2], date=last_month + timedelta(days=5), total="116.00",
                                                                     payment_form="01", items=[{"product_id": product["id"]}]))
        await producer.send_and_wait(topics.POS_TICKETS, event.model_dump_json().encode(), key=issuer.id.encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + 20
    while (listed := (await client.http.get("/v1/tickets", headers=issuer.headers, params={"branch_id": branch["id"]})).json())["total_results"] < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    tickets = {t["ticket_number"]: t for t in listed["data"]}
    assert set(tickets) == set(numbers)
    late = await _rejected(client, issuer, {"customer": INLINE, "ticket_id": tickets[numbers[0]]["id"], "payment_method": "PUE"})
    assert [e["code"] for e in late["errors"]] == ["TIMBRA_TICKET_WINDOW_CLOSED"]

    bad = await client.http.post(f"/v1/branches/{branch['id']}/global-invoice", headers=issuer.headers, json={"periodicity": "04", "months": "13", "year": last_month.year})
    assert bad.status_code == 422 and bad.json()["code"] == "CFDI40134"
    issued = await _post(client, issuer, f"/v1/branches/{branch['id']}/global-invoice", {"periodicity": "04", "months": f"{last_month.month:02d}", "year": last_month.year}, status=202)
    assert issued["tickets"] == 3
    deadline = time.monotonic() + 30  # like a request produced onto Kafka, it exists once the builder has taken it
    while (await client.http.get(f"/v1/invoices/{issued['invoice_id']}", headers=issuer.headers)).status_code == 404 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    state = (await client.wait_final(issuer, [issued["invoice_id"]], timeout=90))[issued["invoice_id"]]
    assert state["status"] == "emailed", state
    xml = (await client.http.get(f"/v1/invoices/{issued['invoice_id']}/xml", headers=issuer.headers)).content
    root = etree.fromstring(xml)
    info = root.find(f"{CFDI}InformacionGlobal")
    assert (info.get("Periodicidad"), info.get("Meses"), info.get("Año")) == ("04", f"{last_month.month:02d}", str(last_month.year))
    assert root.find(f"{CFDI}Receptor").get("Rfc") == "XAXX010101000"
    assert sorted({c.get("NoIdentificacion") for c in root.iter(f"{CFDI}Concepto")}) == sorted(numbers)
    assert root.get("Total") == "448.00"  # 166 + 166 + 116, taxes included
    assert root.get("FormaPago") == "01"  # the form with the largest amount (282.00 cash)
    deadline = time.monotonic() + 15
    while {t["status"] for t in (await client.http.get("/v1/tickets", headers=issuer.headers, params={"branch_id": branch["id"]})).json()["data"]} != {"invoiced"} and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    final = (await client.http.get("/v1/tickets", headers=issuer.headers, params={"branch_id": branch["id"]})).json()["data"]
    assert {(t["status"], t["invoice_id"]) for t in final} == {("invoiced", issued["invoice_id"])}
    empty = await client.http.post(f"/v1/branches/{branch['id']}/global-invoice", headers=issuer.headers, json={"periodicity": "04", "months": f"{last_month.month:02d}", "year": last_month.year})
    assert empty.status_code == 422 and empty.json()["code"] == "TIMBRA_GLOBAL_NO_TICKETS"
