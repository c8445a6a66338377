"""The public API's documents on the real platform: the merged OpenAPI document validates and
covers every public route, the docs page needs no internet, the AsyncAPI document describes
``invoice.requested``; and a bounded schemathesis run finds no server error and no error answer
outside the one error format."""

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from timbra_shared.ingress import route_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SERVICES = ("issuer-profile", "catalog", "cfdi-builder", "stamping", "cancellation", "billing", "notifier")
METHODS = {"get", "put", "post", "delete", "patch"}


async def test_openapi_validates_and_covers_every_public_route(client, platform) -> None:
    response = await client.http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    validate(doc)  # openapi-spec-validator: raises on an invalid document
    assert doc["components"]["securitySchemes"]["bearer"] == {**doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    merged = {(m, p) for p, item in doc["paths"].items() for m in item if m in METHODS}
    assert not [p for _, p in merged if not p.startswith("/v1/")], "only the public /v1 routes"

    expected = set()
    async with httpx.AsyncClient(timeout=30) as direct:
        for name in SERVICES:
            own = (await direct.get(f"{platform.url(name)}/openapi.json")).json()
            for path, item in own["paths"].items():
                for method in set(item) & METHODS:
                    if path.startswith("/v1/") and route_for(method.upper(), re.sub(r"\{[^}]+\}", "x", path)) == name:
                        expected.add((method, path))
    assert expected <= merged, f"missing from /openapi.json: {sorted(expected - merged)}"
    for route in [("post", "/v1/invoices"), ("get", "/v1/invoices"), ("get", "/v1/invoices/{invoice_id}"), ("get", "/v1/invoices/{invoice_id}/xml"),
                  ("get", "/v1/invoices/{invoice_id}/pdf"), ("get", "/v1/invoices/{invoice_id}/zip"), ("post", "/v1/invoices/{invoice_id}/email"),
                  ("post", "/v1/invoices/preview/pdf"), ("post", "/v1/issuers"), ("put", "/v1/issuers/me/csd"), ("get", "/v1/billing/balance"),
                  ("post", "/v1/billing/payment-references"), ("get", "/v1/catalogs/{catalog}"), ("post", "/v1/customers"),
                  ("delete", "/v1/invoices/{invoice_id}"), ("get", "/v1/invoices/{invoice_id}/cancellation_receipt")]:
        assert route in merged, route

    create = doc["paths"]["/v1/invoices"]["post"]
    assert {p["name"] for p in create["parameters"]} >= {"wait", "timeout", "Idempotency-Key"}
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "Retry-After" in create["responses"]["429"]["headers"]
    listing = {p["name"] for p in doc["paths"]["/v1/invoices"]["get"]["parameters"]}
    assert listing >= {"status", "customer_id", "customer_rfc", "created_from", "created_to", "serie", "folio", "uuid", "limit", "starting_after"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]


async def test_docs_page_is_self_hosted(client) -> None:
    page = await client.http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "/v1/invoices/{invoice_id}/zip" in html and "Idempotency-Key" in html
    external = re.findall(r"""(?:src|href)\s*=\s*['"](https?:)?//""", html)
    assert not external, "the docs page must not load anything from the internet"


async def test_asyncapi_describes_invoice_requested(client) -> None:
    doc = (await client.http.get("/asyncapi.json")).json()
    assert doc["asyncapi"].startswith("3.")
    channels = {c["address"]: c for c in doc["channels"].values()}
    assert {"invoice.requested", "invoice.stamped", "invoice.rejected", "invoice.emailed"} <= set(channels)
    message = next(iter(channels["invoice.requested"]["messages"].values()))["$ref"].rsplit("/", 1)[-1]
    payload = doc["components"]["messages"][message]["payload"]["$ref"].rsplit("/", 1)[-1]
    assert payload == "InvoiceRequested"
    schema = doc["components"]["schemas"]["InvoiceRequested"]
    assert set(schema["required"]) == {"invoice_id", "issuer_id", "request"}


async def test_schemathesis_finds_no_server_error(client, platform, tmp_path) -> None:
    """Fuzzes every operation of /openapi.json with a fresh issuer's key (its own tenant, so the
    other tests' data stays as it is). Budget: TIMBRA_SCHEMATHESIS_EXAMPLES cases per operation
    (about 270 requests, 1-4 minutes); the report is kept in the platform's log folder."""
    fuzzed = await client.onboard(rfc="FUZ010101AB1", legal_name="EMISOR FUZZ", tax_regime="601", zip_code="06000", credits=0)
    report = platform.config.log_dir / "schemathesis"
    report.mkdir(exist_ok=True)
    argv = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{platform.url('ingress')}/openapi.json",
        "-H", f"Authorization: Bearer {fuzzed.api_key}",
        "--checks", "not_a_server_error,timbra_error_body",
        # the coverage phase (every boundary value of every parameter) takes ~15 min on 2 busy cores:
        # TIMBRA_SCHEMATHESIS_PHASES=examples,coverage,fuzzing for a thorough run
        "--phases", os.environ.get("TIMBRA_SCHEMATHESIS_PHASES", "examples,fuzzing"),
        "--max-examples", os.environ.get("TIMBRA_SCHEMATHESIS_EXAMPLES", "3"),
        "--workers", "2", "--request-timeout", "20", "--no-shrink",
        "--generation-database", "none", "--no-color",
        # generating multipart bodies (the bank statement upload) is slow on a loaded 2-core box; not a finding
        "--suppress-health-check", "too_slow",
        "--report", "junit", "--report-dir", str(report),
        # sends mail to whatever host it is given; covered by the issuer-profile tests
        "--exclude-path", "/v1/issuers/me/smtp/test",
    ]
    if os.environ.get("TIMBRA_SCHEMATHESIS_SEED"):
        argv += ["--seed", os.environ["TIMBRA_SCHEMATHESIS_SEED"]]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "api_schemathesis_hooks", "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    (report / "output.txt").write_text(run.stdout + run.stderr, encoding="utf-8")
    summary = run.stdout[run.stdout.find("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-3000:]
    assert "Tested:" in summary, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, run.stdout[-12000:]
