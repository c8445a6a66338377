"""Adapter for SW Sapien's published REST API (https://developers.sw.com.mx):

- ``POST /v2/security/authenticate`` with JSON ``{user, password}`` → ``data.token`` (valid two
  hours, ``data.expires_in`` is its expiry as a Unix time), or an "infinite" token configured
  directly;
- ``POST /v4/cfdi33/stamp/v4`` (multipart field ``xml``; headers ``Authorization: Bearer``,
  ``customid``: at most 100 characters, remembered by SW for 72 hours) → ``data`` with
  ``cadenaOriginalSAT, noCertificadoSAT, noCertificadoCFDI, uuid, selloSAT, selloCFDI,
  fechaTimbrado, qrCode, cfdi``;
- the same CFDI (or the same customid with the same CFDI) again → ``status: error``,
  ``message: "307. El comprobante contiene un timbre previo."`` with the earlier stamp in ``data``;
- errors: ``message`` starts with the code (``CFDI40xxx - …``, ``301 - …``, ``AU…`` for
  authentication), ``messageDetail`` explains.

SW offers no lookup by customid; re-sending the same CFDI with the same customid is its recovery
path (it answers 307 with the stamp), so :meth:`lookup` returns None and the service re-sends.

Cancellation (developers.sw.com.mx, "Cancelación CFDI"): ``POST /cfdi33/cancel/{rfc}/{uuid}/{motivo}
[/{folioSustitucion}]`` without a body, with the issuer's CSD kept in SW's vault (uploaded once
with ``/certificates/save``), answers ``data: {acuse, uuid: {"<UUID>": "201"}}``. The status comes
from SAT's ``ConsultaCFDIService`` (SW's test environment mirrors it at
``consultaqrfacturaelectronicatest.sw.com.mx``), configured with ``status_url``.
"""

import asyncio
import time

import httpx

from timbra_shared.pac.sat_status import SAT_URL, consulta
from timbra_shared.pac.sw_envelope import cancel_path, parse_cancel_response, parse_stamp_response, transport_error
from timbra_shared.pac.port import CancelResult, PacUnavailable, SatStatus, StampResult

STAMP_PATH = "/v4/cfdi33/stamp/v4"
AUTH_PATH = "/v2/security/authenticate"
REFRESH_BEFORE_S = 300


class SwSapienClient:
    name = "sw"

    def __init__(
        self,
        base_url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        name: str = "sw",
        transport: httpx.AsyncBaseTransport | None = None,
        status_url: str = SAT_URL,
    ) -> None:
        if not token and not (user and password):
            raise ValueError("SW Sapien needs a token or a user and password")
        self.name = name
        self._user, self._password = user, password
        self._static_token = token
        self._token: str | None = token
        self._expires_at = float("inf") if token else 0.0
        self._status_url = status_url
        self._lock = asyncio.Lock()
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)), transport=transport)

    async def _bearer(self, *, renew: bool = False) -> str:
        if self._static_token:
            return self._static_token
        async with self._lock:
            if renew or self._token is None or time.time() >= self._expires_at - REFRESH_BEFORE_S:
                try:
                    response = await self._client.post(AUTH_PATH, json={"user": self._user, "password": self._password})
                except httpx.HTTPError as exc:
                    raise transport_error(exc) from exc
                try:
                    body = response.json()
                    data = body.get("data") or {}
                except (ValueError, AttributeError):
                    body, data = {}, {}
                if response.status_code != 200 or not data.get("token"):
                    raise PacUnavailable(f"autenticación con SW falló ({response.status_code}): {str(body.get('message') or '')[:200]}")
                self._token = data["token"]
                expires = data.get("expires_in")
                self._expires_at = float(expires) if isinstance(expires, int | float) and expires > time.time() else time.time() + 7200
            assert self._token is not None
            return self._token

    async def stamp(self, xml: bytes, *, idempotency_id: str) -> StampResult:
        if len(idempotency_id) > 100:
            raise ValueError("SW's customid holds at most 100 characters")
        for renew in (False, True):
            token = await self._bearer(renew=renew)
            try:
                response = await self._client.post(
                    STAMP_PATH,
                    files={"xml": ("xml", xml, "text/xml")},
                    headers={"Authorization": f"Bearer {token}", "customid": idempotency_id},
                )
            except httpx.HTTPError as exc:
                raise transport_error(exc) from exc
            if response.status_code == 401 and not renew and not self._static_token:
                continue  # the temporary token expired early: authenticate again once
            result, _code = parse_stamp_response(response)
            if result is None:  # 307 without data: SW normally includes it; re-sending is the recovery
                raise PacUnavailable("SW reporta un timbre previo sin entregarlo", maybe_stamped=True)
            return result
        raise PacUnavailable("autenticación con SW falló")

    async def lookup(self, idempotency_id: str) -> StampResult | None:
        return None

    async def cancel(self, rfc_emisor: str, uuid: str, motivo: str, folio_sustitucion: str | None = None) -> CancelResult:
        for renew in (False, True):
            token = await self._bearer(renew=renew)
            try:
                response = await self._client.post(cancel_path(rfc_emisor, uuid, motivo, folio_sustitucion), headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                raise transport_error(exc) from exc
            if response.status_code == 401 and not renew and not self._static_token:
                continue
            return parse_cancel_response(response, uuid)
        raise PacUnavailable("autenticación con SW falló")

    async def status(self, uuid: str, rfc_emisor: str, rfc_receptor: str, total: str) -> SatStatus:
        return await consulta(self._client, self._status_url, rfc_emisor=rfc_emisor, rfc_receptor=rfc_receptor, total=total, uuid=uuid)

    async def aclose(self) -> None:
        await self._client.aclose()
