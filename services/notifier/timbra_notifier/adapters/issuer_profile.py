"""issuer-profile's internal routes, for the notifier: the issuer's logo and SMTP settings.

Both are cached in memory: the logo by ``(issuer_id, logo_id)`` (``logo_id`` changes whenever the
logo does, and comes on the issuer.profile event), the SMTP settings for a short time
(``TIMBRA_NOTIFIER_SMTP_CACHE``, 60 s), so a change reaches the next emails within that time.
"""

import base64
import time
from collections import OrderedDict
from typing import Any

import httpx

from timbra_notifier.adapters.mailer import SmtpConfig
from timbra_shared.logging import get_logger

log = get_logger(__name__)

HEADER = "x-timbra-internal"
MAX_LOGOS = 256


class IssuerProfileUnavailable(Exception):
    pass


class IssuerProfileClient:
    def __init__(self, base_url: str, secret: str, *, smtp_ttl: float = 60.0, timeout: float = 5.0, http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.smtp_ttl = smtp_ttl
        self.http = http or httpx.AsyncClient(timeout=timeout)
        self._smtp: dict[str, tuple[float, SmtpConfig | None]] = {}
        self._logos: OrderedDict[tuple[str, str], str | None] = OrderedDict()

    async def _get(self, path: str) -> httpx.Response:
        try:
            return await self.http.get(f"{self.base_url}{path}", headers={HEADER: self.secret})
        except httpx.HTTPError as exc:
            raise IssuerProfileUnavailable(f"issuer-profile no responde: {type(exc).__name__}") from None

    async def smtp(self, issuer_id: str) -> SmtpConfig | None:
        """The issuer's own SMTP settings, or None when they have none (use the platform sender)."""
        cached = self._smtp.get(issuer_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        response = await self._get(f"/internal/v1/issuers/{issuer_id}/smtp")
        if response.status_code == 404:
            config = None
        elif response.status_code != 200:
            raise IssuerProfileUnavailable(f"issuer-profile respondió {response.status_code}")
        else:
            body = response.json()
            config = SmtpConfig.from_issuer(body["settings"]) if body.get("configured") and body.get("settings") else None
        if len(self._smtp) > 10_000:
            self._smtp.clear()
        self._smtp[issuer_id] = (time.monotonic() + self.smtp_ttl, config)
        return config

    def forget_smtp(self, issuer_id: str) -> None:
        self._smtp.pop(issuer_id, None)

    async def logo(self, issuer_id: str, logo_id: str | None) -> str | None:
        """The logo as a data URI, or None (no logo, or issuer-profile unreachable: the PDF goes without)."""
        if not logo_id:
            return None
        key = (issuer_id, logo_id)
        if key in self._logos:
            self._logos.move_to_end(key)
            return self._logos[key]
        try:
            response = await self._get(f"/internal/v1/issuers/{issuer_id}/logo")
        except IssuerProfileUnavailable as exc:
            log.warning("logo.unavailable", issuer_id=issuer_id, error=str(exc))
            return None
        if response.status_code == 404:
            uri = None
        elif response.status_code != 200:
            log.warning("logo.unavailable", issuer_id=issuer_id, status=response.status_code)
            return None
        else:
            content_type = response.headers.get("content-type", "image/png").split(";")[0]
            uri = f"data:{content_type};base64,{base64.b64encode(response.content).decode()}"
        self._logos[key] = uri
        while len(self._logos) > MAX_LOGOS:
            self._logos.popitem(last=False)
        return uri


def smtp_summary(config: SmtpConfig | None) -> dict[str, Any]:
    """What may be logged or stored about a configuration: never the password."""
    if config is None:
        return {"source": "platform"}
    return {"source": config.source, "host": config.host, "port": config.port, "security": config.security, "sender": config.sender}
