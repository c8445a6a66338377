"""The PAC port: what Timbra's services need from any PAC (stamping: stamp and lookup;
cancellation: cancel and SAT's status)."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StampResult:
    uuid: str
    xml: bytes  # the stamped CFDI exactly as the PAC returned it (the legal document)
    fecha_timbrado: str
    previous: bool = False  # True when the PAC answered 307 (timbre previo) or a lookup found it


@dataclass(frozen=True)
class CancelResult:
    """SAT received the cancellation request: ``code`` is its EstatusUUID (``201`` solicitud
    recibida, ``202`` previamente cancelado) and ``acuse`` the signed receipt, byte for byte."""

    uuid: str
    code: str
    acuse: bytes


@dataclass(frozen=True)
class SatStatus:
    """SAT's ConsultaCFDIService answer."""

    codigo_estatus: str
    estado: str  # Vigente | Cancelado | No Encontrado
    es_cancelable: str  # No cancelable | Cancelable sin aceptación | Cancelable con aceptación
    estatus_cancelacion: str  # "" | En proceso | Plazo vencido | Cancelado con/sin aceptación | Solicitud rechazada
    validacion_efos: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"codigo_estatus": self.codigo_estatus, "estado": self.estado, "es_cancelable": self.es_cancelable,
                "estatus_cancelacion": self.estatus_cancelacion, "validacion_efos": self.validacion_efos}


class PacRejected(Exception):
    """Permanent: the PAC (or SAT through it) refused the request with a code (CFDI40xxx, 301, 205…)."""

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

    async def cancel(self, rfc_emisor: str, uuid: str, motivo: str, folio_sustitucion: str | None = None) -> CancelResult:
        """Ask SAT to cancel ``uuid``. Repeating it for a request in process is harmless: SAT
        keys cancellation requests by UUID (the same acuse comes back)."""
        ...

    async def status(self, uuid: str, rfc_emisor: str, rfc_receptor: str, total: str) -> SatStatus:
        """SAT's status of the CFDI (Estado, EsCancelable, EstatusCancelacion)."""
        ...

    async def aclose(self) -> None: ...
