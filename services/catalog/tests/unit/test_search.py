"""The catalog service's autocomplete gives the CFDI core's answers, only faster."""

import pytest

from timbra_catalog.domain.search import CatalogSearch
from timbra_shared.cfdi import catalogs

QUERIES = {
    "c_ClaveProdServ": ["p", "se", "servicio", "servicio de", "camion", "camión grúa", "8111", "01010101", "zz", "a b", "computadora port", "xqzw"],
    "c_ClaveUnidad": ["p", "pieza", "H87", "h8", "kilo", "e4", "metro cub"],
    "c_CodigoPostal": ["0", "06", "86991", "tiempo", "tiempo del sureste", "centro", "frontera"],
    "c_RegimenFiscal": ["6", "601", "general", "sueldos y", "simplificado de confianza"],
    "c_UsoCFDI": ["g", "G03", "gastos", "médicos", "medicos"],
    "c_FormaPago": ["0", "efectivo", "credito", "crédito", "tarjeta de"],
    "c_Moneda": ["m", "MXN", "peso", "dolar", "dólar americano"],
}


@pytest.fixture(scope="module")
def engine() -> CatalogSearch:
    return CatalogSearch()


@pytest.mark.parametrize("catalog", sorted(QUERIES))
def test_same_answers_as_the_cfdi_core(engine, catalog):
    for q in QUERIES[catalog]:
        for limit in (1, 10, 50):
            assert engine.search(catalog, q, limit) == catalogs.search(catalog, q, limit), (catalog, q, limit)


def test_answers_are_cached(engine):
    first = engine.search("c_ClaveUnidad", "Pieza", 10)
    assert engine.search("c_ClaveUnidad", "pieza ", 10) is first
