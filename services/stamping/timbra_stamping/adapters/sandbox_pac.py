"""Adapter for Timbra's sandbox PAC, whose contract mirrors SW Sapien's stamp API:
``POST /cfdi33/stamp/v4`` (multipart ``xml``), bearer token, envelope
``{status, message, messageDetail, data}``, and code 307 for a CFDI stamped before."""

import httpx

from timbra_stamping.domain.pac import PacRejected, PacUnavailable, StampResult

TIMBRE_PREVIO = "307"


class SandboxPacClient:
    name = "sandbox"

    def __init__(self, base_url: str, token: str = "sandbox-token", timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {token}"})

    async def stamp(self, xml: bytes, *, idempotency_id: str) -> StampResult:
        try:
            response = await self._client.post("/cfdi33/stamp/v4", files={"xml": ("cfdi.xml", xml, "text/xml")}, headers={"customid": idempotency_id})
        except httpx.HTTPError as exc:
            raise PacUnavailable(f"PAC no disponible: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise PacUnavailable(f"PAC respondió {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise PacUnavailable(f"respuesta inválida del PAC ({response.status_code})") from exc
        data = body.get("data") or {}
        message = body.get("message") or ""
        code = message.split(".", 1)[0].split(" ", 1)[0].strip()
        if body.get("status") == "success" or (code == TIMBRE_PREVIO and data.get("cfdi")):
            return StampResult(uuid=data["uuid"], xml=data["cfdi"].encode(), fecha_timbrado=data["fechaTimbrado"], previous=code == TIMBRE_PREVIO)
        if code == TIMBRE_PREVIO:
            return await self.previous(idempotency_id)
        if response.status_code in (401, 403):
            raise PacUnavailable(f"autenticación con el PAC falló: {message}")
        raise PacRejected(code or "PAC", body.get("messageDetail") or message or "El PAC rechazó el comprobante.")

    async def previous(self, idempotency_id: str) -> StampResult:
        """The stamp the PAC already issued for this request (after a 307 without data, or a timeout)."""
        try:
            response = await self._client.get("/cfdi33/stamp/status", params={"customid": idempotency_id})
        except httpx.HTTPError as exc:
            raise PacUnavailable(f"PAC no disponible: {exc!r}") from exc
        data = (response.json().get("data") or {}) if response.status_code == 200 else {}
        if not data.get("cfdi"):
            raise PacUnavailable("el PAC reporta un timbre previo pero aún no lo entrega")
        return StampResult(uuid=data["uuid"], xml=data["cfdi"].encode(), fecha_timbrado=data["fechaTimbrado"], previous=True)

    async def aclose(self) -> None:
        await self._client.aclose()
