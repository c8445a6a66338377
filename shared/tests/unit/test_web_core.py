"""The web pages' pure parts: where an API or SAT error lands in a form, the sealed session cookie,
the panel's draft <-> request mapping, and the totals read from a draft CFDI."""

from decimal import Decimal

import pytest
from starlette.datastructures import FormData

from timbra_shared.cfdi import Comprobante, Concepto, Emisor, Receptor, Traslado, build, to_xml
from timbra_shared.events import InvoiceRequest
from timbra_shared.web.core import ApiFailure, Sealer, errors_by_field, field_key
from timbra_shared.web.panel.invoices import draft_from_form, request_body, totals_of


@pytest.mark.parametrize(("path", "key"), [
    ("items[0].product.price", "items.0.price"),
    ("items[2].quantity", "items.2.quantity"),
    ("items[1].product.taxes[0].rate", "items.1.taxes"),
    ("items[1].product_id", "items.1.description"),
    ("customer.rfc", "customer"),
    ("customer_id", "customer"),
    ("payment_form", "payment_form"),
    ("cfdi:Comprobante/@FormaPago", "payment_form"),
    ("cfdi:Comprobante/@MetodoPago", "payment_method"),
    ("cfdi:Comprobante/cfdi:Receptor/@UsoCFDI", "use"),
    ("cfdi:Comprobante/cfdi:Receptor/@Rfc", "customer"),
    ("cfdi:Comprobante/cfdi:Conceptos/cfdi:Concepto[3]/@ClaveProdServ", "items.2.product_key"),
    ("cfdi:Comprobante/cfdi:Conceptos/cfdi:Concepto[1]/cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado[1]/@TasaOCuota", "items.0.taxes"),
    ("cfdi:Comprobante/cfdi:CfdiRelacionados/cfdi:CfdiRelacionado[1]/@UUID", "related"),
    (None, "general"),
    ("", "general"),
])
def test_field_key(path: str | None, key: str) -> None:
    assert field_key(path) == key


def test_errors_by_field_keeps_codes_and_headline() -> None:
    failure = ApiFailure(422, "CFDI40105", "SAT rechazó la factura.", [
        {"message": "Con MetodoPago PPD la FormaPago debe ser 99 (Por definir)", "code": "CFDI40105", "source": "sat", "path": "cfdi:Comprobante/@FormaPago"},
        {"message": "Falta el precio", "code": "TIMBRA_VALIDATION", "path": "items[1].product.price"},
    ])
    out = errors_by_field(failure)
    assert out["payment_form"] == ["Con MetodoPago PPD la FormaPago debe ser 99 (Por definir) (CFDI40105)"]
    assert out["items.1.price"] == ["Falta el precio (TIMBRA_VALIDATION)"]
    assert out["general"] == ["SAT rechazó la factura. (CFDI40105)"]


def test_sealed_cookie_round_trip_and_tampering() -> None:
    sealer = Sealer("secreto-interno")
    value = sealer.seal({"token": "tk_sess_abc", "user_id": "usr_1"}, "timbra_panel")
    assert "tk_sess_abc" not in value
    assert sealer.open(value, "timbra_panel") == {"token": "tk_sess_abc", "user_id": "usr_1"}
    assert sealer.open(value, "timbra_console") is None, "a cookie of one area does not open in another"
    assert sealer.open(value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"), "timbra_panel") is None
    assert Sealer("otro-secreto").open(value, "timbra_panel") is None
    assert sealer.mac("session", "panel", "a") != sealer.mac("session", "panel", "b")


def test_draft_from_form_to_a_valid_invoice_request() -> None:
    form = FormData([
        ("type", "I"), ("customer_id", "cus_1"), ("use", "G03"), ("payment_method", "PPD"), ("payment_form", "99"),
        ("currency", "mxn"), ("conditions", "Crédito a 30 días"), ("notes", ""), ("related_relationship", "04"),
        ("related_uuids", "a1b2c3d4-0000-4000-8000-000000000001\n"), ("idempotency_key", "panel-x"),
        *[(f"item_{k}", v) for k, v in [("product_id", "prd_1"), ("sku", "A"), ("description", "Consultoría"), ("product_key", "81111500"),
                                        ("unit_key", "E48"), ("unit_name", "Servicio"), ("price", "1500.00"), ("quantity", "2"), ("discount", "100"),
                                        ("taxability", "02"), ("tax", "iva16"), ("taxes_json", ""), ("tax_included", "")]],
        *[(f"item_{k}", v) for k, v in [("product_id", ""), ("sku", ""), ("description", "Viáticos"), ("product_key", "90111500"),
                                        ("unit_key", "E48"), ("unit_name", ""), ("price", "500"), ("quantity", "1"), ("discount", "0"),
                                        ("taxability", "02"), ("tax", "catalog"), ("taxes_json", '[{"type": "IVA", "rate": "0.16"}, {"type": "ISR", "rate": "0.10", "withholding": true}]'), ("tax_included", "")]],
    ])
    draft = draft_from_form(form)
    assert draft["currency"] == "MXN" and len(draft["items"]) == 2
    body = request_body(draft, None, inline_customer=False)
    request = InvoiceRequest.model_validate(body)
    assert request.customer_id == "cus_1" and request.customer is None
    assert request.related[0].relationship == "04" and request.related[0].uuids == ["A1B2C3D4-0000-4000-8000-000000000001"]
    assert request.items[0].discount == Decimal("100") and request.items[0].product.sku == "A"
    assert [t.type for t in request.items[1].product.taxes] == ["IVA", "ISR"] and request.items[1].product.taxes[1].withholding
    inline = InvoiceRequest.model_validate(request_body(draft, {"rfc": "MCI7306249Y1", "legal_name": "MUNICIPIO", "tax_regime": "603", "zip": "54700"}, inline_customer=True))
    assert inline.customer and inline.customer.rfc == "MCI7306249Y1" and inline.customer_id is None


def test_totals_per_line_from_the_draft_cfdi() -> None:
    comprobante = Comprobante(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(Rfc="MCI7306249Y1", Nombre="MUNICIPIO", DomicilioFiscalReceptor="54700", RegimenFiscalReceptor="603", UsoCFDI="G03"),
        LugarExpedicion="42501", TipoDeComprobante="I", Moneda="MXN", Exportacion="01", Fecha="2026-01-15T12:00:00", FormaPago="03", MetodoPago="PUE",
        Conceptos=[
            Concepto(ClaveProdServ="81111500", Cantidad=Decimal(2), ClaveUnidad="E48", Descripcion="Consultoría", ValorUnitario=Decimal("1500.00"), Descuento=Decimal("100.00"),
                     ObjetoImp="02", Traslados=[Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota=Decimal("0.160000"))]),
            Concepto(ClaveProdServ="90111500", Cantidad=Decimal(1), ClaveUnidad="E48", Descripcion="Viáticos", ValorUnitario=Decimal("500.00"),
                     ObjetoImp="02", Traslados=[Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota=Decimal("0.160000"))]),
        ],
    )
    totals = totals_of(to_xml(build(comprobante)))
    assert (totals["subtotal"], totals["discount"], totals["transferred"], totals["total"]) == ("3500.00", "100.00", "544.00", "3944.00")
    assert [(line["n"], line["taxes"][0]["name"], line["taxes"][0]["rate"], line["taxes"][0]["amount"]) for line in totals["lines"]] == [(1, "IVA", "16.00 %", "464.00"), (2, "IVA", "16.00 %", "80.00")]


def test_after_login_only_a_path_inside_the_area_is_followed():
    from timbra_shared.web.core import safe_next

    assert safe_next("/panel/facturas?uuid=1", "/panel") == "/panel/facturas?uuid=1"
    for hostile in ("https://evil.example/panel/", "//evil.example", "/panel//evil.example", "/panel/\\evil.example", "/console/", ""):
        assert safe_next(hostile, "/panel") == "/panel/"


async def test_every_area_shows_refusals_and_expired_sessions_the_same_way() -> None:
    """``install_error_pages`` and ``install_login_redirect``: what the panel, the portal and the
    console do with an API refusal, an expired form and a missing or expired session."""
    import httpx
    from fastapi import FastAPI

    from timbra_shared.web.core import CsrfRefused, SessionExpired, Web, install_error_pages, install_login_redirect

    class NoSession(Exception):
        pass

    web = Web(area="panel", prefix="/panel", cookie="timbra_panel", sealer=Sealer("unit-test-secret"), http=httpx.AsyncClient())
    app = FastAPI()
    app.state.web = web
    install_login_redirect(app, web, NoSession)
    install_error_pages(app, web, "panel")
    raised = {"csrf": CsrfRefused(), "gone": ApiFailure(404, "not_found", "La factura no existe."), "forbidden": ApiFailure(403, "forbidden", "No es tuya."),
              "invalid": ApiFailure(422, "CFDI40105", "SAT rechazó la factura."), "down": ApiFailure(503, "unavailable", "Intenta más tarde."),
              "nobody": NoSession(), "expired": SessionExpired()}

    @app.get("/panel/{what}")
    async def fail(what: str) -> None:
        raise raised[what]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://panel.test") as client:
        for what, status, words in (("csrf", 403, "Formulario vencido"), ("gone", 404, "La factura no existe."), ("forbidden", 403, "Sin permiso"),
                                    ("invalid", 422, "CFDI40105"), ("down", 502, "Intenta más tarde.")):
            response = await client.get(f"/panel/{what}")
            assert response.status_code == status and words in response.text, (what, response.status_code)
        for what in ("nobody", "expired"):
            response = await client.get(f"/panel/{what}")
            assert response.status_code == 303 and response.headers["location"] == f"/panel/entrar?siguiente=/panel/{what}"
