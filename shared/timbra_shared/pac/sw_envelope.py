"""SW Sapien's REST contract, shared by the real SW adapter and the sandbox adapter: the
multipart stamp request, the envelope ``{status, message, messageDetail, data}``, code 307
(timbre previo, with the earlier stamp in ``data``), and how errors map onto the port."""

import re
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from timbra_shared.pac.port import CancelResult, PacRejected, PacUnavailable, StampResult

TIMBRE_PREVIO = "307"
_CODE = re.compile(r"^\s*([A-Za-z]*\d+)\s*(?:[-.:]\s*)?(.*)$", re.S)
# Answers that say "try again later" although they are not 5xx.
_TRANSIENT_WORDS = ("no disponible", "intente más tarde", "intente mas tarde", "timeout", "tiempo de espera")


def split_message(message: str | None) -> tuple[str, str]:
    """``"CFDI40108 - El campo…"`` → ``("CFDI40108", "El campo…")``; ``"307. El…"`` → ``("307", "El…")``."""
    text = (message or "").strip()
    match = _CODE.match(text)
    if match:
        return match.group(1), match.group(2).strip() or text
    return "", text


def body_of(response: httpx.Response) -> Any:
    """The response's JSON (RFC 8259: UTF-8). orjson: a stamp's answer carries the whole CFDI as one JSON string,
    which the standard library decodes several times slower. Raises ValueError when it is not JSON."""
    return orjson.loads(response.content)


def _said(response: httpx.Response) -> str:
    try:
        message = body_of(response).get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {str(message)[:200]}" if message else ""


def transport_error(exc: httpx.HTTPError) -> PacUnavailable:
    # A refused or timed-out *connect* never reached the PAC; anything later may have.
    before_sending = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return PacUnavailable(f"PAC no disponible: {type(exc).__name__}", maybe_stamped=not before_sending)


def result_from(data: dict[str, Any], *, previous: bool) -> StampResult:
    return StampResult(uuid=data["uuid"], xml=data["cfdi"].encode(), fecha_timbrado=data["fechaTimbrado"], previous=previous)


def parse_stamp_response(response: httpx.Response) -> tuple[StampResult | None, str]:
    """The stamp, or ``(None, code)`` when it is a 307 without data (look it up).

    Raises :class:`PacUnavailable` (retry) or :class:`PacRejected` (permanent)."""
    status = response.status_code
    if status >= 500 or status in (408, 429):
        raise PacUnavailable(f"PAC respondió {status}{_said(response)}", maybe_stamped=status not in (429, 503))
    try:
        body = body_of(response)
    except ValueError as exc:
        raise PacUnavailable(f"respuesta inválida del PAC ({status})", maybe_stamped=True) from exc
    if not isinstance(body, dict):
        raise PacUnavailable(f"respuesta inválida del PAC ({status})", maybe_stamped=True)
    data = body.get("data") or {}
    code, text = split_message(body.get("message"))
    if body.get("status") == "success" and data.get("cfdi"):
        return result_from(data, previous=False), ""
    if code == TIMBRE_PREVIO:
        return (result_from(data, previous=True), code) if data.get("cfdi") else (None, code)
    if status in (401, 403) or code.startswith("AU"):
        raise PacUnavailable(f"autenticación con el PAC falló: {code or status}")
    lowered = f"{text} {body.get('messageDetail') or ''}".lower()
    if any(word in lowered for word in _TRANSIENT_WORDS):
        raise PacUnavailable(f"PAC: {text}")
    detail = body.get("messageDetail")
    raise PacRejected(code or "PAC", text or "El PAC rechazó el comprobante.", detail if isinstance(detail, str) and detail else None)


def parse_cancel_response(response: httpx.Response, uuid: str) -> CancelResult:
    """SW's cancel-by-UUID answer: ``data: {acuse, uuid: {"<UUID>": "201"}}``.

    Raises :class:`PacUnavailable` (retry: nothing was registered, or SAT keys requests by UUID so
    a repeat is harmless) or :class:`PacRejected` (SAT's code: 203, 205, motive or relation rules…)."""
    status = response.status_code
    if status >= 500 or status in (408, 429):
        raise PacUnavailable(f"PAC respondió {status}{_said(response)}")
    try:
        body = body_of(response)
    except ValueError as exc:
        raise PacUnavailable(f"respuesta inválida del PAC ({status})") from exc
    if not isinstance(body, dict):
        raise PacUnavailable(f"respuesta inválida del PAC ({status})")
    data = body.get("data") or {}
    codes = data.get("uuid") if isinstance(data, dict) else None
    if body.get("status") == "success" and isinstance(codes, dict) and data.get("acuse"):
        code = next((str(v) for k, v in codes.items() if k.lower() == uuid.lower()), next(iter(codes.values()), ""))
        return CancelResult(uuid=uuid, code=str(code), acuse=str(data["acuse"]).encode())
    code, text = split_message(body.get("message"))
    if status in (401, 403) or code.startswith("AU"):
        raise PacUnavailable(f"autenticación con el PAC falló: {code or status}")
    lowered = f"{text} {body.get('messageDetail') or ''}".lower()
    if any(word in lowered for word in _TRANSIENT_WORDS):
        raise PacUnavailable(f"PAC: {text}")
    detail = body.get("messageDetail")
    raise PacRejected(code or "PAC", text or "El PAC rechazó la solicitud de cancelación.", detail if isinstance(detail, str) and detail else None)


def cancel_path(rfc_emisor: str, uuid: str, motivo: str, folio_sustitucion: str | None) -> str:
    """SW: ``/cfdi33/cancel/{rfc}/{uuid}/{motivo}[/{folioSustitucion}]`` (the folio only with 01)."""
    path = f"/cfdi33/cancel/{quote(rfc_emisor, safe='')}/{quote(uuid, safe='')}/{quote(motivo, safe='')}"
    return f"{path}/{quote(folio_sustitucion, safe='')}" if folio_sustitucion else path
