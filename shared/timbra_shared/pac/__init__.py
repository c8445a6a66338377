"""PAC clients shared by the stamping and cancellation services: the port (stamp, lookup,
cancel, status), SW Sapien's REST contract, the sandbox PAC's client, and SAT's status service."""

from timbra_shared.pac.port import CancelResult, PacClient, PacRejected, PacUnavailable, SatStatus, StampResult

__all__ = ["CancelResult", "PacClient", "PacRejected", "PacUnavailable", "SatStatus", "StampResult"]
