"""SAT's cancellation rules (CFF art. 29-A, RMF 2022 rule 2.7.1.35, Anexo 20 "Cancelación").

Pure functions shared by the cancellation service (which predicts and pre-checks) and the
sandbox PAC (which plays SAT). Dates are naive local times (the CFDI's ``Fecha`` is local time at
LugarExpedicion); callers convert "now" with :func:`timbra_shared.cfdi.fecha.now_local`.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

MOTIVOS: dict[str, str] = {
    "01": "Comprobante emitido con errores con relación",
    "02": "Comprobante emitido con errores sin relación",
    "03": "No se llevó a cabo la operación",
    "04": "Operación nominativa relacionada en una factura global",
}
SUSTITUCION = "04"  # c_TipoRelacion of the substitute: never blocks the cancellation of the original
MONTO_SIN_ACEPTACION = Decimal("1000")
TIPOS_SIN_ACEPTACION = frozenset({"E", "T", "N"})
RFC_PUBLICO_EN_GENERAL = "XAXX010101000"
RFC_EXTRANJERO = "XEXX010101000"
DIAS_RESPUESTA_RECEPTOR = 3

# What SAT's ConsultaCFDIService answers (Estado, EsCancelable, EstatusCancelacion).
VIGENTE, CANCELADO, NO_ENCONTRADO = "Vigente", "Cancelado", "No Encontrado"
NO_CANCELABLE = "No cancelable"
CANCELABLE_SIN_ACEPTACION = "Cancelable sin aceptación"
CANCELABLE_CON_ACEPTACION = "Cancelable con aceptación"
EN_PROCESO = "En proceso"
PLAZO_VENCIDO = "Plazo vencido"
CANCELADO_CON_ACEPTACION = "Cancelado con aceptación"
CANCELADO_SIN_ACEPTACION = "Cancelado sin aceptación"
SOLICITUD_RECHAZADA = "Solicitud rechazada"
ESTATUS_CANCELACION = frozenset({EN_PROCESO, PLAZO_VENCIDO, CANCELADO_CON_ACEPTACION, CANCELADO_SIN_ACEPTACION, SOLICITUD_RECHAZADA})

# Why SAT cancels without the receptor's acceptance (the reasons Timbra reports).
POR_MONTO, POR_TIPO, POR_PUBLICO_EN_GENERAL, POR_EXTRANJERO, POR_PLAZO = "monto", "tipo", "publico_en_general", "extranjero", "dia_habil_siguiente"
RAZONES = {
    POR_MONTO: "el total es de hasta $1,000.00 MXN",
    POR_TIPO: "es de egreso, traslado o nómina",
    POR_PUBLICO_EN_GENERAL: "es a público en general",
    POR_EXTRANJERO: "el receptor es residente en el extranjero",
    POR_PLAZO: "se cancela a más tardar el día hábil siguiente a su expedición",
}


# --------------------------------------------------------------------------- business days

def _nth_monday(year: int, month: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(7 - first.weekday()) % 7 + 7 * (n - 1))


def dias_inhabiles(year: int) -> frozenset[date]:
    """Mandatory rest days of Ley Federal del Trabajo art. 74 (SAT does not count them)."""
    days = {
        date(year, 1, 1),
        _nth_monday(year, 2, 1),    # 5 de febrero
        _nth_monday(year, 3, 3),    # 21 de marzo
        date(year, 5, 1),
        date(year, 9, 16),
        _nth_monday(year, 11, 3),   # 20 de noviembre
        date(year, 12, 25),
    }
    if (year - 2024) % 6 == 0:
        days.add(date(year, 10, 1))  # transmisión del Poder Ejecutivo Federal
    return frozenset(days)


def es_dia_habil(day: date) -> bool:
    return day.weekday() < 5 and day not in dias_inhabiles(day.year)


def sumar_dias_habiles(day: date, n: int) -> date:
    """The n-th business day after ``day`` (``day`` itself never counts)."""
    current = day
    while n > 0:
        current += timedelta(days=1)
        if es_dia_habil(current):
            n -= 1
    return current


def fin_dia_habil_siguiente(fecha: datetime) -> datetime:
    """The end of the business day after issue: until then SAT cancels without acceptance."""
    return datetime.combine(sumar_dias_habiles(fecha.date(), 1), time(23, 59, 59))


def plazo_respuesta(solicitada: datetime) -> datetime:
    """The end of the receptor's 3 business days; silence afterwards is acceptance ("Plazo vencido")."""
    return datetime.combine(sumar_dias_habiles(solicitada.date(), DIAS_RESPUESTA_RECEPTOR), time(23, 59, 59))


def fecha_limite_cancelacion(fecha: datetime, rfc_emisor: str) -> datetime:
    """CFF 29-A: a CFDI may be cancelled until the month in which the annual ISR return for the
    year of issue is due: March of the next year for a persona moral (12-character RFC), April
    for a persona física (13 characters)."""
    month = 3 if len(rfc_emisor.strip()) == 12 else 4
    last_day = date(fecha.year + 1, month + 1, 1) - timedelta(days=1)
    return datetime.combine(last_day, time(23, 59, 59))


# --------------------------------------------------------------------------- acceptance

@dataclass(frozen=True)
class Comprobante:
    """What the rules need to know about a CFDI."""

    tipo: str
    total: Decimal
    rfc_emisor: str
    rfc_receptor: str
    fecha: datetime  # local, naive
    moneda: str = "MXN"
    tipo_cambio: Decimal | None = None

    @property
    def total_mxn(self) -> Decimal:
        if self.moneda in ("MXN", "XXX") or self.tipo_cambio is None:
            return self.total
        return self.total * self.tipo_cambio


def razon_sin_aceptacion(cfdi: Comprobante, ahora: datetime, *, dentro_de_plazo: bool | None = None) -> str | None:
    """Why SAT cancels ``cfdi`` without the receptor's acceptance at local time ``ahora``, or
    None when the receptor must accept (or stay silent for 3 business days). ``dentro_de_plazo``
    replaces the calendar check of the day after issue (a simulator's compressed clock)."""
    if cfdi.tipo in TIPOS_SIN_ACEPTACION:
        return POR_TIPO
    if cfdi.total_mxn <= MONTO_SIN_ACEPTACION:
        return POR_MONTO
    if cfdi.rfc_receptor == RFC_PUBLICO_EN_GENERAL:
        return POR_PUBLICO_EN_GENERAL
    if cfdi.rfc_receptor == RFC_EXTRANJERO:
        return POR_EXTRANJERO
    if dentro_de_plazo if dentro_de_plazo is not None else ahora <= fin_dia_habil_siguiente(cfdi.fecha):
        return POR_PLAZO
    return None


def es_final(estado: str, estatus_cancelacion: str) -> bool:
    """Whether a status answer ends the cancellation (cancelled, or the request rejected)."""
    return estado == CANCELADO or estatus_cancelacion == SOLICITUD_RECHAZADA
