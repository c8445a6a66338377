"""Which PAC serves an issuer: the platform default (``TIMBRA_PAC``) unless the issuer has its own
(``TIMBRA_PAC_BY_ISSUER``). Clients are built lazily, once per PAC. Used by stamping and
cancellation, so an invoice is cancelled through the PAC family that stamped it."""

import json
from functools import cached_property

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from timbra_shared.pac.port import PacClient
from timbra_shared.pac.sandbox import SandboxPacClient
from timbra_shared.pac.sat_status import SAT_URL
from timbra_shared.pac.sw_sapien import SwSapienClient

KNOWN = ("sandbox", "sw")


class PacSettings(BaseSettings):
    """The PAC part of a service's configuration (docs/stamping.md, "Choosing the PAC")."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    pac: str = Field(default="sandbox", alias="TIMBRA_PAC")
    pac_by_issuer_json: str = Field(default="{}", alias="TIMBRA_PAC_BY_ISSUER")
    pac_url: str = Field(default="http://127.0.0.1:8090", alias="TIMBRA_PAC_URL")
    pac_token: str = Field(default="sandbox-token", alias="TIMBRA_PAC_TOKEN", repr=False)
    pac_timeout_s: float = Field(default=10.0, alias="TIMBRA_PAC_TIMEOUT")
    sw_url: str = Field(default="https://services.test.sw.com.mx", alias="TIMBRA_SW_URL")
    sw_user: str = Field(default="", alias="TIMBRA_SW_USER")
    sw_password: str = Field(default="", alias="TIMBRA_SW_PASSWORD", repr=False)
    sw_token: str = Field(default="", alias="TIMBRA_SW_TOKEN", repr=False)
    sw_timeout_s: float = Field(default=30.0, alias="TIMBRA_SW_TIMEOUT")
    sat_status_url: str = Field(default=SAT_URL, alias="TIMBRA_SAT_STATUS_URL")

    @cached_property
    def pac_by_issuer(self) -> dict[str, str]:
        return json.loads(self.pac_by_issuer_json or "{}")


class PacRegistry:
    def __init__(self, config: PacSettings, clients: dict[str, PacClient] | None = None, *, max_connections: int = 100) -> None:
        for name in {config.pac, *config.pac_by_issuer.values()}:
            if name not in KNOWN and name not in (clients or {}):
                raise ValueError(f"unknown PAC {name!r}; known: {KNOWN}")
        self.config = config
        self.max_connections = max_connections
        self._clients: dict[str, PacClient] = dict(clients or {})

    def name_for(self, issuer_id: str) -> str:
        return self.config.pac_by_issuer.get(issuer_id, self.config.pac)

    def get(self, name: str) -> PacClient:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._build(name)
        return client

    def _build(self, name: str) -> PacClient:
        c = self.config
        if name == "sandbox":
            return SandboxPacClient(c.pac_url, token=c.pac_token, timeout=c.pac_timeout_s, max_connections=self.max_connections)
        if name == "sw":
            return SwSapienClient(c.sw_url, user=c.sw_user or None, password=c.sw_password or None, token=c.sw_token or None, timeout=c.sw_timeout_s,
                                  status_url=getattr(c, "sat_status_url", SAT_URL))
        raise ValueError(f"unknown PAC {name!r}")

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
