"""Hand-written fakes of the notifier's ports, and one really stamped CFDI to render."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from email.message import EmailMessage
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from timbra_notifier.adapters.mailer import PermanentMailError
from timbra_notifier.service import NotifierService
from timbra_shared.mongo import DUPLICATE


class FakeSession:
    pass


class FakeTransaction:
    def __init__(self) -> None:
        self.session = FakeSession()
        self.staged: list[BaseModel] = []

    def emit(self, event: BaseModel, *, key: str | None = None) -> None:
        self.staged.append(event)


class FakeProcessed:
    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    async def find_one(self, query: dict[str, Any], projection: Any = None) -> dict[str, Any] | None:
        return {"_id": query["_id"]} if query["_id"] in self.keys else None


class FakeStore:
    """``transact`` honours ``dedupe``; ``db.processed`` is the same inbox, as the service reads it directly."""

    def __init__(self) -> None:
        self.processed: set[str] = set()
        self.db = SimpleNamespace(processed=FakeProcessed(self.processed))
        self.emitted: list[BaseModel] = []
        self.sessions: list[FakeSession] = []

    async def was_processed(self, dedupe: str) -> bool:
        return dedupe in self.processed

    async def transact(self, work, *, dedupe: str | None = None):
        if dedupe is not None and dedupe in self.processed:
            return DUPLICATE
        tx = FakeTransaction()
        self.sessions.append(tx.session)
        result = await work(tx)
        if dedupe is not None:
            self.processed.add(dedupe)
        self.emitted.extend(tx.staged)
        return result


class FakeDocumentRepository:
    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.emails: dict[str, dict[str, Any]] = {}
        self.saves: list[tuple[dict[str, Any], Any]] = []
        self.marks: list[dict[str, Any]] = []

    async def get(self, invoice_id: str, issuer_id: str | None = None) -> dict[str, Any] | None:
        doc = self.documents.get(invoice_id)
        if doc is None or (issuer_id is not None and doc["issuer_id"] != issuer_id):
            return None
        return copy.deepcopy(doc)

    async def save(self, doc: dict[str, Any], session: Any) -> None:
        self.saves.append((copy.deepcopy(doc), session))
        self.documents[doc["_id"]] = copy.deepcopy(doc)

    async def claim_email(self, invoice_id: str, recipients: list[str]) -> dict[str, Any] | None:
        current = self.emails.get(invoice_id)
        if current is not None and current["state"] == "sent":
            return None
        attempts = (current or {}).get("attempts", 0) + 1
        self.emails[invoice_id] = {"_id": invoice_id, "state": "sending", "recipients": recipients, "attempts": attempts}
        return dict(self.emails[invoice_id])

    async def mark_email(self, invoice_id: str, state: str, session: Any, **fields: Any) -> None:
        self.marks.append({"invoice_id": invoice_id, "state": state, "session": session, **fields})
        self.emails[invoice_id].update(state=state, **fields)


class FakeRenderer:
    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def render(self, context: dict[str, Any]) -> bytes:
        self.contexts.append(context)
        return b"%PDF-1.7 fake pdf for " + context["tfd"].get("UUID", "?").encode()


class FakeMailer:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.fail_with: list[BaseException] = []  # raised (in order) before anything is sent

    async def send(self, message: EmailMessage) -> None:
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.sent.append(message)


@pytest.fixture
def fakes():
    return SimpleNamespace(store=FakeStore(), repo=FakeDocumentRepository(), renderer=FakeRenderer(), mailer=FakeMailer())


@pytest.fixture
def notifier(fakes) -> NotifierService:
    return NotifierService(store=fakes.store, repo=fakes.repo, renderer=fakes.renderer, mailer=fakes.mailer)


@pytest.fixture
def permanent_error():
    return PermanentMailError("El servidor de correo rechazó el envío: SMTPRecipientsRefused")


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
