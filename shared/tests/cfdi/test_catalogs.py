"""SAT catalogs from satcfdi's wheel: enums, look-ups, search, time zones, Fecha."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from timbra_shared.cfdi import catalogs as cat
from timbra_shared.cfdi import fecha_local


@pytest.mark.parametrize(
    "enum,catalog",
    [
        (cat.FormaPago, "c_FormaPago"),
        (cat.RegimenFiscal, "c_RegimenFiscal"),
        (cat.UsoCFDI, "c_UsoCFDI"),
        (cat.ObjetoImp, "c_ObjetoImp"),
        (cat.Exportacion, "c_Exportacion"),
        (cat.Periodicidad, "c_Periodicidad"),
        (cat.Meses, "c_Meses"),
        (cat.TipoRelacion, "c_TipoRelacion"),
        (cat.MetodoPago, "c_MetodoPago"),
        (cat.Impuesto, "c_Impuesto"),
        (cat.TipoDeComprobante, "c_TipoDeComprobante"),
    ],
)
def test_enums_hold_official_codes(enum, catalog):
    codes = set(cat.all_codes(catalog))
    assert {m.value for m in enum} <= codes


def test_hand_tables_cover_the_catalog():
    assert set(cat.REGIMEN_PERSONA) == set(cat.all_codes("c_RegimenFiscal"))
    assert set(cat.USO_CFDI_REGLAS) <= set(cat.all_codes("c_UsoCFDI"))
    for _, _, regimenes in cat.USO_CFDI_REGLAS.values():
        assert regimenes <= set(cat.REGIMEN_PERSONA)


def test_lookups():
    assert cat.exists("c_ClaveProdServ", "84111506")
    assert not cat.exists("c_ClaveProdServ", "99999999")
    assert cat.describe("c_ClaveUnidad", "H87") == "Pieza"
    assert cat.describe("c_FormaPago", "03") == "Transferencia electrónica de fondos"
    assert cat.moneda_decimales("MXN") == 2 and cat.moneda_decimales("JPY") == 0 and cat.moneda_decimales("CLF") == 4
    assert cat.regimen_persona("601") == (False, True) and cat.regimen_persona("626") == (True, True)
    assert cat.uso_cfdi_permitido("D01", "612", "fisica") and not cat.uso_cfdi_permitido("D01", "601", "moral")
    assert cat.tasa_o_cuota_valida("T", "002", "Tasa", __import__("decimal").Decimal("0.16"))
    assert not cat.tasa_o_cuota_valida("T", "002", "Tasa", __import__("decimal").Decimal("0.15"))


@pytest.mark.parametrize(
    "cp,estado,tz",
    [
        ("42501", "HID", "America/Mexico_City"),
        ("22000", "BCN", "America/Tijuana"),
        ("77500", "ROO", "America/Cancun"),
        ("83000", "SON", "America/Hermosillo"),
        ("82000", "SIN", "America/Mazatlan"),
    ],
)
def test_codigo_postal_time_zone(cp, estado, tz):
    info = cat.codigo_postal(cp)
    assert info.estado == estado and info.timezone == tz
    assert cat.codigo_postal("00001") is None


def test_fecha_local():
    now = datetime(2025, 1, 15, 18, 0, 0, tzinfo=timezone.utc)
    assert fecha_local("42501", now) == "2025-01-15T12:00:00"  # UTC-6, no DST since 2022
    assert fecha_local("77500", now) == "2025-01-15T13:00:00"  # Cancún UTC-5
    assert fecha_local("22000", now) == "2025-01-15T10:00:00"  # Tijuana UTC-8 in winter
    assert fecha_local("22000", datetime(2025, 7, 1, 18, tzinfo=timezone.utc)) == "2025-07-01T11:00:00"  # PDT
    assert fecha_local("83000", datetime(2025, 7, 1, 18, tzinfo=timezone.utc)) == "2025-07-01T11:00:00"  # Sonora UTC-7
    assert len(fecha_local("42501")) == 19
    with pytest.raises(Exception):
        fecha_local("00001")


def test_search_code_and_accent_insensitive_text():
    res = cat.search("c_ClaveUnidad", "H87")
    assert res[0] == ("H87", "Pieza")
    res = cat.search("c_ClaveProdServ", "servicios de facturacion")
    assert res and all("factura" in d.lower() for _, d in res)
    assert cat.search("c_FormaPago", "transferencia") == [("03", "Transferencia electrónica de fondos")]
    assert cat.search("c_RegimenFiscal", "simplificado CONFIANZA") == [("626", "Régimen Simplificado de Confianza")]
    assert len(cat.search("c_ClaveProdServ", "a", limit=5)) == 5
    assert cat.search("c_ClaveProdServ", "zzzzqqq") == []


def test_search_is_fast_after_index_build():
    cat.search("c_ClaveProdServ", "x")  # build index once
    t0 = time.perf_counter()
    for q in ("tornillo", "servicio consultoria", "8411", "leche", "computadora portatil"):
        cat.search("c_ClaveProdServ", q)
    assert (time.perf_counter() - t0) / 5 < 0.05  # well under 50 ms per query on a loaded CI box
