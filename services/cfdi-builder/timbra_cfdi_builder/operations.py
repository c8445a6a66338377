"""Use cases of the operator console (staff, cross-tenant): the dead-letter store and its
replays, pipeline counts and error rate, consumer lag, search and the invoice timeline.

The cfdi-builder hosts them because it owns the invoice read model (every status event lands
there) and the issuer projection; the dead letters join that picture (``invoice_id``)."""

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any, Protocol

from timbra_cfdi_builder.domain.invoice import FINAL, IN_FLIGHT, InvoiceStatus
from timbra_cfdi_builder.domain.operations import (
    REPLAY_OF_HEADER,
    Partition,
    ReplayRefused,
    classify,
    error_rate,
    group_lag,
    letter_ids,
    plan_replay,
    topic_lags,
)
from timbra_shared import topics
from timbra_shared.auth import Principal
from timbra_shared.events import DeadLetter
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger

log = get_logger(__name__)

Publish = Callable[[str, bytes, bytes | None, dict[str, str]], Awaitable[None]]
LAG_CACHE_S = 5.0


class Offsets(Protocol):
    async def read(self, topic_names: list[str]) -> tuple[dict[str, dict[Partition, int]], dict[Partition, int], dict[Partition, int]]: ...


class LetterNotFound(Exception):
    pass


class ReplayFailed(Exception):
    """The broker did not take the replay; the dead letter stays open."""


def actor(principal: Principal) -> dict[str, Any]:
    return {"kind": principal.kind, "key_id": principal.key_id, "roles": list(principal.roles)}


class OperationsService:
    def __init__(self, *, letters: Any, queries: Any, offsets: Offsets, publish: Publish, stuck_after: float, jaeger_url: str | None = None) -> None:
        self.letters = letters
        self.queries = queries
        self.offsets = offsets
        self.publish = publish
        self.stuck_after = timedelta(seconds=stuck_after)
        self.jaeger_url = (jaeger_url or "").rstrip("/") or None
        self._lag: tuple[float, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ dead letters

    async def store_letter(self, letter: DeadLetter) -> bool:
        """Keep a dead letter (once per ``event_id``). A replay that failed again is linked to the
        dead letter it replayed (header ``timbra-replay-of``)."""
        invoice_id, issuer_id = letter_ids(letter.payload, letter.key)
        replay_of = letter.headers.get(REPLAY_OF_HEADER)
        doc = {
            "_id": letter.event_id,
            **letter.model_dump(exclude={"event_id", "event_type", "schema_version"}),
            "invoice_id": invoice_id,
            "issuer_id": issuer_id,
            "replay_of": replay_of,
            "status": "open",
            "received_at": utcnow(),
            "replays": [],
        }
        stored = await self.letters.insert(doc)
        if stored and replay_of:
            await self.letters.link_failure(replay_of, letter.event_id)
        if stored:
            log.info("dead_letter.stored", dead_letter_id=letter.event_id, topic=letter.original_topic, service=letter.service, invoice_id=invoice_id)
        return stored

    async def letters_page(self, status: str | None, invoice_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await self.letters.page(status=status, invoice_id=invoice_id, limit=limit)

    async def letter(self, letter_id: str) -> dict[str, Any]:
        doc = await self.letters.get(letter_id)
        if doc is None:
            raise LetterNotFound(letter_id)
        return doc

    async def replay(self, letter_id: str, principal: Principal, *, payload: str | None = None, note: str | None = None) -> dict[str, Any]:
        """Republish the dead letter's payload (or the operator's corrected one) on its original
        topic with its key, recording who and when. Consumers are idempotent, so replaying a
        message that already took effect is harmless; each replay is recorded."""
        doc = await self.letter(letter_id)
        plan = plan_replay(doc, letter_id, payload)
        replay = {"id": new_id("rpl_"), "at": utcnow(), "by": actor(principal), "note": (note or "").strip()[:1000] or None,
                  "corrected": plan.corrected, "payload": plan.payload.decode() if plan.corrected else None, "outcome": "sending"}
        updated = await self.letters.add_replay(letter_id, replay)
        if updated is None:
            raise ReplayRefused("TIMBRA_REPLAY_DISCARDED", "Este mensaje se descartó; no se puede reenviar.")
        try:
            await self.publish(plan.topic, plan.payload, plan.key, plan.headers)
        except Exception as exc:
            await self.letters.set_replay_outcome(letter_id, replay["id"], "failed", repr(exc)[:500])
            log.warning("dead_letter.replay_failed", dead_letter_id=letter_id, error=repr(exc)[:300])
            raise ReplayFailed(str(exc)) from exc
        await self.letters.set_replay_outcome(letter_id, replay["id"], "sent")
        # the record went back on its topic, so every consumer group that dead-lettered it reads it again
        siblings = await self.letters.close_siblings(doc, "replayed", {"replayed_at": replay["at"]})
        log.info("dead_letter.replayed", dead_letter_id=letter_id, topic=plan.topic, corrected=plan.corrected, by=principal.key_id, siblings=siblings)
        return await self.letter(letter_id)

    async def discard(self, letter_id: str, principal: Principal, note: str) -> dict[str, Any]:
        await self.letter(letter_id)
        record = {"at": utcnow(), "by": actor(principal), "note": note.strip()[:1000]}
        doc = await self.letters.discard(letter_id, record)
        if doc is None:
            raise ReplayRefused("TIMBRA_DEAD_LETTER_CLOSED", "Solo se descarta un mensaje abierto (sin reenviar ni descartar).")
        await self.letters.close_siblings(doc, "discarded", {"discarded": record})
        return doc

    # ------------------------------------------------------------------ pipeline

    async def pipeline(self, window_minutes: int = 60) -> dict[str, Any]:
        now = utcnow()
        since = now - timedelta(minutes=window_minutes)
        totals = await self.queries.count_by_status()
        recent = await self.queries.count_by_status(since)
        stuck = await self.queries.stuck_by_status(now - self.stuck_after)
        finished = await self.queries.finished_since(since)
        failed = finished.get(InvoiceStatus.REJECTED, 0) + finished.get(InvoiceStatus.STAMP_FAILED, 0)
        done = sum(finished.values())
        statuses = [s.value for s in InvoiceStatus]
        return {
            "at": now.isoformat(),
            "window_minutes": window_minutes,
            "stages": [{"status": s, "in_flight": totals.get(s, 0), "stuck": stuck.get(s, 0)} for s in IN_FLIGHT],
            "statuses": [{"status": s, "total": totals.get(s, 0), "window": recent.get(s, 0), "final": InvoiceStatus(s) in FINAL} for s in statuses],
            "total": sum(totals.values()),
            "error_rate": {"finished": done, "failed": failed, "rate": error_rate(failed, done), "by_status": finished},
            "dead_letters": {"open": await self.letters.count("open"), "window": await self.letters.count(None, since)},
            "stuck_after_s": int(self.stuck_after.total_seconds()),
            "recent_failures": await self.queries.recent_failures(10),
        }

    async def lag(self) -> dict[str, Any]:
        """Consumer lag per topic and group (cached a few seconds: each read asks the broker
        about every group)."""
        cached = self._lag
        if cached and time.monotonic() - cached[0] < LAG_CACHE_S:
            return cached[1]
        committed, end, beginning = await self.offsets.read(sorted(topics.ALL_TOPICS))
        groups = [row for group, offsets in sorted(committed.items()) for row in group_lag(group, offsets, end, beginning)]
        rows = topic_lags(groups, end)
        result = {
            "at": utcnow().isoformat(),
            "total_lag": sum(g.lag for g in groups),
            "topics": [{**{k: v for k, v in asdict(r).items() if k != "groups"}, "groups": [asdict(g) for g in r.groups]} for r in rows],
        }
        self._lag = (time.monotonic(), result)
        return result

    # ------------------------------------------------------------------ search and timeline

    async def search(self, term: str, limit: int = 50) -> dict[str, Any]:
        kind, value = classify(term)
        issuers: list[dict[str, Any]] = []
        invoices: list[dict[str, Any]] = []
        if kind == "invoice_id":
            doc = await self.queries.invoice(value)
            invoices = [doc] if doc else []
        elif kind == "uuid":
            invoices = await self.queries.invoices_where({"uuid": value}, limit)
        elif kind == "issuer_id":
            issuer = await self.queries.issuer(value)
            issuers = [issuer] if issuer else []
            invoices = await self.queries.invoices_where({"issuer_id": value}, limit)
        elif kind == "rfc":
            issuers = await self.queries.issuers_where(rfc=value)
            ids = [i["_id"] for i in issuers]
            invoices = await self.queries.invoices_where({"$or": [{"customer_rfc": value}, *([{"issuer_id": {"$in": ids}}] if ids else [])]}, limit)
        elif value:
            issuers = await self.queries.issuers_where(name=value)
            if issuers:
                invoices = await self.queries.invoices_where({"issuer_id": {"$in": [i["_id"] for i in issuers]}}, limit)
        return {"query": term, "kind": kind, "issuers": issuers, "invoices": invoices}

    async def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        doc = await self.queries.invoice(invoice_id)
        if doc is None:
            return None
        return {
            "invoice": doc,
            "issuer": await self.queries.issuer(doc["issuer_id"]),
            "dead_letters": await self.letters.page(status=None, invoice_id=invoice_id, limit=20),
            "trace_url": f"{self.jaeger_url}/trace/{doc['trace_id']}" if self.jaeger_url and doc.get("trace_id") else None,
        }
