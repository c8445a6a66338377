"""The sandbox PAC's client, shared with the cancellation service: ``timbra_shared.pac.sandbox``."""

import httpx  # noqa: F401  (tests patch ``sandbox_pac.httpx.AsyncClient``)

from timbra_shared.pac.sandbox import SandboxPacClient

__all__ = ["SandboxPacClient"]
