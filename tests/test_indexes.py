"""Every MongoDB query on the hot path is index-backed. The test records what the services really
ask mongod (the database profiler, level 2, on every ``timbra_*`` database) while one issuer goes
through the pipeline and the API's reads (invoice by id, by idempotency key, every list filter,
XML, PDF, tickets, customers, balance, ledger, a cancellation), then runs ``explain`` on each
distinct query shape and asserts that no winning plan is a collection scan. docs/scaling.md lists
the indexes."""

import asyncio
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pymongo.errors import OperationFailure

from timbra_shared.devstack.scenario import sample_invoice
from timbra_shared.ids import new_id
from timbra_shared.mongo import make_client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

# Fields of a profiled command that belong to the session/transaction, not to the query.
NOT_QUERY = {"lsid", "txnNumber", "$db", "$clusterTime", "autocommit", "startTransaction", "readConcern", "writeConcern", "$readPreference", "maxTimeMS", "cursor", "comment", "shardVersion", "databaseVersion"}
# The named hot paths: each must have been seen (so the test cannot pass by profiling nothing).
HOT = {
    "builder: invoice by id": ("timbra_cfdi_builder.invoices", "_id"),
    "builder: invoice by idempotency key": ("timbra_cfdi_builder.invoices", "idempotency_key"),
    "builder: list by status": ("timbra_cfdi_builder.invoices", "status"),
    "builder: list by customer RFC": ("timbra_cfdi_builder.invoices", "customer_rfc"),
    "builder: list by UUID": ("timbra_cfdi_builder.invoices", "uuid"),
    "builder: sweeper": ("timbra_cfdi_builder.invoices", "updated_at"),
    "stamping: job claim": ("timbra_stamping.stamp_jobs", "next_attempt_at"),
    "stamping: stamped XML": ("timbra_stamping.stamps", "_id"),
    "billing: reservation": ("timbra_billing.reservations", "_id"),
    "billing: ledger": ("timbra_billing.ledger", "issuer_id"),
    "notifier: email claim": ("timbra_notifier.emails", "_id"),
    "notifier: document": ("timbra_notifier.documents", "_id"),
    "catalog: ticket": ("timbra_catalog.tickets", "_id"),
    "outbox: unsent events": ("timbra_stamping.outbox", "sent_at"),
    "dedupe markers": ("timbra_notifier.processed", "_id"),  # batch handlers insert markers without looking first; was_processed looks
}
# Periodic passes that scan on purpose, once a minute, not per invoice (docs/scaling.md): the
# gauges behind the low-credit and CSD-expiry alerts.
BACKGROUND = {("timbra_billing.accounts", "aggregate"), ("timbra_issuer_profile.csds", "aggregate")}


def _winning_plans(node: Any) -> list[dict]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "winningPlan":
                found.append(value)
            else:
                found += _winning_plans(value)
    elif isinstance(node, list):
        for value in node:
            found += _winning_plans(value)
    return found


def _stages(plan: Any) -> list[str]:
    if isinstance(plan, dict):
        return ([plan["stage"]] if "stage" in plan else []) + [s for v in plan.values() for s in _stages(v)]
    if isinstance(plan, list):
        return [s for v in plan for s in _stages(v)]
    return []


def _explainable(entry: dict) -> tuple[dict, str] | None:
    """The command to explain for a profiler entry, and the filter's field names (its shape)."""
    coll = entry["ns"].split(".", 1)[1]
    command = {k: v for k, v in entry.get("command", {}).items() if k not in NOT_QUERY}
    op = entry["op"]
    if op == "query" and "find" in command:
        return command, json.dumps(sorted(command.get("filter", {})))
    if op == "update":
        return {"update": coll, "updates": [{k: command[k] for k in ("q", "u", "multi", "upsert", "arrayFilters") if k in command}]}, json.dumps(sorted(command.get("q", {})))
    if op == "remove":
        return {"delete": coll, "deletes": [{"q": command.get("q", {}), "limit": command.get("limit", 0)}]}, json.dumps(sorted(command.get("q", {})))
    if op == "command" and ({"findAndModify", "findandmodify"} & set(command)):
        return command, json.dumps(sorted(command.get("query", {})))
    if op == "command" and ("count" in command or "distinct" in command):
        return command, json.dumps(sorted(command.get("query", {})))
    if op == "command" and "aggregate" in command:
        match = next((s["$match"] for s in command.get("pipeline", []) if "$match" in s), {})
        return {**command, "cursor": {}}, json.dumps(sorted(match))
    return None


async def _profile(mongo, level: int) -> list[str]:  # noqa: ANN001
    names = [n for n in await mongo.list_database_names() if n.startswith("timbra_")]
    for name in names:
        db = mongo[name]
        if level:
            await db.command("profile", 0)
            await db.drop_collection("system.profile")
            await db.create_collection("system.profile", capped=True, size=64 * 1024 * 1024)
            await db.command("profile", level, slowms=0)
        else:
            await db.command("profile", 0)
    return names


async def _hot_path(client, issuer) -> None:  # noqa: ANN001
    """Drive the pipeline and the API reads for one issuer."""
    http, headers = client.http, issuer.headers
    product = (await http.post("/v1/products", headers=headers, json={"description": "Libro", "product_key": "55101500", "unit_key": "H87", "price": "100.00", "taxes": [{"type": "IVA", "rate": "0.16"}]})).json()
    customer = (await http.post("/v1/customers", headers=headers, json={"rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO DE CUAUTITLAN IZCALLI", "tax_regime": "603", "zip": "54700", "use": "G03", "email": "indices@example.com"})).json()
    branch = (await http.post("/v1/branches", headers=headers, json={"name": "Sucursal Índices", "zip": "42501"})).json()
    ticket = (await http.post("/v1/tickets", headers=headers, json={
        "branch_id": branch["id"], "ticket_number": new_id(), "date": datetime.now(ZoneInfo("America/Mexico_City")).replace(tzinfo=None).isoformat(),
        "total": "116.00", "payment_form": "04", "items": [{"product_id": product["id"], "quantity": "1"}]})).json()
    assert "id" in product and "id" in customer and "id" in ticket, (product, customer, ticket)
    key = new_id()
    bodies = [sample_invoice(email=f"{key}-{n}@example.com", idempotency_key=f"{key}-{n}") for n in range(4)]
    bodies.append({"customer_id": customer["id"], "ticket_id": ticket["id"], "payment_method": "PUE", "idempotency_key": f"{key}-ticket"})
    ids = []
    for body in bodies:
        response = await client.create_invoice(issuer, body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    assert (await client.create_invoice(issuer, bodies[0])).json()["id"] == ids[0]  # the idempotency key's lookup
    states = await client.wait_final(issuer, ids, timeout=240, interval=0.5)
    assert {s["status"] for s in states.values()} == {"emailed"}, states
    first = states[ids[0]]
    for params in ({}, {"status": "emailed"}, {"customer_rfc": "MCI7306249Y1"}, {"customer_id": customer["id"]}, {"uuid": first["uuid"]},
                   {"idempotency_key": f"{key}-1"}, {"serie": first["serie"], "folio": first["folio"]}, {"type": "I"},
                   {"created_from": "2020-01-01"}, {"limit": 2}):
        listed = await http.get("/v1/invoices", headers=headers, params=params)
        assert listed.status_code == 200, (params, listed.text)
    nxt = (await http.get("/v1/invoices", headers=headers, params={"limit": 2})).json().get("next_cursor")
    if nxt:
        assert (await http.get("/v1/invoices", headers=headers, params={"limit": 2, "starting_after": nxt})).status_code == 200
    for path in (f"/v1/invoices/{ids[0]}", f"/v1/invoices/{ids[0]}/xml", f"/v1/invoices/{ids[0]}/pdf", f"/v1/tickets/{ticket['id']}", f"/v1/customers/{customer['id']}",
                 "/v1/tickets", "/v1/customers", "/v1/billing/balance", "/v1/billing/ledger"):
        assert (await http.get(path, headers=headers)).status_code == 200, path
    assert (await http.delete(f"/v1/invoices/{ids[1]}", params={"motive": "02"}, headers=headers)).status_code == 202
    await asyncio.sleep(3)  # the cancellation's first steps, the outbox relays, a sweep


async def test_no_collection_scan_on_the_hot_path(client, platform) -> None:
    issuer = await client.onboard(rfc="IDX010101AA1", legal_name="INDICES", tax_regime="601", zip_code="42501", credits=20)
    mongo = make_client(platform.mongodb_url)
    try:
        names = await _profile(mongo, 2)
        try:
            await _hot_path(client, issuer)
        finally:
            await _profile(mongo, 0)
        shapes: dict[tuple[str, str, str], tuple[dict, dict]] = {}
        for name in names:
            async for entry in mongo[name]["system.profile"].find({"ns": {"$not": {"$regex": r"\.system\."}}}):
                found = _explainable(entry)
                if found is not None and (entry["ns"], next(iter(found[0]))) not in BACKGROUND:
                    shapes.setdefault((entry["ns"], entry["op"], found[1]), (found[0], entry))
        scans, explained = [], 0
        for (ns, op, fields), (command, entry) in sorted(shapes.items(), key=lambda kv: kv[0]):
            try:
                plan = await mongo[ns.split(".", 1)[0]].command({"explain": command, "verbosity": "queryPlanner"})
            except OperationFailure as exc:
                raise AssertionError(f"explain failed for {ns} {op} {fields}: {exc}") from exc
            explained += 1
            stages = [s for p in _winning_plans(plan) for s in _stages(p)]
            if "COLLSCAN" in stages or "COLLSCAN" in str(entry.get("planSummary", "")):
                scans.append(f"{ns} {op} {fields}: {entry.get('planSummary')}")
    finally:
        await mongo.close()
    print(f"{explained} query shapes explained")
    for ns, op, fields in sorted(shapes):
        print(f"  {ns:45} {op:8} {fields}")
    missing = [name for name, (ns, field) in HOT.items() if not any(s[0] == ns and field in json.loads(s[2]) for s in shapes)]
    assert not missing, f"hot paths not seen by the profiler: {missing}"
    assert not scans, "collection scans:\n" + "\n".join(scans)
