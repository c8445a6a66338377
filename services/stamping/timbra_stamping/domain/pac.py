"""The PAC port: what the stamping service needs from any PAC."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StampResult:
    uuid: str
    xml: bytes  # the stamped CFDI exactly as the PAC returned it (the legal document)
    fecha_timbrado: str
    previous: bool = False  # True when the PAC answered 307 (timbre previo) or a lookup found it


class PacRejected(Exception):
    """Permanent: the PAC (or SAT through it) rejected the CFDI with a code (CFDI40xxx, 301…)."""

    def __init__(self, code: str, message: str, detail: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def source(self) -> str:
        return "sat" if self.code.startswith("CFDI") else "pac"


class PacUnavailable(Exception):
    """Transient: network error, timeout, 5xx, "SAT no disponible". Retry later.

    ``maybe_stamped`` is True when the request may have reached the PAC (a read timeout, a
    dropped connection, a gateway error): the next attempt asks the PAC for the earlier stamp
    before sending the CFDI again. A refused connection or the PAC's own 503 is False."""

    def __init__(self, message: str, *, maybe_stamped: bool = False) -> None:
        super().__init__(message)
        self.maybe_stamped = maybe_stamped


class PacClient(Protocol):
    name: str

    async def stamp(self, xml: bytes, *, idempotency_id: str) -> StampResult:
        """Stamp ``xml``; ``idempotency_id`` is stable per invoice (SW's ``customid``)."""
        ...

    async def lookup(self, idempotency_id: str) -> StampResult | None:
        """The stamp the PAC already issued for ``idempotency_id``, or None if it has none."""
        ...

    async def aclose(self) -> None: ...
