"""Timbra's cancellation rules: the checks before the PAC is called (each with a coded Spanish
problem), the prediction of SAT's path (direct or "en proceso"), how a SAT status answer moves
a cancellation, and the polling back-off. Pure: no I/O, the clock is an argument.

SAT's own rules (motives, business days, acceptance exceptions, the deadline) live in
``timbra_shared.cfdi.cancelacion`` and are shared with the sandbox PAC.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from timbra_shared.cfdi import cancelacion as sat

STAMPED = "vigente"  # the projection's status of a stamped invoice in force
CANCELLED = "cancelado"


class State(StrEnum):
    """A cancellation's state (the ``cancellation_status`` of the API)."""

    AWAITING_SUBSTITUTE = "awaiting_substitute"  # the guided substitution: the new invoice is being stamped
    REQUESTED = "requested"  # accepted by Timbra, not yet registered at SAT
    PENDING = "pending"  # SAT: "En proceso", waiting for the receptor
    COMPLETED = "completed"  # SAT: Cancelado (final)
    REJECTED = "rejected"  # refused by Timbra's checks, SAT, the PAC or the receptor (final for this attempt)
    ESCALATED = "escalated"  # SAT answered something unknown: an operator decides


IN_PROCESS = frozenset({State.AWAITING_SUBSTITUTE, State.REQUESTED, State.PENDING, State.ESCALATED})


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    status: int = 422
    path: str | None = None
    source: str = "timbra"


@dataclass(frozen=True)
class Invoice:
    """What the cancellation service knows of an invoice (its projection)."""

    invoice_id: str
    issuer_id: str
    uuid: str | None
    type: str
    total: Decimal
    currency: str
    rfc_emisor: str
    rfc_receptor: str
    fecha: datetime | None  # local, naive
    status: str = STAMPED
    global_invoice: bool = False
    related: tuple[tuple[str, str], ...] = ()  # (TipoRelacion or "pago", UUID) this invoice points to
    exchange: Decimal | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Invoice":
        return cls(
            invoice_id=doc["_id"],
            issuer_id=doc["issuer_id"],
            uuid=doc.get("uuid"),
            type=doc.get("type") or "I",
            total=Decimal(str(doc.get("total") or "0")),
            currency=doc.get("currency") or "MXN",
            rfc_emisor=doc.get("rfc_emisor") or "",
            rfc_receptor=doc.get("rfc_receptor") or "",
            fecha=datetime.fromisoformat(doc["fecha"]) if doc.get("fecha") else None,
            status=doc.get("status") or STAMPED,
            global_invoice=bool(doc.get("global")),
            related=tuple((r["tipo"], r["uuid"].upper()) for r in doc.get("related") or []),
            exchange=Decimal(str(doc["exchange"])) if doc.get("exchange") else None,
        )

    @property
    def stamped(self) -> bool:
        return bool(self.uuid)

    def comprobante(self) -> sat.Comprobante:
        assert self.fecha is not None
        return sat.Comprobante(tipo=self.type, total=self.total, rfc_emisor=self.rfc_emisor, rfc_receptor=self.rfc_receptor,
                               fecha=self.fecha, moneda=self.currency, tipo_cambio=self.exchange)


def _label(invoice: Invoice) -> str:
    return invoice.uuid or invoice.invoice_id


def check_motive(motive: str, substitution: str | None) -> list[Problem]:
    if motive not in sat.MOTIVOS:
        catalog = ", ".join(f"{k} ({v})" for k, v in sat.MOTIVOS.items())
        return [Problem("TIMBRA_CANCEL_MOTIVE_INVALID", f"El motivo de cancelación «{motive}» no está en el catálogo del SAT; usa uno de: {catalog}.", path="motive")]
    if motive == "01" and not substitution:
        return [Problem("TIMBRA_CANCEL_SUBSTITUTION_REQUIRED",
                        "El motivo 01 requiere la factura que sustituye a la cancelada (substitution: su id o UUID). Emítela primero relacionando "
                        "esta factura con TipoRelacion 04, o usa POST /v1/invoices/{id}/cancellation/substitution para hacerlo en un paso.", path="substitution")]
    if motive != "01" and substitution:
        return [Problem("TIMBRA_CANCEL_SUBSTITUTION_NOT_ALLOWED", f"Solo el motivo 01 lleva factura sustituta; con el motivo {motive} omite substitution.", path="substitution")]
    return []


def check_invoice(invoice: Invoice, motive: str, current_state: str | None, now_local: datetime) -> list[Problem]:
    """The original invoice: stamped, in force, not in process, within SAT's deadline; 04 only
    for a global invoice."""
    if not invoice.stamped:
        return [Problem("TIMBRA_CANCEL_NOT_STAMPED", "La factura aún no está timbrada; solo se puede cancelar una factura timbrada.", status=409)]
    if invoice.status == CANCELLED or current_state == State.COMPLETED:
        return [Problem("TIMBRA_CANCEL_ALREADY_CANCELLED", f"La factura {invoice.uuid} ya está cancelada.", status=409)]
    if current_state in IN_PROCESS:
        return [Problem("TIMBRA_CANCEL_IN_PROCESS", f"La factura {invoice.uuid} ya tiene una solicitud de cancelación en proceso "
                        "(consulta GET /v1/invoices/{id}/cancellation).", status=409)]
    if invoice.fecha is not None:
        limit = sat.fecha_limite_cancelacion(invoice.fecha, invoice.rfc_emisor)
        if now_local > limit:
            return [Problem("TIMBRA_CANCEL_DEADLINE_PASSED",
                            f"El plazo para cancelar la factura {invoice.uuid} terminó el {limit.date().isoformat()}: el SAT permite cancelar hasta el mes "
                            "en que se presenta la declaración anual del ejercicio en que se expidió (art. 29-A CFF).")]
    if motive == "04" and not invoice.global_invoice:
        return [Problem("TIMBRA_CANCEL_MOTIVE_04_NOT_GLOBAL",
                        "El motivo 04 (operación nominativa relacionada en una factura global) solo aplica a una factura global "
                        "a público en general; para esta factura usa el motivo 01, 02 o 03.", path="motive")]
    return []


def check_substitute(original: Invoice, substitute: Invoice | None, substitute_state: str | None) -> list[Problem]:
    """Motive 01: the substitute exists (same issuer), is stamped and in force, and relates the
    original with TipoRelacion 04."""
    if substitute is None:
        return [Problem("TIMBRA_CANCEL_SUBSTITUTE_NOT_FOUND", "La factura sustituta no existe.", path="substitution")]
    if substitute.invoice_id == original.invoice_id:
        return [Problem("TIMBRA_CANCEL_SUBSTITUTE_IS_ORIGINAL", "La factura sustituta no puede ser la misma que se cancela.", path="substitution")]
    if not substitute.stamped:
        return [Problem("TIMBRA_CANCEL_SUBSTITUTE_NOT_STAMPED", "La factura sustituta aún no está timbrada; espera a que se timbre y vuelve a intentarlo.",
                        status=409, path="substitution")]
    if substitute.status == CANCELLED or substitute_state in (State.COMPLETED, *IN_PROCESS):
        return [Problem("TIMBRA_CANCEL_SUBSTITUTE_CANCELLED", f"La factura sustituta {substitute.uuid} está cancelada o en proceso de cancelación.", path="substitution")]
    if (sat.SUSTITUCION, (original.uuid or "").upper()) not in substitute.related:
        return [Problem("TIMBRA_CANCEL_SUBSTITUTE_NOT_RELATED",
                        f"La factura sustituta {substitute.uuid} no relaciona a {original.uuid} con TipoRelacion 04 (sustitución de los CFDI previos); "
                        "emítela con related: [{relationship: \"04\", uuids: [\"" + (original.uuid or "") + "\"]}].", path="substitution")]
    return []


def related_in_force_problem(children: list[dict[str, Any]]) -> list[Problem]:
    """Documents in force that point to the invoice (payments, credit notes…) block it."""
    if not children:
        return []
    listed = "; ".join(
        f"{c.get('serie') or ''}{c.get('folio') or ''} {c['uuid']} ({'complemento de pago' if c['tipo'] == 'pago' else 'TipoRelacion ' + c['tipo']})".strip()
        for c in children
    )
    return [Problem("TIMBRA_CANCEL_RELATED_IN_FORCE",
                    f"La factura tiene {len(children)} documento(s) relacionado(s) vigente(s) que deben cancelarse antes: {listed}.", status=409)]


@dataclass(frozen=True)
class Expectation:
    acceptance_required: bool
    reason: str | None  # why not (timbra_shared.cfdi.cancelacion.RAZONES)
    respond_by: datetime | None  # if it were requested now: the end of the receptor's 3 business days

    def as_dict(self) -> dict[str, Any]:
        return {"acceptance_required": self.acceptance_required, "reason": self.reason,
                "reason_text": sat.RAZONES.get(self.reason or "") if self.reason else "el receptor debe aceptar (o no responder en 3 días hábiles)"}


def expect(invoice: Invoice, now_local: datetime) -> Expectation:
    """SAT's likely path: without acceptance (why), or "en proceso" for the receptor."""
    reason = sat.razon_sin_aceptacion(invoice.comprobante(), now_local) if invoice.fecha else None
    return Expectation(acceptance_required=reason is None, reason=reason, respond_by=None if reason else sat.plazo_respuesta(now_local))


# --------------------------------------------------------------------------- SAT's answers

class Outcome(StrEnum):
    WAIT = "wait"  # SAT has not registered it yet (Vigente without status, No Encontrado): poll again
    PENDING = "pending"
    COMPLETED = "completed"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Reading:
    outcome: Outcome
    acceptance: str | None = None  # completed: sin_aceptacion | con_aceptacion | plazo_vencido
    accepted_by: str | None = None  # receptor | plazo_vencido (an ``accepted`` event precedes ``completed``)


def read_status(estado: str, estatus_cancelacion: str) -> Reading:
    """What SAT's (Estado, EstatusCancelacion) means for the cancellation."""
    if estado == sat.CANCELADO:
        if estatus_cancelacion in ("", sat.CANCELADO_SIN_ACEPTACION):
            return Reading(Outcome.COMPLETED, acceptance="sin_aceptacion")
        if estatus_cancelacion == sat.CANCELADO_CON_ACEPTACION:
            return Reading(Outcome.COMPLETED, acceptance="con_aceptacion", accepted_by="receptor")
        if estatus_cancelacion == sat.PLAZO_VENCIDO:
            return Reading(Outcome.COMPLETED, acceptance="plazo_vencido", accepted_by="plazo_vencido")
        return Reading(Outcome.UNKNOWN)
    if estado == sat.VIGENTE:
        if estatus_cancelacion == "":
            return Reading(Outcome.WAIT)
        if estatus_cancelacion == sat.EN_PROCESO:
            return Reading(Outcome.PENDING)
        if estatus_cancelacion == sat.SOLICITUD_RECHAZADA:
            return Reading(Outcome.REJECTED)
        return Reading(Outcome.UNKNOWN)
    if estado == sat.NO_ENCONTRADO:
        return Reading(Outcome.WAIT)
    return Reading(Outcome.UNKNOWN)


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with equal jitter (as the stamping service's), for PAC retries and
    for status polls: SAT answers the receptor's decision within days, so polls slow down."""

    base_s: float
    max_s: float
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))
        return ceiling / 2 + self.rand() * ceiling / 2
