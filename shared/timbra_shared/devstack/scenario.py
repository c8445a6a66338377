"""An async client for the public API, used by the end-to-end tests, ``timbra demo`` and the
benchmarks, so they all drive the platform exactly as an integrator would."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from timbra_shared.cfdi.testing import make_csd

FINAL = frozenset({"emailed", "rejected", "stamp_failed", "canceled"})
DEMO_ISSUER = {"rfc": "EKU9003173C9", "legal_name": "ESCUELA KEMPER URGATE", "tax_regime": "601", "zip": "42501"}


@dataclass
class Issuer:
    id: str
    api_key: str
    slug: str
    rfc: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def sample_invoice(*, email: str | None = "cliente@example.com", items: int = 1, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "I",
        "customer": {"rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO DE CUAUTITLAN IZCALLI", "tax_regime": "603", "zip": "54700", "use": "G03", **({"email": email} if email else {})},
        "items": [
            {"product": {"description": f"Servicio de consultoría {n + 1}", "product_key": "81112101", "unit_key": "E48", "price": "100.00", "taxes": [{"type": "IVA", "rate": "0.16"}]}, "quantity": "2"}
            for n in range(items)
        ],
        "payment_form": "03",
        "payment_method": "PUE",
    }
    body.update(overrides)
    return body


class TimbraClient:
    def __init__(self, base_url: str, admin_key: str, *, timeout: float = 30.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=httpx.Limits(max_connections=100, keepalive_expiry=4.0))
        self.admin = {"Authorization": f"Bearer {admin_key}"}

    async def __aenter__(self) -> "TimbraClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def onboard(
        self,
        *,
        rfc: str = DEMO_ISSUER["rfc"],
        legal_name: str = DEMO_ISSUER["legal_name"],
        tax_regime: str = DEMO_ISSUER["tax_regime"],
        zip_code: str = DEMO_ISSUER["zip"],
        credits: int = 100,
        csd: tuple[bytes, bytes, str] | None = None,
        accept: bool = True,
    ) -> Issuer:
        """Create an issuer, accept the terms, upload a CSD and grant credits."""
        response = await self.http.post("/v1/issuers", headers=self.admin, json={"rfc": rfc, "legal_name": legal_name, "tax_regime": tax_regime, "zip": zip_code, "email": "emisor@example.com"})
        response.raise_for_status()
        body = response.json()
        issuer = Issuer(id=body["id"], api_key=body["api_key"], slug=body["slug"], rfc=rfc)
        if accept:
            (await self.http.put("/v1/issuers/me/acceptances", headers=issuer.headers, json={"privacy_notice": True, "carta_manifiesto": True})).raise_for_status()
        if csd is None:
            cer, key = make_csd(rfc=rfc, name=legal_name)
            csd = (cer, key, "12345678a")
        upload = await self.http.put("/v1/issuers/me/csd", headers=issuer.headers, files={"cer": ("csd.cer", csd[0]), "key": ("csd.key", csd[1])}, data={"password": csd[2]})
        upload.raise_for_status()
        if credits:
            (await self.http.post("/v1/billing/credits", headers=self.admin, json={"issuer_id": issuer.id, "stamps": credits, "months": 12})).raise_for_status()
        return issuer

    async def create_invoice(self, issuer: Issuer, body: dict[str, Any] | None = None, **params: Any) -> httpx.Response:
        return await self.http.post("/v1/invoices", headers=issuer.headers, json=body or sample_invoice(), params=params)

    async def invoice(self, issuer: Issuer, invoice_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/invoices/{invoice_id}", headers=issuer.headers)
        response.raise_for_status()
        return response.json()

    async def wait_final(
        self,
        issuer: Issuer,
        invoice_ids: list[str],
        *,
        until: frozenset[str] = FINAL,
        timeout: float = 60.0,
        interval: float = 0.2,
        sample: int = 25,
    ) -> dict[str, dict[str, Any]]:
        """Poll until every invoice reaches one of ``until``; returns the last state of each.

        Each round asks about at most ``sample`` pending invoices (oldest first), so waiting on a
        large burst does not itself load the platform."""
        deadline = time.monotonic() + timeout
        pending = list(dict.fromkeys(invoice_ids))
        states: dict[str, dict[str, Any]] = {}
        while pending:
            batch = pending[:sample]
            for invoice_id, state in zip(batch, await asyncio.gather(*(self.invoice(issuer, i) for i in batch)), strict=True):
                states[invoice_id] = state
            done = {i for i in batch if states[i]["status"] in until}
            pending = [i for i in pending if i not in done]
            if not pending or time.monotonic() >= deadline:
                break
            if not done:
                await asyncio.sleep(interval)
        for invoice_id in pending:
            states.setdefault(invoice_id, {"id": invoice_id, "status": "unknown", "timeline": []})
        return states
