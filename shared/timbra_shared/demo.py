"""``timbra demo``: one invoice from nothing to an email, through the public API only."""

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

from timbra_shared.cfdi.testing import make_csd


def _admin_key(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("TIMBRA_ADMIN_KEY"):
        return os.environ["TIMBRA_ADMIN_KEY"]
    path = Path(os.environ.get("TIMBRA_DATA_DIR", ".data")) / "admin_key"
    return path.read_text().strip()


def run(url: str, admin_key: str, *, timeout: float = 60.0) -> dict:
    with httpx.Client(base_url=url, timeout=30) as http:
        admin = {"Authorization": f"Bearer {admin_key}"}
        created = http.post("/v1/issuers", headers=admin, json={
            "rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE", "tax_regime": "601", "zip": "42501", "email": "emisor@example.com",
        })
        created.raise_for_status()
        issuer = created.json()
        key = {"Authorization": f"Bearer {issuer['api_key']}"}
        http.put("/v1/issuers/me/acceptances", headers=key, json={"privacy_notice": True, "carta_manifiesto": True}).raise_for_status()
        cer, private_key = make_csd(rfc="EKU9003173C9", name="ESCUELA KEMPER URGATE")
        http.put("/v1/issuers/me/csd", headers=key, files={"cer": ("csd.cer", cer), "key": ("csd.key", private_key)}, data={"password": "12345678a"}).raise_for_status()
        http.post("/v1/billing/credits", headers=admin, json={"issuer_id": issuer["id"], "stamps": 10, "months": 12}).raise_for_status()
        started = time.perf_counter()
        invoice = http.post("/v1/invoices", headers=key, json={
            "type": "I",
            "customer": {"rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO DE CUAUTITLAN IZCALLI", "tax_regime": "603", "zip": "54700", "use": "G03", "email": "cliente@example.com"},
            "items": [{"product": {"description": "Servicio de consultoría", "product_key": "81112101", "unit_key": "E48", "price": "100.00", "taxes": [{"type": "IVA", "rate": "0.16"}]}, "quantity": "2"}],
            "payment_form": "03",
            "payment_method": "PUE",
        })
        invoice.raise_for_status()
        invoice_id = invoice.json()["id"]
        status = invoice.json()
        while time.perf_counter() - started < timeout and status["status"] not in ("emailed", "rejected", "stamp_failed"):
            time.sleep(0.1)
            status = http.get(f"/v1/invoices/{invoice_id}", headers=key).json()
        status["elapsed_s"] = round(time.perf_counter() - started, 3)
        status["api_key"] = issuer["api_key"]
        return status


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="timbra demo")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--admin-key")
    args = parser.parse_args(argv)
    try:
        status = run(args.url, _admin_key(args.admin_key))
    except (httpx.HTTPError, OSError) as exc:
        detail = getattr(getattr(exc, "response", None), "text", "")
        print(f"demo falló: {exc} {detail}", file=sys.stderr)
        return 1
    for step in status["timeline"]:
        print(f"{step['at']}  {step['status']:<12} {step['service']}")
    print(f"factura {status['id']}: {status['status']} UUID {status.get('uuid')} en {status['elapsed_s']} s")
    print(f"llave de API del emisor de prueba: {status['api_key']}")
    return 0 if status["status"] == "emailed" else 1
