"""Client of Timbra's sandbox PAC, whose contract is SW Sapien's (see sw_envelope.py) plus a
lookup of an earlier stamp by custom id (``GET /cfdi33/stamp/status?customid=``), SW's
cancellation by UUID, and SAT's status service served at ``/ConsultaCFDIService.svc``."""

import httpx

from timbra_shared.pac.http import ClientPool, Http11Transport
from timbra_shared.pac.port import CancelResult, PacUnavailable, SatStatus, StampResult
from timbra_shared.pac.sat_status import consulta
from timbra_shared.pac.sw_envelope import body_of, cancel_path, parse_cancel_response, parse_stamp_response, result_from, transport_error


class SandboxPacClient:
    name = "sandbox"

    def __init__(self, base_url: str, token: str = "sandbox-token", timeout: float = 10.0, *, name: str = "sandbox", max_connections: int = 100,
                 status_url: str | None = None) -> None:
        self.name = name
        self._status_url = status_url or "/ConsultaCFDIService.svc"

        def connection() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=base_url,
                timeout=httpx.Timeout(timeout, connect=min(3.0, timeout)),
                headers={"Authorization": f"Bearer {token}"},
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                transport=Http11Transport() if base_url.startswith("http://") else None,
            )

        self._clients = ClientPool(connection, max_connections)

    async def stamp(self, xml: bytes, *, idempotency_id: str) -> StampResult:
        try:
            async with self._clients.client() as client:
                response = await client.post("/cfdi33/stamp/v4", files={"xml": ("cfdi.xml", xml, "text/xml")}, headers={"customid": idempotency_id})
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        result, _code = parse_stamp_response(response)
        if result is not None:
            return result
        previous = await self.lookup(idempotency_id)  # 307 without the stamp: fetch it
        if previous is None:
            raise PacUnavailable("el PAC reporta un timbre previo pero aún no lo entrega", maybe_stamped=True)
        return previous

    async def lookup(self, idempotency_id: str) -> StampResult | None:
        try:
            async with self._clients.client() as client:
                response = await client.get("/cfdi33/stamp/status", params={"customid": idempotency_id})
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PacUnavailable(f"consulta de timbre previo: PAC respondió {response.status_code}", maybe_stamped=True)
        try:
            data = body_of(response).get("data") or {}
        except ValueError as exc:
            raise PacUnavailable("consulta de timbre previo: respuesta inválida", maybe_stamped=True) from exc
        return result_from(data, previous=True) if data.get("cfdi") else None

    async def cancel(self, rfc_emisor: str, uuid: str, motivo: str, folio_sustitucion: str | None = None) -> CancelResult:
        try:
            async with self._clients.client() as client:
                response = await client.post(cancel_path(rfc_emisor, uuid, motivo, folio_sustitucion))
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        return parse_cancel_response(response, uuid)

    async def status(self, uuid: str, rfc_emisor: str, rfc_receptor: str, total: str) -> SatStatus:
        async with self._clients.client() as client:
            return await consulta(client, self._status_url, rfc_emisor=rfc_emisor, rfc_receptor=rfc_receptor, total=total, uuid=uuid)

    async def aclose(self) -> None:
        await self._clients.aclose()
