"""Hand-written fakes of the notifier's ports, and one really stamped CFDI to render."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from email.message import EmailMessage
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from timbra_notifier.adapters.mailer import PermanentMailError, TransientMailError
from timbra_notifier.service import NotifierService
from timbra_shared.mongo import DUPLICATE


from timbra_shared.testing import FakeSession, FakeStore, FakeTransaction  # noqa: E402,F401


class FakeDocumentRepository:
    """In-memory DocumentRepository with the same rules (one email per invoice, a lease, retries)."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.emails: dict[str, dict[str, Any]] = {}
        self.saves: list[tuple[dict[str, Any], Any]] = []
        self.marks: list[dict[str, Any]] = []
        self.issuers: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.notifications: dict[str, dict[str, Any]] = {}
        self.followup_sessions: list[Any] = []
        self.followup_failures: list[BaseException] = []  # raised (in order) by the next follow-up writes

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        doc = self.documents.get(invoice_id)
        if doc is None or (issuer_id is not None and doc["issuer_id"] != issuer_id):
            return None
        return copy.deepcopy(doc)

    async def save(self, doc: dict[str, Any], session: Any) -> None:
        self.saves.append((copy.deepcopy(doc), session))
        self.documents[doc["_id"]] = copy.deepcopy(doc)

    async def set_pdf(self, invoice_id: str, field: str, pdf: bytes) -> None:
        self.documents[invoice_id][field] = pdf

    async def mark_cancelled(self, invoice_id: str, issuer_id: str | None, at: datetime) -> bool:
        doc = self.documents.get(invoice_id)
        if doc is None or (issuer_id and doc["issuer_id"] != issuer_id) or doc.get("cancelled_at"):
            return False
        doc["cancelled_at"] = at
        doc.pop("pdf_cancelled", None)
        return True

    async def claim_email(self, invoice_id: str, recipients: list[str], *, lease_s: float = 120.0) -> dict[str, Any] | None:
        current = self.emails.get(invoice_id)
        if current is not None and current["state"] in ("sent", "failed"):
            return None
        attempts = (current or {}).get("attempts", 0) + 1
        first_at = (current or {}).get("first_at") or datetime.now(UTC)
        self.emails[invoice_id] = {**(current or {}), "_id": invoice_id, "state": "sending", "recipients": recipients, "attempts": attempts, "first_at": first_at}
        return dict(self.emails[invoice_id])

    async def schedule_email_retry(self, invoice_id: str, next_at: datetime, error: str, context: dict[str, Any]) -> None:
        self.emails[invoice_id].update(state="retry", next_at=next_at, last_error=error, retry=context)

    async def due_email_retry(self, now: datetime) -> dict[str, Any] | None:
        for doc in self.emails.values():
            if doc["state"] == "retry" and doc["next_at"] <= now:
                doc.update(state="sending", attempts=doc["attempts"] + 1)
                return copy.deepcopy(doc)
        return None

    async def mark_email(self, invoice_id: str, state: str, session: Any = None, **fields: Any) -> bool:
        if self.emails[invoice_id]["state"] in ("sent", "failed"):
            return False
        self.marks.append({"invoice_id": invoice_id, "state": state, "session": session, **fields})
        self.emails[invoice_id].update(state=state, **fields)
        return True

    async def schedule_followup(self, invoice_id: str, followup: dict[str, Any], session: Any = None) -> None:
        if self.followup_failures:
            raise self.followup_failures.pop(0)
        self.followup_sessions.append(session)
        self.emails[invoice_id]["followup"] = {**copy.deepcopy(followup), "state": "retry"}

    async def due_followup(self, now: datetime, *, lease_s: float = 120.0) -> dict[str, Any] | None:
        for doc in self.emails.values():
            followup = doc.get("followup")
            if followup and followup["state"] == "retry" and followup["next_at"] <= now:
                followup.update(state="sending", attempts=followup["attempts"] + 1)
                return copy.deepcopy(doc)
        return None

    async def finish_followup(self, invoice_id: str, state: str, **fields: Any) -> None:
        if self.followup_failures:
            raise self.followup_failures.pop(0)
        self.emails[invoice_id]["followup"].update(state=state, **fields)

    async def email_status(self, invoice_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.emails.get(invoice_id))

    async def log_resend(self, invoice_id: str, entry: dict[str, Any]) -> None:
        self.emails.setdefault(invoice_id, {"_id": invoice_id, "state": "resent_only"}).setdefault("resends", []).append(entry)

    async def claim_notification(self, event_id: str, issuer_id: str, kind: str) -> bool:
        if self.notifications.get(event_id, {}).get("state") == "sent":
            return False
        self.notifications[event_id] = {"state": "sending", "issuer_id": issuer_id, "kind": kind}
        return True

    async def mark_notification(self, event_id: str, state: str, session: Any, **fields: Any) -> None:
        self.notifications[event_id].update(state=state, **fields)

    async def upsert_issuer(self, profile: dict[str, Any]) -> None:
        current = self.issuers.get(profile["issuer_id"])
        if current is None or current["version"] <= profile["version"]:
            self.issuers[profile["issuer_id"]] = dict(profile)

    async def issuer(self, issuer_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.issuers.get(issuer_id))

    async def save_request(self, invoice_id: str, issuer_id: str, fields: dict[str, Any]) -> None:
        self.requests[invoice_id] = {"issuer_id": issuer_id, **fields}

    async def request(self, invoice_id: str) -> dict[str, Any] | None:
        return self.requests.get(invoice_id)

    async def template(self, issuer_id: str) -> dict[str, Any] | None:
        return self.templates.get(issuer_id)

    async def set_template(self, issuer_id: str, subject: str | None, body: str | None) -> dict[str, Any]:
        self.templates[issuer_id] = {"subject": subject, "body": body}
        return self.templates[issuer_id]

    async def delete_template(self, issuer_id: str) -> None:
        self.templates.pop(issuer_id, None)


class FakeProfiles:
    """issuer-profile's internal routes: SMTP settings per issuer, and logos."""

    def __init__(self) -> None:
        self.smtp_by_issuer: dict[str, Any] = {}
        self.logos: dict[str, str] = {}
        self.forgotten: list[str] = []
        self.fail = False

    async def smtp(self, issuer_id: str):
        if self.fail:
            raise ConnectionError("issuer-profile is down")
        return self.smtp_by_issuer.get(issuer_id)

    async def logo(self, issuer_id: str, logo_id: str | None) -> str | None:
        return self.logos.get(issuer_id) if logo_id else None

    def forget_smtp(self, issuer_id: str) -> None:
        self.forgotten.append(issuer_id)


class FakeRenderer:
    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def render(self, context: dict[str, Any]) -> bytes:
        self.contexts.append(context)
        return b"%PDF-1.7 fake pdf for " + context["tfd"].get("UUID", "?").encode() + (b" " + context["watermark"].encode() if context.get("watermark") else b"")


class FakeMailer:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.configs: list[Any] = []
        self.fail_with: list[BaseException] = []  # raised (in order) before anything is sent
        self.refusals: list[dict[str, str]] = []  # per send, in order: recipient -> the server's reply, the others accepted
        self.config = SimpleNamespace(sender="facturas@timbra.local")

    async def send(self, message: EmailMessage, config: Any = None) -> dict:
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.sent.append(message)
        self.configs.append(config)
        refusals = self.refusals.pop(0) if self.refusals else {}
        return {rcpt: reply for rcpt, reply in refusals.items() if rcpt in message["To"].split(", ")}


@pytest.fixture
def fakes():
    return SimpleNamespace(store=FakeStore(), repo=FakeDocumentRepository(), renderer=FakeRenderer(), mailer=FakeMailer(), profiles=FakeProfiles())


@pytest.fixture
def notifier(fakes) -> NotifierService:
    return NotifierService(store=fakes.store, repo=fakes.repo, renderer=fakes.renderer, mailer=fakes.mailer, profiles=fakes.profiles, email_retry_base_s=30)


@pytest.fixture
def permanent_error():
    return PermanentMailError("El servidor de correo rechazó los destinatarios: pagos@ure.mx: 550 5.1.1 mailbox unavailable")


@pytest.fixture
def transient_error():
    return TransientMailError("No se pudo entregar el correo por ahora: 421 4.3.2 try again later")


@pytest.fixture(scope="session")
def stamped_xml() -> bytes:
    """A CFDI built with the CFDI core, sealed with a test CSD and stamped with a test PAC
    certificate: 2 x 562.50 + IVA = 1305.00."""
    from timbra_shared.cfdi import Comprobante, Concepto, Emisor, Receptor, Traslado, build, fecha_local, load_csd, seal_xml, to_xml
    from timbra_shared.cfdi.testing import make_csd
    from timbra_shared.cfdi.tfd import stamp

    comprobante = Comprobante(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(Rfc="URE180429TM6", Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA", DomicilioFiscalReceptor="86991", RegimenFiscalReceptor="601", UsoCFDI="G03"),
        LugarExpedicion="42501",
        Fecha=fecha_local("42501", datetime.now(UTC)),
        Serie="F",
        Folio="1",
        FormaPago="01",
        MetodoPago="PUE",
        Conceptos=[Concepto(ClaveProdServ="86121500", Cantidad="2", ClaveUnidad="E48", Descripcion="Colegiatura", ValorUnitario="562.50",
                            Traslados=[Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota="0.160000")])],
    )
    cer, key = make_csd()
    sealed = seal_xml(to_xml(build(comprobante)), load_csd(cer, key, b"12345678a"))
    pac_cer, pac_key = make_csd("SPR190613I52", "SANDBOX PAC")
    stamped, _tfd = stamp(sealed, load_csd(pac_cer, pac_key, b"12345678a"), rfc_prov_certif="SPR190613I52")
    return stamped
