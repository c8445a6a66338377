"""Which PAC stamps an invoice: the shared registry (``timbra_shared.pac.registry``) sized to the
stamping workers."""

from timbra_shared.pac.port import PacClient
from timbra_shared.pac.registry import KNOWN
from timbra_shared.pac.registry import PacRegistry as SharedPacRegistry
from timbra_stamping.config import StampingConfig

__all__ = ["KNOWN", "PacRegistry"]


class PacRegistry(SharedPacRegistry):
    def __init__(self, config: StampingConfig, clients: dict[str, PacClient] | None = None) -> None:
        super().__init__(config, clients, max_connections=max(10, config.workers * 2))  # type: ignore[arg-type]
