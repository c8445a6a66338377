"""Fecha: local time at LugarExpedicion, from c_CodigoPostal's time zone."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from . import catalogs
from .errors import BuildError

__all__ = ["fecha_local", "zona_horaria", "now_local"]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zona_horaria(codigo_postal: str) -> ZoneInfo:
    """IANA time zone of a c_CodigoPostal code (raises BuildError if unknown)."""
    info = catalogs.codigo_postal(codigo_postal)
    if info is None:
        raise BuildError("CFDI40126", f"LugarExpedicion {codigo_postal!r} no está en c_CodigoPostal")
    return _zone(info.timezone)


def now_local(codigo_postal: str, now: datetime | None = None) -> datetime:
    tz = zona_horaria(codigo_postal)
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)  # naive input is taken as UTC
    return now.astimezone(tz)


def fecha_local(codigo_postal: str, now: datetime | None = None) -> str:
    """``Fecha`` (AAAA-MM-DDThh:mm:ss) as local time at ``codigo_postal``.

    ``now`` defaults to the current instant; a naive ``now`` is taken as UTC.
    """
    return now_local(codigo_postal, now).strftime("%Y-%m-%dT%H:%M:%S")
