"""Rules of the operator console's back end (pure, no I/O): consumer lag from committed and end
offsets, the error rate, what a search term looks like, and what a dead-letter replay may send."""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from timbra_shared import topics
from timbra_shared.topics import REPLAY_OF_HEADER

Partition = tuple[str, int]

# headers the original producer set that must not travel with a replay: the replay gets its own
_DROPPED_HEADERS = {REPLAY_OF_HEADER, "content-length"}
MAX_PAYLOAD = 1_000_000


# --------------------------------------------------------------------------- consumer lag

@dataclass
class GroupLag:
    group: str
    topic: str
    lag: int
    partitions: int
    uncommitted: int = 0  # partitions of a consumed topic with no committed offset yet (counted from the beginning)


@dataclass
class TopicLag:
    topic: str
    end_offset: int
    lag: int  # the worst group's lag on this topic
    groups: list[GroupLag] = field(default_factory=list)


def group_lag(group: str, committed: Mapping[Partition, int], end: Mapping[Partition, int], beginning: Mapping[Partition, int] | None = None) -> list[GroupLag]:
    """Lag of one consumer group per topic: ``Σ end − committed`` over the topic's partitions.

    ``committed`` holds what OffsetFetch answered (−1: nothing committed). A topic counts as
    consumed by the group when at least one of its partitions has a commit; its partitions
    without one lag from the beginning offset (consumers start at ``earliest``). A committed
    offset past the end (the broker restarted empty) counts as no lag, not a negative one."""
    beginning = beginning or {}
    consumed = {t for (t, _), offset in committed.items() if offset is not None and offset >= 0}
    out: dict[str, GroupLag] = {}
    for (topic, partition), end_offset in sorted(end.items()):
        if topic not in consumed:
            continue
        row = out.setdefault(topic, GroupLag(group=group, topic=topic, lag=0, partitions=0))
        row.partitions += 1
        offset = committed.get((topic, partition))
        if offset is None or offset < 0:
            row.uncommitted += 1
            offset = beginning.get((topic, partition), 0)
        row.lag += max(end_offset - offset, 0)
    return list(out.values())


def topic_lags(groups: list[GroupLag], end: Mapping[Partition, int]) -> list[TopicLag]:
    """Per topic: the end offset (sum over partitions) and the worst group's lag."""
    totals: dict[str, int] = {}
    for (topic, _), offset in end.items():
        totals[topic] = totals.get(topic, 0) + offset
    rows = {t: TopicLag(topic=t, end_offset=n, lag=0) for t, n in sorted(totals.items())}
    for g in groups:
        row = rows.get(g.topic)
        if row is None:
            continue
        row.groups.append(g)
        row.lag = max(row.lag, g.lag)
    return list(rows.values())


# --------------------------------------------------------------------------- error rate

def error_rate(failed: int, finished: int) -> float | None:
    """Share of the invoices that reached a final status in the window and failed
    (``rejected`` or ``stamp_failed``); None when none finished."""
    if finished <= 0:
        return None
    return round(failed / finished, 4)


# --------------------------------------------------------------------------- search

_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_RFC = re.compile(r"^[A-ZÑ&]{3,4}\d{6}[A-Z0-9]{3}$")


def classify(term: str) -> tuple[str, str]:
    """What an operator typed: ``invoice_id``, ``uuid``, ``issuer_id``, ``rfc`` or ``name``,
    with the value normalised for the lookup."""
    text = term.strip()
    if text.startswith("inv_"):
        return "invoice_id", text
    if text.startswith("iss_"):
        return "issuer_id", text
    if _UUID.match(text):
        return "uuid", text.upper()
    if _RFC.match(text.upper()):
        return "rfc", text.upper()
    return "name", text


# --------------------------------------------------------------------------- dead letters

class ReplayRefused(Exception):
    """A replay that must not be sent; ``code`` and a Spanish ``message`` for the operator."""

    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


def replayable_topic(topic: str) -> bool:
    """Only Timbra's own topics, and never the dead-letter topic itself (a loop)."""
    return topic in topics.ALL_TOPICS and topic != topics.DEAD_LETTER


@dataclass(frozen=True)
class Replay:
    topic: str
    key: bytes | None
    payload: bytes
    headers: dict[str, str]
    corrected: bool


def plan_replay(letter: Mapping[str, Any], dead_letter_id: str, corrected_payload: str | None = None) -> Replay:
    """What a replay publishes: the original payload (or the operator's corrected one, which
    must be JSON) on the original topic with the original key and headers, marked with
    ``timbra-replay-of`` so a second failure links back to this dead letter."""
    topic = str(letter.get("original_topic") or "")
    if not replayable_topic(topic):
        raise ReplayRefused("TIMBRA_REPLAY_TOPIC", f"El tópico original «{topic}» no es un tópico de Timbra que se pueda reenviar.", "original_topic")
    if letter.get("status") == "discarded":
        raise ReplayRefused("TIMBRA_REPLAY_DISCARDED", "Este mensaje se descartó; no se puede reenviar.")
    corrected = corrected_payload is not None and corrected_payload.strip() != str(letter.get("payload") or "").strip()
    body = corrected_payload if corrected_payload is not None else str(letter.get("payload") or "")
    if len(body.encode()) > MAX_PAYLOAD:
        raise ReplayRefused("TIMBRA_REPLAY_TOO_LARGE", "El mensaje corregido pasa de 1 MB.", "payload")
    if corrected:
        try:
            json.loads(body)
        except json.JSONDecodeError as exc:
            raise ReplayRefused("TIMBRA_REPLAY_INVALID_JSON", f"El mensaje corregido no es JSON válido (línea {exc.lineno}, columna {exc.colno}); revísalo antes de reenviar.", "payload") from None
    headers = {k: str(v) for k, v in (letter.get("headers") or {}).items() if k.lower() not in _DROPPED_HEADERS}
    headers[REPLAY_OF_HEADER] = dead_letter_id
    key = letter.get("key")
    return Replay(topic=topic, key=key.encode() if isinstance(key, str) and key else None, payload=body.encode(), headers=headers, corrected=corrected)


def letter_ids(payload: str, key: str | None) -> tuple[str | None, str | None]:
    """The invoice and issuer a dead letter is about, when its payload says (JSON envelope)."""
    invoice_id = issuer_id = None
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if isinstance(data, dict):
        invoice_id = data.get("invoice_id") if isinstance(data.get("invoice_id"), str) else None
        issuer_id = data.get("issuer_id") if isinstance(data.get("issuer_id"), str) else None
    if invoice_id is None and key and key.startswith("inv_"):
        invoice_id = key
    return invoice_id, issuer_id
