"""The operator console and the billing back-office over plain HTTP, on the real platform: who
may see what (API and pages), staff login by user and by key, CSRF, the dead-letter store with a
corrected replay, search and the timeline, consumer lag, the retry queues, and balances."""

import asyncio
import json
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from timbra_shared import topics
from timbra_shared.devstack.scenario import Issuer, TimbraClient, sample_invoice
from timbra_shared.ids import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PASSWORD = "Consola2026segura"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)


async def staff_user(client: TimbraClient, role: str) -> str:
    username = f"{role}_{secrets.token_hex(4)}"
    response = await client.http.post("/v1/staff/users", headers=client.admin, json={"name": f"Staff {role}", "email": f"{username}@timbra.example", "username": username, "password": PASSWORD, "role": role})
    assert response.status_code == 201, response.text
    return username


async def staff_key(client: TimbraClient, role: str) -> dict[str, str]:
    response = await client.http.post("/v1/staff/keys", headers=client.admin, json={"role": role, "name": f"pruebas {role}"})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


@asynccontextmanager
async def console(platform: Any, *, username: str | None = None, key: str | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client logged in to the console, and its session's CSRF token."""
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60) as http:
        page = await http.get("/console/entrar")
        data = {"csrf": csrf_of(page.text), "next": ""} | ({"key": key} if key else {"username": username, "password": PASSWORD})
        response = await http.post("/console/entrar", data=data)
        assert response.status_code == 303, response.text[:500]
        landing = await http.get(response.headers["location"], follow_redirects=True)
        yield http, csrf_of(landing.text)


async def produce(platform: Any, topic: str, payload: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=key)
    finally:
        await producer.stop()


async def eventually(probe: Any, timeout: float = 60, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def _exists(client: TimbraClient, issuer: Issuer, invoice_id: str) -> bool:
    return (await client.http.get(f"/v1/invoices/{invoice_id}", headers=issuer.headers)).status_code == 200


OPS_READS = ("/v1/ops/pipeline", "/v1/ops/dead-letters", "/v1/ops/search?q=EKU9003173C9", "/v1/ops/stamping/queue", "/v1/ops/cancellations/queue", "/v1/ops/invoices/inv_x")


async def test_the_ops_api_is_for_operators_and_the_admin_only(client: TimbraClient, issuer: Issuer) -> None:
    billing, operator = await staff_key(client, "billing"), await staff_key(client, "operator")
    for path in OPS_READS:
        assert (await client.http.get(path, headers=issuer.headers)).status_code == 403, f"issuer key on {path}"
        assert (await client.http.get(path, headers=billing)).status_code == 403, f"billing key on {path}"
        expected = 404 if path.endswith("inv_x") else 200
        assert (await client.http.get(path, headers=operator)).status_code == expected, f"operator key on {path}"
        assert (await client.http.get(path, headers=client.admin)).status_code == expected, f"admin key on {path}"
    replay = await client.http.post("/v1/ops/dead-letters/nope/replay", headers=billing, json={})
    assert replay.status_code == 403
    assert (await client.http.get("/v1/ops/whoami", headers=issuer.headers)).status_code == 403
    assert (await client.http.get("/v1/ops/whoami", headers=billing)).json()["roles"] == ["billing"]
    assert (await client.http.get("/v1/ops/whoami", headers=client.admin)).json()["roles"] == ["operator", "billing"]


async def test_an_operator_cannot_touch_the_billing_back_office(client: TimbraClient, issuer: Issuer) -> None:
    operator, billing = await staff_key(client, "operator"), await staff_key(client, "billing")
    resolve = await client.http.post("/v1/billing/exceptions/exc_x/resolve", headers=operator, json={"action": "dismiss", "note": "no debería"})
    assert resolve.status_code == 403
    assert (await client.http.get("/v1/billing/exceptions", headers=operator)).status_code == 403
    assert (await client.http.get("/v1/billing/accounts", headers=operator)).status_code == 403
    assert (await client.http.get("/v1/billing/accounts", headers=issuer.headers)).status_code == 403
    accounts = await client.http.get("/v1/billing/accounts", headers=billing)
    assert accounts.status_code == 200
    mine = next(a for a in accounts.json()["data"] if a["issuer_id"] == issuer.id)
    assert mine["granted"] >= 5000 and mine["rfc"] == issuer.rfc
    assert (await client.http.post("/v1/billing/exceptions/exc_x/resolve", headers=client.admin, json={"action": "dismiss", "note": "no existe"})).status_code == 404


async def test_console_login_roles_and_pages(platform: Any, client: TimbraClient, issuer: Issuer) -> None:
    operator, billing = await staff_user(client, "operator"), await staff_user(client, "billing")
    async with console(platform, username=operator) as (http, token):
        assert (await http.get("/console/")).headers["location"] == "/console/operacion"
        assert (await http.get("/console/operacion")).status_code == 200
        for path in ("/console/operacion/mensajes?estado=todos", "/console/operacion/colas", "/console/operacion/retraso", "/console/operacion/buscar?q=nadie-se-llama-asi"):
            assert (await http.get(path)).status_code == 200, path
        refused = await http.get("/console/cobranza/excepciones")
        assert refused.status_code == 403 and "personal de cobranza" in refused.text
        resolve = await http.post("/console/cobranza/excepciones/exc_x/resolver", data={"csrf": token, "action": "dismiss", "note": "no debería"})
        assert resolve.status_code == 403
        assert "Excepciones" not in (await http.get("/console/operacion")).text, "the menu shows only the member's sections"
    async with console(platform, username=billing) as (http, token):
        assert (await http.get("/console/")).headers["location"] == "/console/cobranza"
        assert (await http.get("/console/operacion")).status_code == 403
        assert (await http.get("/console/operacion/mensajes")).status_code == 403
        assert (await http.get("/console/cobranza/excepciones")).status_code == 200
        page = await http.get(f"/console/cobranza/emisores/{issuer.id}")
        assert page.status_code == 200 and 'id="ledger"' in page.text and "grant" in page.text
        refused = await http.post(f"/console/cobranza/emisores/{issuer.id}/creditos", data={"csrf": token, "stamps": "0", "months": "12"})
        assert refused.status_code == 422 and 'class="field has-error"' in refused.text.split('id="grant-form"')[1].split("</form>")[0]
        for path, marker in (("/console/cobranza", 'id="accounts"'), ("/console/cobranza/productos", "TIM0100"), ("/console/cobranza/referencias", 'id="references"'),
                             ("/console/cobranza/estados", 'id="statement-form"'), ("/console/cobranza/excepciones?estado=todas", "Excepciones de conciliación")):
            shown = await http.get(path)
            assert shown.status_code == 200 and marker in shown.text, path
        products = (await client.http.get("/v1/billing/products", headers=client.admin)).json()["data"]
        product = next(p for p in products if p["code"] == "TIM0100")
        form = {"csrf": token, "description": product["description"], "price": "no es precio", "stamps": str(product["stamps"]), "months": str(product["months"]), "active": "on"}
        bad_price = await http.post("/console/cobranza/productos/TIM0100", data=form)
        assert bad_price.status_code == 422 and 'class="field-error"' in bad_price.text.split('id="product-TIM0100"')[1].split("</form>")[0]
        same = await http.post("/console/cobranza/productos/TIM0100", data=form | {"price": str(product["price"])})
        assert same.status_code == 303
        after = next(p for p in (await client.http.get("/v1/billing/products", headers=client.admin)).json()["data"] if p["code"] == "TIM0100")
        assert after["price"] == product["price"]
    async with console(platform, key=platform.admin_key) as (http, _token):
        menu = (await http.get("/console/operacion")).text
        assert "Mensajes muertos" in menu and "Excepciones" in menu
        cookie = http.cookies.get("timbra_console") or ""
        assert cookie and platform.admin_key not in cookie, "the key travels sealed in the cookie"


async def test_issuers_and_bad_credentials_are_kept_out_and_posts_need_csrf(platform: Any, client: TimbraClient, issuer: Issuer) -> None:
    owner = "owner_" + secrets.token_hex(4)
    created = await client.http.post("/v1/issuers/me/users", headers=issuer.headers, json={"name": "Dueña", "email": f"{owner}@example.com", "username": owner, "password": PASSWORD})
    assert created.status_code == 201, created.text
    async with httpx.AsyncClient(base_url=platform.url("ingress"), timeout=60) as http:
        assert (await http.get("/console/operacion")).headers["location"].startswith("/console/entrar")
        page = await http.get("/console/entrar")
        token = csrf_of(page.text)
        assert (await http.post("/console/entrar", data={"key": platform.admin_key})).status_code == 403, "no CSRF token"
        as_owner = await http.post("/console/entrar", data={"csrf": token, "username": owner, "password": PASSWORD})
        assert as_owner.status_code == 401 and "panel" in as_owner.text and "timbra_console" not in as_owner.cookies
        as_issuer_key = await http.post("/console/entrar", data={"csrf": token, "key": issuer.api_key})
        assert as_issuer_key.status_code == 401 and "emisor" in as_issuer_key.text
        bad_key = await http.post("/console/entrar", data={"csrf": token, "key": "tk_staff_" + secrets.token_urlsafe(32)})
        assert bad_key.status_code == 401 and "no es válida" in bad_key.text
    operator = await staff_user(client, "operator")
    async with console(platform, username=operator) as (http, token), console(platform, username=operator) as (_other, other_token):
        for path in ("/console/operacion/mensajes/x/reenviar", "/console/operacion/mensajes/x/descartar", "/console/operacion/colas/timbrado/x", "/console/salir"):
            assert (await http.post(path, data={})).status_code == 403, path
            assert (await http.post(path, data={"csrf": other_token})).status_code == 403, f"{path}: another session's token"
        out = await http.post("/console/salir", data={"csrf": token})
        assert out.status_code == 303
        assert (await http.get("/console/operacion")).headers["location"].startswith("/console/entrar")


async def test_a_poison_message_is_stored_fixed_and_replayed_once(platform: Any, client: TimbraClient, issuer: Issuer) -> None:
    operator = await staff_key(client, "operator")
    invoice_id = new_id("inv_")
    poison = {"invoice_id": invoice_id, "request": sample_invoice(email=None)}  # no issuer_id: nobody to reject it to
    await produce(platform, topics.INVOICE_REQUESTED, json.dumps(poison).encode(), invoice_id.encode())

    async def stored() -> dict[str, Any] | None:
        rows = (await client.http.get("/v1/ops/dead-letters", headers=operator, params={"invoice_id": invoice_id})).json()["data"]
        # every consumer group of the topic that could not read it dead-letters it: one letter each
        return next((r for r in rows if r["service"] == "cfdi-builder"), None)

    letter = await eventually(stored)
    assert letter, "the dead letter reached the store"
    assert letter["status"] == "open" and letter["original_topic"] == topics.INVOICE_REQUESTED and letter["service"] == "cfdi-builder"
    assert json.loads(letter["payload"]) == poison and letter["error_type"] == "PoisonMessage"
    refused = await client.http.post(f"/v1/ops/dead-letters/{letter['id']}/replay", headers=operator, json={"payload": "{esto no es json"})
    assert refused.status_code == 422 and refused.json()["code"] == "TIMBRA_REPLAY_INVALID_JSON"
    fixed = json.dumps(poison | {"issuer_id": issuer.id, "event_type": "invoice.requested"})
    replayed = await client.http.post(f"/v1/ops/dead-letters/{letter['id']}/replay", headers=operator, json={"payload": fixed, "note": "faltaba el emisor"})
    assert replayed.status_code == 200, replayed.text
    body = replayed.json()
    assert body["status"] == "replayed" and body["replays"][0]["by"]["kind"] == "staff" and body["replays"][0]["outcome"] == "sent"
    assert body["replays"][0]["corrected"] is True and body["replays"][0]["note"] == "faltaba el emisor"
    assert await eventually(lambda: _exists(client, issuer, invoice_id)), "the corrected request reached the builder"
    state = (await client.wait_final(issuer, [invoice_id], timeout=90))[invoice_id]
    assert state["status"] == "emailed", state
    # a second replay of the same fix is harmless: idempotent consumers, still one invoice
    again = await client.http.post(f"/v1/ops/dead-letters/{letter['id']}/replay", headers=operator, json={"payload": fixed})
    assert again.status_code == 200 and len(again.json()["replays"]) == 2
    await asyncio.sleep(2)
    listed = (await client.http.get("/v1/invoices", headers=issuer.headers, params={"uuid": state["uuid"]})).json()["data"]
    assert [i["id"] for i in listed] == [invoice_id]
    timeline = (await client.http.get(f"/v1/ops/invoices/{invoice_id}", headers=operator)).json()
    assert letter["id"] in [d["id"] for d in timeline["dead_letters"]]
    # a discarded letter cannot be replayed
    other = new_id("inv_")
    await produce(platform, topics.INVOICE_REQUESTED, b"{not json", other.encode())

    async def unreadable() -> dict[str, Any] | None:
        rows = (await client.http.get("/v1/ops/dead-letters", headers=operator, params={"invoice_id": other})).json()["data"]
        return rows[0] if rows else None

    bad = await eventually(unreadable)
    assert bad and bad["payload"] == "{not json"
    discarded = await client.http.post(f"/v1/ops/dead-letters/{bad['id']}/discard", headers=operator, json={"note": "basura de una prueba"})
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    assert (await client.http.post(f"/v1/ops/dead-letters/{bad['id']}/replay", headers=operator, json={})).status_code == 409
    # the same store from a terminal: timbra dlq
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "timbra_shared.cli", "dlq", "--url", platform.url("ingress"), "--key", operator["Authorization"].split()[1],
        "list", "--status", "discarded", "--invoice", other, "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await cli.communicate()
    assert cli.returncode == 0, err.decode()
    assert bad["id"] in [r["id"] for r in json.loads(out)]


async def test_search_timeline_pipeline_lag_and_queues(client: TimbraClient, issuer: Issuer) -> None:
    operator = await staff_key(client, "operator")
    created = await client.create_invoice(issuer, sample_invoice(email=None))
    assert created.status_code == 202
    invoice_id = created.json()["id"]
    state = (await client.wait_final(issuer, [invoice_id]))[invoice_id]
    assert state["status"] == "emailed"
    by_uuid = (await client.http.get("/v1/ops/search", headers=operator, params={"q": state["uuid"].lower()})).json()
    assert by_uuid["kind"] == "uuid" and [i["id"] for i in by_uuid["invoices"]] == [invoice_id]
    by_rfc = (await client.http.get("/v1/ops/search", headers=operator, params={"q": issuer.rfc})).json()
    assert issuer.id in [i["id"] for i in by_rfc["issuers"]] and invoice_id in [i["id"] for i in by_rfc["invoices"]]
    by_id = (await client.http.get("/v1/ops/search", headers=operator, params={"q": issuer.id})).json()
    assert by_id["issuers"][0]["rfc"] == issuer.rfc
    detail = (await client.http.get(f"/v1/ops/invoices/{invoice_id}", headers=operator)).json()
    steps = [s["status"] for s in detail["timeline"]]
    assert steps[:5] == ["requested", "built", "sealed", "funded", "stamped"] and "emailed" in steps
    assert {s["service"] for s in detail["timeline"]} >= {"cfdi-builder", "issuer-profile", "billing", "stamping", "notifier"}
    assert detail["trace_id"] and detail["issuer"]["id"] == issuer.id and detail["trace_url"] is None

    pipeline = (await client.http.get("/v1/ops/pipeline", headers=operator)).json()
    statuses = {s["status"]: s for s in pipeline["statuses"]}
    assert statuses["emailed"]["total"] >= 1 and pipeline["total"] >= 1
    assert pipeline["error_rate"]["finished"] >= 1 and 0 <= (pipeline["error_rate"]["rate"] or 0) <= 1

    lag = (await client.http.get("/v1/ops/lag", headers=operator)).json()
    requested = next(t for t in lag["topics"] if t["topic"] == topics.INVOICE_REQUESTED)
    assert requested["end_offset"] >= 1
    assert "cfdi-builder.build" in {g["group"] for g in requested["groups"]}

    stamping = (await client.http.get("/v1/ops/stamping/queue", headers=operator)).json()
    assert set(stamping) == {"counts", "retrying", "dead"}
    cancellations = (await client.http.get("/v1/ops/cancellations/queue", headers=operator)).json()
    assert set(cancellations) == {"counts", "pending", "escalated"}


async def test_the_stamping_retry_queue_shows_an_invoice_waiting_for_the_pac(platform: Any, client: TimbraClient, issuer: Issuer) -> None:
    operator = await staff_key(client, "operator")
    async with httpx.AsyncClient(base_url=platform.url("sandbox-pac"), timeout=10) as pac:
        await pac.put("/admin/faults", json={"mode": "outage"})  # 503 "SAT no disponible": a transient failure, retried with back-off
        try:
            created = await client.create_invoice(issuer, sample_invoice(email=None))
            invoice_id = created.json()["id"]

            async def waiting() -> dict[str, Any] | None:
                queue = (await client.http.get("/v1/ops/stamping/queue", headers=operator)).json()
                return next((j for j in queue["retrying"] if j["invoice_id"] == invoice_id), None)

            job = await eventually(waiting, timeout=120)
            assert job, "the invoice waits in the retry queue"
            assert job["attempts"] >= 1 and job["last_error"] and job["next_attempt_at"] and job["issuer_id"] == issuer.id
            async with console(platform, key=operator["Authorization"].split()[1]) as (http, _token):
                fragment = await http.get("/console/operacion/colas")
                assert fragment.status_code == 200 and invoice_id in fragment.text
            detail = (await client.http.get(f"/v1/ops/invoices/{invoice_id}", headers=operator)).json()
            assert detail["status"] == "funded"
        finally:
            await pac.put("/admin/faults", json={"mode": "none"})
    state = (await client.wait_final(issuer, [invoice_id], timeout=400))[invoice_id]
    assert state["status"] == "emailed", state
    replay = await client.http.post(f"/v1/ops/stamping/jobs/{invoice_id}/replay", headers=operator)
    assert replay.status_code == 409 and replay.json()["code"] == "TIMBRA_STAMP_JOB_NOT_DEAD"
