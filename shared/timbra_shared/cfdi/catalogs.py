"""SAT catalog look-ups for CFDI 4.0.

Codes and descriptions come from the catalogs shipped inside the ``satcfdi``
wheel (``satcfdi/catalogs/catalogs.db``, SQLite with pickled values, tables
``C756_c_*`` = SAT's catCFDI). Nothing here is read from the network.

Two small tables are *not* in satcfdi's database and are transcribed from SAT's
``catCFDI_V_4`` spreadsheet (see docs/cfdi.md, "Refreshing SAT catalogs"):
the persona física/moral flags of c_RegimenFiscal and the allowed
régimen/persona columns of c_UsoCFDI, plus the fixed values and ranges of
c_TasaOCuota.
"""

from __future__ import annotations

import bisect
import enum
import os
import pickle
import sqlite3
import threading
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

__all__ = [
    "CATALOGS",
    "CodigoPostal",
    "Exportacion",
    "FormaPago",
    "Impuesto",
    "Meses",
    "MetodoPago",
    "ObjetoImp",
    "Periodicidad",
    "RegimenFiscal",
    "TipoDeComprobante",
    "TipoFactor",
    "TipoRelacion",
    "UsoCFDI",
    "all_codes",
    "codigo_postal",
    "describe",
    "exists",
    "moneda_decimales",
    "regimen_persona",
    "search",
    "tasa_o_cuota_valida",
    "timezone_name",
    "uso_cfdi_permitido",
]

# ----------------------------------------------------------------------------
# Raw access to satcfdi's catalog database
# ----------------------------------------------------------------------------

CATALOGS: dict[str, str] = {
    "c_ClaveProdServ": "C756_c_ClaveProdServ",
    "c_ClaveUnidad": "C756_c_ClaveUnidad",
    "c_CodigoPostal": "C756_c_CodigoPostal",
    "c_RegimenFiscal": "C756_c_RegimenFiscal",
    "c_UsoCFDI": "C756_c_UsoCFDI",
    "c_FormaPago": "C756_c_FormaPago",
    "c_MetodoPago": "C756_c_MetodoPago",
    "c_Moneda": "C756_c_Moneda",
    "c_Pais": "C756_c_Pais",
    "c_ObjetoImp": "C756_c_ObjetoImp",
    "c_TipoRelacion": "C756_c_TipoRelacion",
    "c_Exportacion": "C756_c_Exportacion",
    "c_Periodicidad": "C756_c_Periodicidad",
    "c_Meses": "C756_c_Meses",
    "c_Impuesto": "C756_c_Impuesto",
    "c_TipoDeComprobante": "C756_c_TipoDeComprobante",
    "c_Estado": "C756_c_Estado",
}

_lock = threading.RLock()
_conn: sqlite3.Connection | None = None


def _db_path() -> str:
    import satcfdi.catalogs as satcat  # imported lazily: satcfdi import is not free

    return os.path.join(os.path.dirname(satcat.__file__), "catalogs.db")


def _connection() -> sqlite3.Connection:
    global _conn
    if _conn is None:
        with _lock:
            if _conn is None:
                path = _db_path()
                _conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    return _conn


def _table(catalog: str) -> str:
    try:
        return CATALOGS[catalog]
    except KeyError:
        raise KeyError(f"Catálogo desconocido: {catalog!r}; disponibles: {', '.join(CATALOGS)}") from None


@lru_cache(maxsize=16384)
def _select(catalog: str, code: str):
    table = _table(catalog)
    with _lock:
        row = _connection().execute(
            f"SELECT value FROM {table} WHERE key = ?", (pickle.dumps(code, protocol=4),)
        ).fetchone()
    return pickle.loads(row[0]) if row else None


@lru_cache(maxsize=None)
def _all(catalog: str) -> dict:
    table = _table(catalog)
    with _lock:
        rows = _connection().execute(f"SELECT key, value FROM {table}").fetchall()
    out = {}
    for k, v in rows:
        key = pickle.loads(k)
        if isinstance(key, str):
            out[key] = pickle.loads(v)
    return out


def _description(catalog: str, value) -> str:
    if value is None:
        return ""
    if catalog == "c_Moneda":
        return value[0]
    if catalog == "c_CodigoPostal":
        return f"{value[0]} {value[1]} {value[4]}".strip()
    if catalog == "c_Estado":
        return value[1]
    return str(value)


def exists(catalog: str, code: str | None) -> bool:
    """True when ``code`` is a key of the SAT catalog."""
    if not code or not isinstance(code, str):
        return False
    if catalog == "c_ClaveProdServ" and code == "01010101":
        return True  # "No existe en el catálogo" is itself a valid key
    return _select(catalog, code) is not None


def describe(catalog: str, code: str) -> str | None:
    """SAT description of ``code`` or None."""
    v = _select(catalog, code)
    return None if v is None else _description(catalog, v)


def all_codes(catalog: str) -> list[str]:
    return sorted(_all(catalog))


def moneda_decimales(moneda: str) -> int:
    """Decimals of a currency per c_Moneda (MXN 2, JPY 0, CLF 4, XXX 0)."""
    v = _MONEDA_CACHE.get(moneda)
    if v is None:
        row = _select("c_Moneda", moneda)
        if row is None:
            raise KeyError(f"Moneda {moneda!r} no está en c_Moneda")
        v = int(row[1])
        _MONEDA_CACHE[moneda] = v
    return v


_MONEDA_CACHE: dict[str, int] = {"MXN": 2, "USD": 2, "EUR": 2, "XXX": 0}

# ----------------------------------------------------------------------------
# c_CodigoPostal and time zones
# ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodigoPostal:
    codigo: str
    estado: str
    municipio: str
    localidad: str
    estimulo_franja_fronteriza: bool
    huso_horario: str  # SAT's description, e.g. "Tiempo del Centro"
    timezone: str  # IANA zone used to compute local time


# SAT describes time zones by name; these are the IANA zones that implement
# them today (Mexico abolished DST in 2022 except in the northern border strip,
# which follows the US calendar).
_HUSO_TZ = {
    "Tiempo del Centro": "America/Mexico_City",
    "Tiempo del Sureste": "America/Cancun",
    "Tiempo del Pacífico": "America/Mazatlan",
    "Tiempo del Noroeste": "America/Tijuana",
    "Tiempo del Centro en Frontera": "America/Matamoros",
}
_HUSO_TZ_BY_STATE = {
    ("Tiempo del Pacífico", "SON"): "America/Hermosillo",
    ("Tiempo del Centro en Frontera", "CHH"): "America/Ciudad_Juarez",
}


def timezone_name(huso: str, estado: str) -> str:
    return _HUSO_TZ_BY_STATE.get((huso, estado)) or _HUSO_TZ.get(huso, "America/Mexico_City")


@lru_cache(maxsize=8192)
def codigo_postal(cp: str) -> CodigoPostal | None:
    """c_CodigoPostal row for ``cp`` (estado, municipio, localidad, huso horario) or None."""
    if not isinstance(cp, str) or len(cp) != 5:
        return None
    v = _select("c_CodigoPostal", cp)
    if v is None:
        return None
    estado, municipio, localidad, franja, huso = v[0], v[1], v[2], v[3], v[4]
    return CodigoPostal(
        codigo=cp,
        estado=estado,
        municipio=municipio,
        localidad=localidad,
        estimulo_franja_fronteriza=str(franja) not in ("0", ""),
        huso_horario=huso,
        timezone=timezone_name(huso, estado),
    )


# ----------------------------------------------------------------------------
# Small catalogs as enums (official codes). A test checks them against the DB.
# ----------------------------------------------------------------------------


class _Code(str, enum.Enum):
    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class TipoDeComprobante(_Code):
    INGRESO = "I"
    EGRESO = "E"
    TRASLADO = "T"
    NOMINA = "N"
    PAGO = "P"


class MetodoPago(_Code):
    PUE = "PUE"
    PPD = "PPD"


class Impuesto(_Code):
    ISR = "001"
    IVA = "002"
    IEPS = "003"


class TipoFactor(_Code):
    TASA = "Tasa"
    CUOTA = "Cuota"
    EXENTO = "Exento"


class ObjetoImp(_Code):
    NO_OBJETO = "01"
    SI_OBJETO = "02"
    SI_OBJETO_NO_DESGLOSE = "03"
    SI_OBJETO_NO_CAUSA = "04"
    SI_OBJETO_PODEBI = "05"
    SI_OBJETO_IVA_NO_TRASLADO = "06"
    NO_TRASLADO_IVA_SI_DESGLOSE_IEPS = "07"
    NO_TRASLADO_IVA_NO_DESGLOSE_IEPS = "08"


class Exportacion(_Code):
    NO_APLICA = "01"
    DEFINITIVA_A1 = "02"
    TEMPORAL = "03"
    DEFINITIVA_OTRA = "04"


class Periodicidad(_Code):
    DIARIO = "01"
    SEMANAL = "02"
    QUINCENAL = "03"
    MENSUAL = "04"
    BIMESTRAL = "05"


class Meses(_Code):
    ENERO = "01"
    FEBRERO = "02"
    MARZO = "03"
    ABRIL = "04"
    MAYO = "05"
    JUNIO = "06"
    JULIO = "07"
    AGOSTO = "08"
    SEPTIEMBRE = "09"
    OCTUBRE = "10"
    NOVIEMBRE = "11"
    DICIEMBRE = "12"
    ENERO_FEBRERO = "13"
    MARZO_ABRIL = "14"
    MAYO_JUNIO = "15"
    JULIO_AGOSTO = "16"
    SEPTIEMBRE_OCTUBRE = "17"
    NOVIEMBRE_DICIEMBRE = "18"


class TipoRelacion(_Code):
    NOTA_CREDITO = "01"
    NOTA_DEBITO = "02"
    DEVOLUCION = "03"
    SUSTITUCION = "04"
    TRASLADOS_PREVIOS = "05"
    FACTURA_POR_TRASLADOS = "06"
    APLICACION_ANTICIPO = "07"
    PAGOS_PARCIALIDADES = "08"
    PAGOS_DIFERIDOS = "09"


class FormaPago(_Code):
    EFECTIVO = "01"
    CHEQUE = "02"
    TRANSFERENCIA = "03"
    TARJETA_CREDITO = "04"
    MONEDERO_ELECTRONICO = "05"
    DINERO_ELECTRONICO = "06"
    VALES_DESPENSA = "08"
    DACION_EN_PAGO = "12"
    SUBROGACION = "13"
    CONSIGNACION = "14"
    CONDONACION = "15"
    COMPENSACION = "17"
    NOVACION = "23"
    CONFUSION = "24"
    REMISION_DEUDA = "25"
    PRESCRIPCION = "26"
    SATISFACCION_ACREEDOR = "27"
    TARJETA_DEBITO = "28"
    TARJETA_SERVICIOS = "29"
    ANTICIPOS = "30"
    INTERMEDIARIO_PAGOS = "31"
    POR_DEFINIR = "99"


class RegimenFiscal(_Code):
    GENERAL_PERSONAS_MORALES = "601"
    PM_FINES_NO_LUCRATIVOS = "603"
    SUELDOS_SALARIOS = "605"
    ARRENDAMIENTO = "606"
    ENAJENACION_ADQUISICION_BIENES = "607"
    DEMAS_INGRESOS = "608"
    CONSOLIDACION = "609"
    RESIDENTES_EXTRANJERO = "610"
    DIVIDENDOS = "611"
    PF_ACTIVIDADES_EMPRESARIALES = "612"
    INTERESES = "614"
    PREMIOS = "615"
    SIN_OBLIGACIONES = "616"
    COOPERATIVAS_PRODUCCION = "620"
    INCORPORACION_FISCAL = "621"
    AGRICOLAS = "622"
    GRUPOS_SOCIEDADES = "623"
    COORDINADOS = "624"
    PLATAFORMAS_TECNOLOGICAS = "625"
    RESICO = "626"
    HIDROCARBUROS = "628"
    REGIMENES_PREFERENTES = "629"
    ACCIONES_BOLSA = "630"


class UsoCFDI(_Code):
    ADQUISICION_MERCANCIAS = "G01"
    DEVOLUCIONES = "G02"
    GASTOS_EN_GENERAL = "G03"
    CONSTRUCCIONES = "I01"
    MOBILIARIO = "I02"
    EQUIPO_TRANSPORTE = "I03"
    EQUIPO_COMPUTO = "I04"
    DADOS_TROQUELES = "I05"
    COMUNICACIONES_TELEFONICAS = "I06"
    COMUNICACIONES_SATELITALES = "I07"
    OTRA_MAQUINARIA = "I08"
    HONORARIOS_MEDICOS = "D01"
    GASTOS_MEDICOS_INCAPACIDAD = "D02"
    GASTOS_FUNERALES = "D03"
    DONATIVOS = "D04"
    INTERESES_HIPOTECARIOS = "D05"
    APORTACIONES_SAR = "D06"
    PRIMAS_GASTOS_MEDICOS = "D07"
    TRANSPORTACION_ESCOLAR = "D08"
    CUENTAS_AHORRO = "D09"
    COLEGIATURAS = "D10"
    SIN_EFECTOS_FISCALES = "S01"
    PAGOS = "CP01"
    NOMINA = "CN01"


# c_RegimenFiscal: (aplica persona física, aplica persona moral)
REGIMEN_PERSONA: dict[str, tuple[bool, bool]] = {
    "601": (False, True),
    "603": (False, True),
    "605": (True, False),
    "606": (True, False),
    "607": (True, False),
    "608": (True, False),
    "609": (False, True),
    "610": (True, True),
    "611": (True, False),
    "612": (True, False),
    "614": (True, False),
    "615": (True, False),
    "616": (True, False),
    "620": (False, True),
    "621": (True, False),
    "622": (False, True),
    "623": (False, True),
    "624": (False, True),
    "625": (True, False),
    "626": (True, True),
    "628": (False, True),
    "629": (True, False),
    "630": (True, False),
}

_G_I = frozenset("601 603 606 612 620 621 622 623 624 625 626".split())
_D = frozenset("605 606 607 608 611 612 614 615 625".split())
_S = frozenset("601 603 605 606 607 608 610 611 612 614 615 616 620 621 622 623 624 625 626".split())

# c_UsoCFDI: (física, moral, regímenes del receptor permitidos)
USO_CFDI_REGLAS: dict[str, tuple[bool, bool, frozenset[str]]] = {
    **{u: (True, True, _G_I) for u in ("G01", "G02", "G03", "I01", "I02", "I03", "I04", "I05", "I06", "I07", "I08")},
    **{u: (True, False, _D) for u in ("D01", "D02", "D03", "D04", "D05", "D06", "D07", "D08", "D09", "D10")},
    "S01": (True, True, _S),
    "CP01": (True, True, _S),
    "CN01": (True, False, frozenset({"605"})),
}


def persona_de_rfc(rfc: str) -> str | None:
    """'fisica' (13 chars), 'moral' (12 chars) or None for malformed RFCs."""
    n = len(rfc or "")
    return "fisica" if n == 13 else "moral" if n == 12 else None


def regimen_persona(regimen: str) -> tuple[bool, bool] | None:
    return REGIMEN_PERSONA.get(regimen)


def uso_cfdi_permitido(uso: str, regimen_receptor: str, persona: str | None) -> bool:
    """UsoCFDI compatible with the receptor's régimen and persona type (CFDI40161)."""
    regla = USO_CFDI_REGLAS.get(uso)
    if regla is None:
        return False
    fisica, moral, regimenes = regla
    if persona == "fisica" and not fisica:
        return False
    if persona == "moral" and not moral:
        return False
    return regimen_receptor in regimenes


# c_TasaOCuota (fixed values and ranges), per (traslado/retención, impuesto, factor)
_TASAS_FIJAS = {
    ("T", "002", "Tasa"): {"0.000000", "0.080000", "0.160000"},
    ("T", "003", "Tasa"): {
        "0.265000", "0.300000", "0.530000", "0.500000", "1.600000", "0.304000", "0.250000",
        "0.090000", "0.080000", "0.070000", "0.060000", "0.030000", "0.000000",
    },
    ("R", "003", "Tasa"): {"0.265000", "0.300000", "0.530000", "0.500000", "1.600000", "0.304000", "0.250000",
                           "0.090000", "0.080000", "0.070000", "0.060000", "0.030000"},
}
_TASAS_RANGO = {
    ("T", "003", "Cuota"): (Decimal("0"), Decimal("59.144900")),
    ("R", "003", "Cuota"): (Decimal("0"), Decimal("59.144900")),
    ("R", "001", "Tasa"): (Decimal("0"), Decimal("0.350000")),
    ("R", "002", "Tasa"): (Decimal("0"), Decimal("0.160000")),
}


def tasa_o_cuota_valida(kind: str, impuesto: str, factor: str, valor: Decimal) -> bool:
    """``kind`` is 'T' (traslado) or 'R' (retención)."""
    fijas = _TASAS_FIJAS.get((kind, impuesto, factor))
    if fijas is not None:
        return f"{valor:.6f}" in fijas
    rango = _TASAS_RANGO.get((kind, impuesto, factor))
    if rango is not None:
        return rango[0] <= valor <= rango[1]
    return False


# ----------------------------------------------------------------------------
# search(): accent-insensitive, precomputed inverted index per catalog
# ----------------------------------------------------------------------------


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch if ch.isalnum() else " " for ch in text if not unicodedata.combining(ch))


class _Index:
    __slots__ = ("codes", "descs", "sorted_codes", "words", "postings")

    def __init__(self, catalog: str):
        data = _all(catalog)
        self.codes = sorted(data)
        self.descs = [_description(catalog, data[c]) for c in self.codes]
        self.sorted_codes = [c.casefold() for c in self.codes]  # already sorted
        post: dict[str, list[int]] = {}
        for i, d in enumerate(self.descs):
            for w in set(_norm(d).split()):
                post.setdefault(w, []).append(i)
        self.words = sorted(post)
        self.postings = post

    def _prefix_hits(self, token: str) -> set[int]:
        out: set[int] = set()
        lo = bisect.bisect_left(self.words, token)
        words = self.words
        while lo < len(words) and words[lo].startswith(token):
            out.update(self.postings[words[lo]])
            lo += 1
        return out

    def search(self, q: str, limit: int) -> list[tuple[str, str]]:
        q = (q or "").strip()
        if not q:
            return [(self.codes[i], self.descs[i]) for i in range(min(limit, len(self.codes)))]
        results: list[int] = []
        seen: set[int] = set()
        # 1) code prefix matches first
        cq = q.casefold()
        lo = bisect.bisect_left(self.sorted_codes, cq)
        while lo < len(self.sorted_codes) and self.sorted_codes[lo].startswith(cq) and len(results) < limit:
            results.append(lo)
            seen.add(lo)
            lo += 1
        if len(results) >= limit:
            return [(self.codes[i], self.descs[i]) for i in results]
        # 2) every query word is a prefix of some word of the description
        tokens = _norm(q).split()
        if tokens:
            hits: set[int] | None = None
            for t in sorted(tokens, key=len, reverse=True):
                h = self._prefix_hits(t)
                hits = h if hits is None else hits & h
                if not hits:
                    break
            if hits:
                # shorter descriptions first (more specific), then by code
                ranked = sorted(hits - seen, key=lambda i: (len(self.descs[i]), self.codes[i]))
                results.extend(ranked[: limit - len(results)])
        return [(self.codes[i], self.descs[i]) for i in results]


_indexes: dict[str, _Index] = {}


def search(catalog: str, q: str, limit: int = 20) -> list[tuple[str, str]]:
    """Search a catalog by code prefix or accent-insensitive words of the description.

    ``search("c_ClaveUnidad", "pieza")`` → ``[("H87", "Pieza"), ...]``. The
    normalised index is built once per catalog on first use.
    """
    idx = _indexes.get(catalog)
    if idx is None:
        idx = _Index(catalog)
        _indexes[catalog] = idx
    return idx.search(q, max(0, int(limit)))
