"""The PAC port, now shared with the cancellation service: ``timbra_shared.pac.port``."""

from timbra_shared.pac.port import CancelResult, PacClient, PacRejected, PacUnavailable, SatStatus, StampResult

__all__ = ["CancelResult", "PacClient", "PacRejected", "PacUnavailable", "SatStatus", "StampResult"]
