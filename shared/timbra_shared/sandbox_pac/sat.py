"""The sandbox PAC's SAT side of cancellation: requests keyed by UUID, SAT's acceptance rules,
the receptor's answer (configurable per UUID, receptor or issuer: accept, reject or no answer),
the 3-business-day "plazo vencido", related documents that block a cancellation, and the status
SAT's ConsultaCFDIService reports.

Time: the real calendar by default (``timbra_shared.cfdi.cancelacion``). A rule can compress it,
as PAC test environments do ("24 hours → 5 minutes"): ``direct_window_s`` replaces "until the end of
the business day after issue" and ``response_window_s`` the receptor's 3 business days.
"""

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from timbra_shared.cfdi import cancelacion as rules
from timbra_shared.cfdi.acuse import build_acuse
from timbra_shared.cfdi.csd import Csd
from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.cfdi.fecha import now_local
from timbra_shared.cfdi.xmlparse import NS_CFDI4, NS_PAGO20, parse_xml

ANSWERS = ("accept", "reject", "none")
RECIBIDA, PREVIAMENTE_CANCELADO = "201", "202"


@dataclass
class Rule:
    """How SAT and the receptor behave for the CFDIs a rule covers."""

    receptor_answer: str = "none"  # accept | reject | none (silence: "Plazo vencido" at the end of the window)
    answer_after_s: float = 0.0  # the receptor answers this long after the request
    direct_window_s: float | None = None  # None: SAT's calendar (end of the next business day)
    response_window_s: float | None = None  # None: SAT's calendar (3 business days)
    final_state: str | None = None  # report this EstatusCancelacion (with Estado Cancelado) once answered: an unknown state

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "Rule":
        known = {f.name for f in fields(cls)}
        unknown = set(body) - known - {"key"}
        if unknown:
            raise ValueError(f"campos desconocidos: {sorted(unknown)}")
        rule = cls(**{k: v for k, v in body.items() if k in known})
        if rule.receptor_answer not in ANSWERS:
            raise ValueError(f"receptor_answer debe ser uno de {ANSWERS}")
        for name in ("answer_after_s", "direct_window_s", "response_window_s"):
            value = getattr(rule, name)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{name} debe ser un número de segundos")
        return rule


_NS = {"cfdi": NS_CFDI4, "pago20": NS_PAGO20, "tfd": "http://www.sat.gob.mx/TimbreFiscalDigital"}


class Refused(Exception):
    """SAT refuses the request: ``code`` and a Spanish message (HTTP 400 in SW's envelope)."""

    def __init__(self, code: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


def facts_of(xml: str) -> dict[str, Any] | None:
    """What SAT keeps of a stamped CFDI: parties, type, total, dates and the UUIDs it relates to."""
    try:
        root = parse_xml(xml)
    except CfdiError:
        return None
    tfd = root.find(".//tfd:TimbreFiscalDigital", _NS)
    return None if tfd is None else facts_of_root(root, tfd.get("UUID") or "")


def facts_of_root(root: Any, uuid: str) -> dict[str, Any] | None:
    """:func:`facts_of` for a CFDI already parsed, stamped with ``uuid`` (the stamp endpoint's)."""
    emisor, receptor = root.find("cfdi:Emisor", _NS), root.find("cfdi:Receptor", _NS)
    if emisor is None or receptor is None:
        return None
    related = [
        {"uuid": (node.get("UUID") or "").upper(), "tipo": group.get("TipoRelacion", "")}
        for group in root.findall("cfdi:CfdiRelacionados", _NS)
        for node in group.findall("cfdi:CfdiRelacionado", _NS)
    ]
    related += [{"uuid": (d.get("IdDocumento") or "").upper(), "tipo": "pago"} for d in root.iterfind(".//pago20:DoctoRelacionado", _NS)]
    return {
        "uuid": uuid.upper(),
        "rfc_emisor": emisor.get("Rfc", ""),
        "rfc_receptor": receptor.get("Rfc", ""),
        "tipo": root.get("TipoDeComprobante", ""),
        "total": root.get("Total", "0"),
        "moneda": root.get("Moneda", "MXN"),
        "tipo_cambio": root.get("TipoCambio"),
        "fecha": root.get("Fecha", ""),
        "lugar": root.get("LugarExpedicion", "06000"),
        "related": related,
    }


class SatSimulator:
    def __init__(self, path: str, signer: Csd) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS cfdis (uuid TEXT PRIMARY KEY, facts TEXT, stamped_at REAL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS relations (child TEXT, parent TEXT, tipo TEXT)")
        self._db.execute("CREATE INDEX IF NOT EXISTS relations_parent ON relations(parent)")
        self._db.execute("CREATE TABLE IF NOT EXISTS cancellations (uuid TEXT PRIMARY KEY, doc TEXT)")
        self._lock = threading.Lock()
        self._signer = signer
        self.rules: dict[str, Rule] = {}
        self.counters = {"cancel_calls": 0, "solicitudes": 0, "cancel_duplicates": 0, "cancel_refused": 0, "status_queries": 0}
        self.calls: dict[str, int] = {}  # cancel calls per UUID, faulted ones included

    # ------------------------------------------------------------------ records

    def register(self, facts: dict[str, Any] | None, stamped_at: float | None = None) -> None:
        """Keep a stamped CFDI's facts (:func:`facts_of_root`); None (not a CFDI SAT keeps) is ignored."""
        if facts is None:
            return
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO cfdis VALUES (?, ?, ?)", (facts["uuid"], json.dumps(facts), stamped_at or time.time()))
            for relation in facts["related"]:
                self._db.execute("INSERT INTO relations VALUES (?, ?, ?)", (facts["uuid"], relation["uuid"], relation["tipo"]))

    def cfdi(self, uuid: str) -> tuple[dict[str, Any], float] | None:
        with self._lock:
            row = self._db.execute("SELECT facts, stamped_at FROM cfdis WHERE uuid = ?", (uuid.upper(),)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def _cancellation(self, uuid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM cancellations WHERE uuid = ?", (uuid.upper(),)).fetchone()
        return None if row is None else json.loads(row[0])

    def _save(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cancellations VALUES (?, ?)", (doc["uuid"], json.dumps(doc)))

    def rule_for(self, facts: dict[str, Any]) -> Rule:
        for key in (facts["uuid"], facts["rfc_receptor"], facts["rfc_emisor"], "*"):
            rule = self.rules.get(key.upper()) if key != "*" else self.rules.get("*")
            if rule is not None:
                return rule
        return Rule()

    # ------------------------------------------------------------------ SAT's rules

    def live_children(self, uuid: str) -> list[dict[str, str]]:
        """CFDIs in force that relate to ``uuid`` (a substitution, TipoRelacion 04, never blocks)."""
        with self._lock:
            rows = self._db.execute("SELECT child, tipo FROM relations WHERE parent = ?", (uuid.upper(),)).fetchall()
        return [{"uuid": child, "tipo": tipo} for child, tipo in rows if tipo != rules.SUSTITUCION and self._estado(child) == rules.VIGENTE]

    def _estado(self, uuid: str, now: float | None = None) -> str:
        found = self.cfdi(uuid)
        if found is None:
            return rules.NO_ENCONTRADO
        doc = self._cancellation(uuid)
        return rules.VIGENTE if doc is None else self._resolve(doc, found[0], time.time() if now is None else now)[0]

    def _comprobante(self, facts: dict[str, Any]) -> rules.Comprobante:
        try:
            tipo_cambio = Decimal(facts["tipo_cambio"]) if facts.get("tipo_cambio") else None
            total = Decimal(facts["total"])
        except InvalidOperation:
            tipo_cambio, total = None, Decimal(0)
        return rules.Comprobante(tipo=facts["tipo"], total=total, rfc_emisor=facts["rfc_emisor"], rfc_receptor=facts["rfc_receptor"],
                                 fecha=datetime.fromisoformat(facts["fecha"]), moneda=facts["moneda"], tipo_cambio=tipo_cambio)

    def reason_without_acceptance(self, facts: dict[str, Any], stamped_at: float, now: float) -> str | None:
        rule = self.rule_for(facts)
        in_window = None if rule.direct_window_s is None else now - stamped_at <= rule.direct_window_s
        return rules.razon_sin_aceptacion(self._comprobante(facts), now_local(facts["lugar"]).replace(tzinfo=None), dentro_de_plazo=in_window)

    def es_cancelable(self, facts: dict[str, Any], stamped_at: float, now: float) -> str:
        if self.live_children(facts["uuid"]):
            return rules.NO_CANCELABLE
        if self.reason_without_acceptance(facts, stamped_at, now):
            return rules.CANCELABLE_SIN_ACEPTACION
        return rules.CANCELABLE_CON_ACEPTACION

    def _resolve(self, doc: dict[str, Any], facts: dict[str, Any], now: float) -> tuple[str, str]:
        """(Estado, EstatusCancelacion) of a cancellation request at ``now``."""
        if doc["kind"] == "sin_aceptacion":
            return rules.CANCELADO, rules.CANCELADO_SIN_ACEPTACION
        rule = self.rule_for(facts)
        answered = now >= doc["requested_at"] + rule.answer_after_s
        if rule.final_state and answered:
            return rules.CANCELADO, rule.final_state
        answer = doc.get("answer") or (rule.receptor_answer if answered else None)
        if answer == "accept":
            return rules.CANCELADO, rules.CANCELADO_CON_ACEPTACION
        if answer == "reject":
            return rules.VIGENTE, rules.SOLICITUD_RECHAZADA
        if rule.response_window_s is not None:
            expired = now > doc["requested_at"] + rule.response_window_s
        else:
            requested_local = datetime.fromtimestamp(doc["requested_at"], tz=now_local(facts["lugar"]).tzinfo).replace(tzinfo=None)
            expired = now_local(facts["lugar"]).replace(tzinfo=None) > rules.plazo_respuesta(requested_local)
        if expired:
            return rules.CANCELADO, rules.PLAZO_VENCIDO
        return rules.VIGENTE, rules.EN_PROCESO

    def status(self, uuid: str, now: float | None = None) -> dict[str, str]:
        """ConsultaCFDIService's answer for ``uuid``."""
        now = time.time() if now is None else now
        found = self.cfdi(uuid)
        if found is None:
            return {"CodigoEstatus": "N - 602: Comprobante no encontrado.", "Estado": rules.NO_ENCONTRADO, "EsCancelable": "", "EstatusCancelacion": "", "ValidacionEFOS": ""}
        facts, stamped_at = found
        doc = self._cancellation(uuid)
        estado, estatus = (rules.VIGENTE, "") if doc is None else self._resolve(doc, facts, now)
        cancelable = self.es_cancelable(facts, stamped_at, now) if estado == rules.VIGENTE else rules.CANCELABLE_CON_ACEPTACION if doc and doc["kind"] == "con_aceptacion" else rules.CANCELABLE_SIN_ACEPTACION
        return {"CodigoEstatus": "S - Comprobante obtenido satisfactoriamente.", "Estado": estado, "EsCancelable": cancelable, "EstatusCancelacion": estatus, "ValidacionEFOS": "200"}

    def status_by_expression(self, expresion: str) -> dict[str, str]:
        self.counters["status_queries"] += 1
        params = dict(part.split("=", 1) for part in expresion.lstrip("?").split("&") if "=" in part)
        uuid = params.get("id", "")
        found = self.cfdi(uuid)
        if found is not None:
            facts = found[0]
            try:
                same_total = Decimal(params.get("tt", "x")) == Decimal(facts["total"])
            except InvalidOperation:
                same_total = False
            if params.get("re") != facts["rfc_emisor"] or params.get("rr") != facts["rfc_receptor"] or not same_total:
                return {"CodigoEstatus": "N - 601: La expresión impresa proporcionada no es válida.", "Estado": rules.NO_ENCONTRADO, "EsCancelable": "", "EstatusCancelacion": "", "ValidacionEFOS": ""}
        return self.status(uuid)

    # ------------------------------------------------------------------ requests

    def cancel(self, rfc_emisor: str, uuid: str, motivo: str, folio: str | None, now: float | None = None) -> tuple[str, bytes]:
        """Register a cancellation request; (EstatusUUID, acuse). Raises :class:`Refused`.

        Requests are keyed by UUID: while one is in process, or once the CFDI is cancelled, a
        repeat gets the earlier acuse and registers nothing (SAT answers 202 for a cancelled one)."""
        now = time.time() if now is None else now
        uuid = uuid.upper()
        if motivo not in rules.MOTIVOS:
            raise Refused("207", "El motivo de cancelación no es válido; use 01, 02, 03 o 04.")
        found = self.cfdi(uuid)
        if found is None:
            raise Refused("205", "El UUID no existe.")
        facts, stamped_at = found
        if facts["rfc_emisor"] != rfc_emisor:
            raise Refused("203", "El UUID no corresponde al RFC del emisor.")
        doc = self._cancellation(uuid)
        if doc is not None:
            estado, estatus = self._resolve(doc, facts, now)
            if estado == rules.CANCELADO or estatus == rules.EN_PROCESO:
                self.counters["cancel_duplicates"] += 1
                doc["duplicates"] = doc.get("duplicates", 0) + 1
                self._save(doc)
                code = PREVIAMENTE_CANCELADO if estado == rules.CANCELADO else RECIBIDA
                return code, doc["acuse"].encode() if code == RECIBIDA else self._acuse(rfc_emisor, uuid, code, now)
        self._check_substitution(facts, motivo, folio)
        children = self.live_children(uuid)
        if children:
            listed = ", ".join(f"{c['uuid']} ({'pago' if c['tipo'] == 'pago' else 'TipoRelacion ' + c['tipo']})" for c in children)
            raise Refused("CA320", "El CFDI no es cancelable: tiene documentos relacionados vigentes.", listed)
        kind = "sin_aceptacion" if self.reason_without_acceptance(facts, stamped_at, now) else "con_aceptacion"
        acuse = self._acuse(rfc_emisor, uuid, RECIBIDA, now).decode()
        history = (doc or {}).get("history", [])
        if doc is not None:
            history.append({"requested_at": doc["requested_at"], "answer": doc.get("answer"), "motivo": doc["motivo"]})
        self._save({"uuid": uuid, "rfc_emisor": rfc_emisor, "motivo": motivo, "folio_sustitucion": folio, "kind": kind, "requested_at": now,
                    "answer": None, "answered_at": None, "acuse": acuse, "solicitudes": (doc or {}).get("solicitudes", 0) + 1,
                    "duplicates": (doc or {}).get("duplicates", 0), "history": history})
        self.counters["solicitudes"] += 1
        return RECIBIDA, acuse.encode()

    def _check_substitution(self, facts: dict[str, Any], motivo: str, folio: str | None) -> None:
        if motivo != "01":
            if folio:
                raise Refused("CA310", "El folio de sustitución solo se admite con el motivo 01.")
            return
        if not folio:
            raise Refused("CA310", "El motivo 01 requiere el folio fiscal (UUID) del comprobante que sustituye al cancelado.")
        substitute = self.cfdi(folio)
        if substitute is None or substitute[0]["rfc_emisor"] != facts["rfc_emisor"]:
            raise Refused("CA310", "El folio de sustitución no existe o no es de este emisor.")
        if not any(r["uuid"] == facts["uuid"] and r["tipo"] == rules.SUSTITUCION for r in substitute[0]["related"]):
            raise Refused("CA310", "El comprobante sustituto no relaciona al cancelado con TipoRelacion 04.")

    def _acuse(self, rfc_emisor: str, uuid: str, code: str, now: float) -> bytes:
        fecha = datetime.fromtimestamp(now, tz=now_local("06000").tzinfo).replace(tzinfo=None, microsecond=0).isoformat()
        return build_acuse(rfc_emisor, {uuid: code}, fecha, self._signer)

    def answer(self, rfc_receptor: str, uuid: str, accept: bool, now: float | None = None) -> str:
        """The receptor accepts or rejects a request in process (SW's ``acceptreject``)."""
        now = time.time() if now is None else now
        found = self.cfdi(uuid)
        doc = self._cancellation(uuid)
        if found is None or doc is None or found[0]["rfc_receptor"] != rfc_receptor:
            raise Refused("1001", "No existe una solicitud de cancelación pendiente para ese UUID y receptor.")
        if self._resolve(doc, found[0], now)[1] != rules.EN_PROCESO:
            raise Refused("1002", "La solicitud de cancelación ya no está en proceso.")
        doc["answer"], doc["answered_at"] = ("accept" if accept else "reject"), now
        self._save(doc)
        return "1000"

    def pendings(self, rfc_receptor: str, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute("SELECT doc FROM cancellations").fetchall()
        out = []
        for (raw,) in rows:
            doc = json.loads(raw)
            found = self.cfdi(doc["uuid"])
            if found and found[0]["rfc_receptor"] == rfc_receptor and self._resolve(doc, found[0], now)[1] == rules.EN_PROCESO:
                out.append(doc["uuid"])
        return out

    def info(self, uuid: str) -> dict[str, Any] | None:
        """Introspection for tests and operators: the request, its counters and SAT's status now."""
        found = self.cfdi(uuid)
        if found is None:
            return None
        doc = self._cancellation(uuid) or {}
        return {
            "uuid": uuid.upper(),
            "calls": self.calls.get(uuid.upper(), 0),
            "solicitudes": doc.get("solicitudes", 0),
            "duplicates": doc.get("duplicates", 0),
            **{k: doc.get(k) for k in ("motivo", "folio_sustitucion", "kind", "requested_at", "answer", "answered_at")},
            "related_in_force": self.live_children(uuid),
            "status": self.status(uuid),
            "rule": asdict(self.rule_for(found[0])),
        }
