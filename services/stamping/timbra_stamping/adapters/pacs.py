"""Which PAC stamps an invoice: the platform default (``TIMBRA_PAC``) unless the issuer has its
own (``TIMBRA_PAC_BY_ISSUER``). Clients are built lazily, once per PAC."""

from timbra_stamping.adapters.sandbox_pac import SandboxPacClient
from timbra_stamping.adapters.sw_sapien import SwSapienClient
from timbra_stamping.config import StampingConfig
from timbra_stamping.domain.pac import PacClient

KNOWN = ("sandbox", "sw")


class PacRegistry:
    def __init__(self, config: StampingConfig, clients: dict[str, PacClient] | None = None) -> None:
        for name in {config.pac, *config.pac_by_issuer.values()}:
            if name not in KNOWN and name not in (clients or {}):
                raise ValueError(f"unknown PAC {name!r}; known: {KNOWN}")
        self.config = config
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
            return SandboxPacClient(c.pac_url, token=c.pac_token, timeout=c.pac_timeout_s, max_connections=max(10, c.workers * 2))
        if name == "sw":
            return SwSapienClient(c.sw_url, user=c.sw_user or None, password=c.sw_password or None, token=c.sw_token or None, timeout=c.sw_timeout_s)
        raise ValueError(f"unknown PAC {name!r}")

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
