"""The PAC port: what the stamping service needs from any PAC."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StampResult:
    uuid: str
    xml: bytes
    fecha_timbrado: str
    previous: bool = False  # True when the PAC answered 307 (timbre previo) with the earlier stamp


class PacRejected(Exception):
    """Permanent: the PAC (or SAT through it) rejected the CFDI with a code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PacUnavailable(Exception):
    """Transient: network error, timeout, 5xx, or SAT not available. Retry later."""


class PacClient(Protocol):
    name: str

    async def stamp(self, xml: bytes, *, idempotency_id: str) -> StampResult: ...
