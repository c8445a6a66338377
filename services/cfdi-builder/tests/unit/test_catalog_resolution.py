"""Resolving ``customer_id``, ``items[].product_id`` and tickets against the builder's local
catalog projection (fed by ``catalog.*`` events), and the tax-included price split."""

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from lxml import etree

from timbra_cfdi_builder.domain.comprobante import split_tax_included
from timbra_cfdi_builder.service import InvoiceService
from timbra_shared.cfdi import Traslado
from timbra_shared.errors import RetryLater
from timbra_shared.events import CustomerChanged, InvoiceBuilt, InvoiceRejected, InvoiceRequest, InvoiceRequested, ProductChanged, ProductIn, TicketChanged
from timbra_shared.ids import new_id, utcnow

CUSTOMER = CustomerChanged(issuer_id="iss_1", id="cus_1", version=1, rfc="URE180429TM6", legal_name="UNIVERSIDAD ROBOTICA ESPAÑOLA", tax_regime="601",
                           zip="86991", default_use="G01", emails=["pagos@ure.mx"])
PRODUCT = ProductChanged(issuer_id="iss_1", id="prod_1", version=1, product=ProductIn(description="Servicio de consultoría", product_key="81111500", unit_key="E48", price=Decimal("100.00")))


class FakeProjection:
    """The builder's catalog projection, in memory (same version rule as the MongoDB adapter)."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.claims: dict[str, str] = {}
        self.claim_calls: list[tuple[str, list[str], str, Any]] = []

    async def upsert(self, kind: str, state: dict[str, Any]) -> bool:
        current = self.docs.get((kind, state["id"]))
        if current is not None and current["version"] >= state["version"]:
            return False
        self.docs[(kind, state["id"])] = dict(state)
        return True

    async def get(self, kind: str, issuer_id: str, entity_id: str) -> dict[str, Any] | None:
        doc = self.docs.get((kind, entity_id))
        return dict(doc) if doc and doc["issuer_id"] == issuer_id else None

    async def claim_tickets(self, issuer_id, ticket_ids, invoice_id, session=None):
        self.claim_calls.append((issuer_id, list(ticket_ids), invoice_id, session))
        taken = [t for t in ticket_ids if self.claims.get(t, invoice_id) != invoice_id]
        if not taken:
            self.claims.update({t: invoice_id for t in ticket_ids})
        return taken


@pytest.fixture
def projection():
    return FakeProjection()


@pytest.fixture
def svc(fakes, projection) -> InvoiceService:
    return InvoiceService(store=fakes.store, invoices=fakes.invoices, issuers=fakes.issuers, folios=fakes.folios, build_cfdi=fakes.build,
                          publish_redrive=fakes.redrives, stuck_after=60, sweep_interval=5, catalog=projection, catalog_wait=timedelta(seconds=10))


def _requested(body, *, invoice_id="inv_1", issuer_id="iss_1", age=timedelta(0)) -> InvoiceRequested:
    return InvoiceRequested(invoice_id=invoice_id, issuer_id=issuer_id, request=InvoiceRequest.model_validate(body), occurred_at=utcnow() - age)


def _body(**overrides):
    return {"customer_id": "cus_1", "items": [{"product_id": "prod_1", "quantity": "2"}], "payment_form": "03", "payment_method": "PUE", **overrides}


def _rejection(fakes) -> InvoiceRejected:
    (rejected,) = fakes.store.of_type(InvoiceRejected)
    return rejected


async def test_ids_resolve_against_the_projection(svc, fakes):
    await svc.on_catalog(CUSTOMER)
    await svc.on_catalog(PRODUCT)
    await svc.on_requested(_requested(_body()))
    (built,) = fakes.store.of_type(InvoiceBuilt)
    root = etree.fromstring(built.xml.encode())
    receptor = root.find("{http://www.sat.gob.mx/cfd/4}Receptor")
    assert (receptor.get("Rfc"), receptor.get("Nombre"), receptor.get("UsoCFDI")) == ("URE180429TM6", "UNIVERSIDAD ROBOTICA ESPAÑOLA", "G01")
    assert root.get("Total") == "232.00"
    assert (built.summary.customer_id, built.summary.recipients) == ("cus_1", ["pagos@ure.mx"])


async def test_a_newer_version_wins_and_an_older_one_is_ignored(svc, fakes):
    await svc.on_catalog(CUSTOMER.model_copy(update={"version": 3, "legal_name": "NOMBRE NUEVO"}))
    await svc.on_catalog(CUSTOMER)  # late, older
    await svc.on_catalog(PRODUCT)
    await svc.on_requested(_requested(_body()))
    (built,) = fakes.store.of_type(InvoiceBuilt)
    assert built.summary.nombre_receptor == "NOMBRE NUEVO"


async def test_a_fresh_unknown_id_is_retried_then_rejected_with_a_code(svc, fakes):
    await svc.on_catalog(PRODUCT)
    fresh = new_id("cus_")  # created just now: the catalog.customers event may still be on its way
    with pytest.raises(RetryLater):
        await svc.on_requested(_requested(_body(customer_id=fresh)))
    assert fakes.store.emitted == []
    await svc.on_requested(_requested(_body(customer_id=fresh), age=timedelta(seconds=11)))
    rejected = _rejection(fakes)
    assert [(e.code, e.path) for e in rejected.errors] == [("TIMBRA_CUSTOMER_NOT_FOUND", "customer_id")]


@pytest.mark.parametrize("customer_id", ["cus_1", "cus_01aaaaaaaaaaaaaaaaaaaaaaaa", "no es un id"])
async def test_an_old_or_malformed_unknown_id_is_rejected_without_blocking_the_partition(svc, fakes, customer_id):
    await svc.on_catalog(PRODUCT)
    await svc.on_requested(_requested(_body(customer_id=customer_id)))
    assert [e.code for e in _rejection(fakes).errors] == ["TIMBRA_CUSTOMER_NOT_FOUND"]


async def test_another_issuers_ids_are_not_found(svc, fakes):
    await svc.on_catalog(CUSTOMER.model_copy(update={"issuer_id": "iss_2"}))
    await svc.on_catalog(PRODUCT.model_copy(update={"issuer_id": "iss_2"}))
    await svc.on_requested(_requested(_body(), age=timedelta(seconds=11)))
    codes = {e.code for e in _rejection(fakes).errors}
    assert codes == {"TIMBRA_CUSTOMER_NOT_FOUND", "TIMBRA_PRODUCT_NOT_FOUND"}


async def test_a_deleted_customer_is_rejected_without_waiting(svc, fakes):
    await svc.on_catalog(CUSTOMER.model_copy(update={"version": 2, "deleted": True}))
    await svc.on_catalog(PRODUCT)
    await svc.on_requested(_requested(_body()))
    assert [e.code for e in _rejection(fakes).errors] == ["TIMBRA_CUSTOMER_NOT_FOUND"]


async def test_both_id_and_inline_values_are_ambiguous(svc, fakes, customer, product):
    await svc.on_catalog(CUSTOMER)
    await svc.on_catalog(PRODUCT)
    await svc.on_requested(_requested(_body(customer=customer, items=[{"product_id": "prod_1", "product": product}])))
    assert {e.code for e in _rejection(fakes).errors} == {"TIMBRA_CUSTOMER_AMBIGUOUS", "TIMBRA_PRODUCT_AMBIGUOUS"}


def _ticket(**overrides) -> TicketChanged:
    values = {"issuer_id": "iss_1", "id": "tkt_1", "version": 1, "branch_id": "br_1", "ticket_number": "T-1", "date": utcnow(), "total": Decimal("116.00"),
              "payment_form": "04", "items": [{"product_id": "prod_1", "quantity": "1"}], "invoiceable_until": utcnow() + timedelta(days=3)}
    return TicketChanged(**(values | overrides))


async def test_a_ticket_gives_its_lines_and_payment_form_and_is_claimed(svc, fakes, projection):
    await svc.on_catalog(CUSTOMER)
    await svc.on_catalog(PRODUCT)
    await svc.on_catalog(_ticket())
    await svc.on_requested(_requested({"customer_id": "cus_1", "ticket_id": "tkt_1", "payment_method": "PUE"}))
    (built,) = fakes.store.of_type(InvoiceBuilt)
    root = etree.fromstring(built.xml.encode())
    assert (root.get("FormaPago"), root.get("SubTotal"), built.summary.ticket_id) == ("04", "100.00", "tkt_1")
    assert projection.claims == {"tkt_1": "inv_1"}
    assert projection.claim_calls[0][3] is fakes.store.transactions[0].session


async def test_a_ticket_is_invoiced_once(svc, fakes, projection):
    await svc.on_catalog(CUSTOMER)
    await svc.on_catalog(PRODUCT)
    await svc.on_catalog(_ticket())
    await svc.on_requested(_requested({"customer_id": "cus_1", "ticket_id": "tkt_1", "payment_method": "PUE"}))
    await svc.on_requested(_requested({"customer_id": "cus_1", "ticket_id": "tkt_1", "payment_method": "PUE"}, invoice_id="inv_2"))
    assert [e.code for e in _rejection(fakes).errors] == ["TIMBRA_TICKET_ALREADY_INVOICED"]
    # once the catalog marks it invoiced, the projection alone refuses it too
    await svc.on_catalog(_ticket(version=2, status="invoiced", invoice_id="inv_1"))
    await svc.on_requested(_requested({"customer_id": "cus_1", "ticket_id": "tkt_1", "payment_method": "PUE"}, invoice_id="inv_3"))
    assert [e.code for e in fakes.store.of_type(InvoiceRejected)[-1].errors] == ["TIMBRA_TICKET_ALREADY_INVOICED"]


async def test_a_ticket_outside_its_window_is_rejected(svc, fakes):
    await svc.on_catalog(CUSTOMER)
    await svc.on_catalog(PRODUCT)
    await svc.on_catalog(_ticket(invoiceable_until=utcnow() - timedelta(minutes=1)))
    await svc.on_requested(_requested({"customer_id": "cus_1", "ticket_id": "tkt_1", "payment_method": "PUE"}))
    assert [e.code for e in _rejection(fakes).errors] == ["TIMBRA_TICKET_WINDOW_CLOSED"]


# --------------------------------------------------------------------------- tax-included prices

IVA16 = [Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota=Decimal("0.160000"))]
IVA_IEPS = [Traslado(Impuesto="003", TipoFactor="Tasa", TasaOCuota=Decimal("0.080000")), *IVA16]
CENT = Decimal("0.01")


def _gross(importe: Decimal, quantity: Decimal, traslados) -> Decimal:
    tax = sum(((importe * t.TasaOCuota).quantize(CENT, ROUND_HALF_UP) if t.TipoFactor == "Tasa" else (quantity * t.TasaOCuota).quantize(CENT, ROUND_HALF_UP)) for t in traslados)
    return importe + tax


@pytest.mark.parametrize("traslados", [IVA16, IVA_IEPS, [Traslado(Impuesto="003", TipoFactor="Cuota", TasaOCuota=Decimal("6.455500")), *IVA16]], ids=["iva", "ieps+iva", "cuota+iva"])
def test_tax_included_split_is_exact_whenever_some_importe_is(traslados):
    """Against brute force: for every price and quantity, if any two-decimal Importe gives the
    quoted amount, the split finds one; otherwise it lands as close as possible."""
    for cents in range(1, 3001, 23):
        for quantity in (Decimal(1), Decimal(3), Decimal(7), Decimal("2.5")):
            price = Decimal(cents) / 100
            quoted = (price * quantity).quantize(CENT, ROUND_HALF_UP)
            unit = split_tax_included(price, quantity, traslados)
            importe = (unit * quantity).quantize(CENT, ROUND_HALF_UP)
            got = _gross(importe, quantity, traslados)
            best = min(abs(_gross(Decimal(i) / 100, quantity, traslados) - quoted) for i in range(max(0, int(importe * 100) - 60), int(importe * 100) + 60))
            assert abs(got - quoted) == best, (price, quantity, importe, got, quoted)
