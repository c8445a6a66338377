"""Product validation: SAT keys, ObjetoImp and c_TasaOCuota, fed real bad input."""

from decimal import Decimal

import pytest

from timbra_catalog.domain.products import validate_product

GOOD = {"description": "Servicio de consultoría", "product_key": "81111500", "unit_key": "E48", "unit_name": "Servicio", "sku": "CONS-1", "price": "1000.00"}


def codes(data):
    product, problems = validate_product(data)
    assert product is None
    return {(p.code, p.path) for p in problems}


def test_a_valid_product_defaults_to_iva_16():
    product, problems = validate_product(GOOD)
    assert problems == []
    assert [(t.type, t.rate) for t in product.taxes] == [("IVA", Decimal("0.16"))]


def test_every_tax_kind_is_accepted():
    taxes = [{"type": "IVA", "rate": "0.16"}, {"type": "IEPS", "rate": "0.08"}, {"type": "ISR", "rate": "0.10", "withholding": True},
             {"type": "IVA", "rate": "0.106667", "withholding": True}]
    product, problems = validate_product({**GOOD, "taxes": taxes, "tax_included": True})
    assert problems == [] and product.tax_included
    exento, problems = validate_product({**GOOD, "taxes": [{"type": "IVA", "factor": "Exento"}]})
    assert problems == [] and exento.taxes[0].factor == "Exento"
    cuota, problems = validate_product({**GOOD, "taxes": [{"type": "IEPS", "factor": "Cuota", "rate": "6.4555"}]})
    assert problems == []


def test_unknown_sat_keys():
    assert ("CFDI40162", "product_key") in codes({**GOOD, "product_key": "99999999"})
    assert ("CFDI40165", "unit_key") in codes({**GOOD, "unit_key": "XYZ9"})
    assert ("TIMBRA_FIELD_INVALID", "product_key") in codes({**GOOD, "product_key": "8111"})


@pytest.mark.parametrize(
    ("tax", "code"),
    [
        ({"type": "IVA", "rate": "0.15"}, "CFDI40180"),
        ({"type": "IEPS", "rate": "0.11"}, "CFDI40180"),
        ({"type": "ISR", "rate": "0.40", "withholding": True}, "CFDI40186"),
        ({"type": "IVA", "rate": "0.20", "withholding": True}, "CFDI40186"),
        ({"type": "IVA", "factor": "Exento", "withholding": True}, "CFDI40184"),
        ({"type": "IVA", "factor": "Exento", "rate": "0.16"}, "CFDI40177"),
        ({"type": "ISR", "rate": "0.10"}, "TIMBRA_TAX_INVALID"),
        ({"type": "IVA"}, "CFDI40178"),
    ],
)
def test_bad_taxes(tax, code):
    assert code in {c for c, _ in codes({**GOOD, "taxes": [tax]})}


def test_objeto_imp_rules():
    assert ("CFDI40171", "taxes") in codes({**GOOD, "taxes": []})
    assert ("CFDI40172", "taxes") in codes({**GOOD, "taxability": "01", "taxes": [{"type": "IVA", "rate": "0.16"}]})
    product, problems = validate_product({**GOOD, "taxability": "01"})
    assert problems == [] and product.taxes == []


def test_price_and_fields():
    assert ("TIMBRA_PRICE_INVALID", "price") in codes({**GOOD, "price": "-1"})
    assert ("TIMBRA_PRICE_INVALID", "price") in codes({**GOOD, "price": "1.1234567"})
    assert ("TIMBRA_PRICE_INVALID", "price") in codes({**GOOD, "price": "diez"})
    assert ("TIMBRA_FIELD_UNKNOWN", "precio") in codes({**GOOD, "precio": "1"})
    assert ("TIMBRA_TAX_DUPLICATED", "taxes[1]") in codes({**GOOD, "taxes": [{"type": "IVA", "rate": "0.16"}, {"type": "IVA", "rate": "0.08"}]})
