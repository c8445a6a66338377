"""The sandbox PAC's client, shared with the cancellation service: ``timbra_shared.pac.sandbox``."""

from timbra_shared.pac.sandbox import SandboxPacClient

__all__ = ["SandboxPacClient"]
