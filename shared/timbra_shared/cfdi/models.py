"""CFDI 4.0 data model (dataclasses, attribute names exactly as in SAT's Anexo 20).

Amounts are :class:`decimal.Decimal` (``int`` and ``str`` are accepted on input
and converted by :func:`build`; ``float`` is rejected). Fields marked
"computed" are filled by :func:`timbra_shared.cfdi.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

Amount = Decimal | int | str

__all__ = [
    "ACuentaTerceros",
    "CfdiRelacionados",
    "Comprobante",
    "Concepto",
    "DoctoRelacionado",
    "Emisor",
    "Impuestos",
    "ImpuestosP",
    "InformacionGlobal",
    "Pago",
    "Pagos",
    "PagosTotales",
    "Receptor",
    "Retencion",
    "RetencionDR",
    "RetencionP",
    "RetencionTotal",
    "Traslado",
    "TrasladoDR",
    "TrasladoP",
    "TrasladoTotal",
]


@dataclass(slots=True, kw_only=True)
class Emisor:
    Rfc: str
    Nombre: str
    RegimenFiscal: str
    FacAtrAdquirente: str | None = None


@dataclass(slots=True, kw_only=True)
class Receptor:
    Rfc: str
    Nombre: str
    DomicilioFiscalReceptor: str
    RegimenFiscalReceptor: str
    UsoCFDI: str
    ResidenciaFiscal: str | None = None
    NumRegIdTrib: str | None = None


@dataclass(slots=True, kw_only=True)
class InformacionGlobal:
    Periodicidad: str
    Meses: str
    Año: str | int


@dataclass(slots=True, kw_only=True)
class CfdiRelacionados:
    TipoRelacion: str
    UUIDs: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ACuentaTerceros:
    RfcACuentaTerceros: str
    NombreACuentaTerceros: str
    RegimenFiscalACuentaTerceros: str
    DomicilioFiscalACuentaTerceros: str


@dataclass(slots=True, kw_only=True)
class Traslado:
    """Concept-level traslado. ``Base`` defaults to Importe − Descuento of the
    concept (for TipoFactor Cuota: to Cantidad); ``Importe`` defaults to
    round(Base × TasaOCuota). Exento carries neither TasaOCuota nor Importe."""

    Impuesto: str = "002"
    TipoFactor: str = "Tasa"
    TasaOCuota: Amount | None = None
    Base: Amount | None = None
    Importe: Amount | None = None


@dataclass(slots=True, kw_only=True)
class Retencion:
    Impuesto: str
    TasaOCuota: Amount
    TipoFactor: str = "Tasa"
    Base: Amount | None = None
    Importe: Amount | None = None


@dataclass(slots=True, kw_only=True)
class Concepto:
    ClaveProdServ: str
    Cantidad: Amount
    ClaveUnidad: str
    Descripcion: str
    ValorUnitario: Amount
    ObjetoImp: str = "02"
    NoIdentificacion: str | None = None
    Unidad: str | None = None
    Descuento: Amount | None = None
    Traslados: list[Traslado] = field(default_factory=list)
    Retenciones: list[Retencion] = field(default_factory=list)
    ACuentaTerceros: ACuentaTerceros | None = None
    InformacionAduanera: list[str] = field(default_factory=list)  # NumeroPedimento values
    CuentaPredial: list[str] = field(default_factory=list)  # Numero values
    Importe: Decimal | None = None  # computed


@dataclass(slots=True, kw_only=True)
class RetencionTotal:
    Impuesto: str
    Importe: Decimal


@dataclass(slots=True, kw_only=True)
class TrasladoTotal:
    Base: Decimal
    Impuesto: str
    TipoFactor: str
    TasaOCuota: Decimal | None = None
    Importe: Decimal | None = None


@dataclass(slots=True, kw_only=True)
class Impuestos:
    """Comprobante-level tax summary (computed)."""

    Retenciones: list[RetencionTotal] = field(default_factory=list)
    Traslados: list[TrasladoTotal] = field(default_factory=list)
    TotalImpuestosRetenidos: Decimal | None = None
    TotalImpuestosTrasladados: Decimal | None = None


# ----------------------------------------------------------------------------
# Pagos 2.0
# ----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class TrasladoDR:
    BaseDR: Amount
    ImpuestoDR: str = "002"
    TipoFactorDR: str = "Tasa"
    TasaOCuotaDR: Amount | None = None
    ImporteDR: Amount | None = None  # default round(BaseDR × TasaOCuotaDR, decimals of MonedaDR)


@dataclass(slots=True, kw_only=True)
class RetencionDR:
    BaseDR: Amount
    ImpuestoDR: str
    TasaOCuotaDR: Amount
    TipoFactorDR: str = "Tasa"
    ImporteDR: Amount | None = None


@dataclass(slots=True, kw_only=True)
class DoctoRelacionado:
    IdDocumento: str
    MonedaDR: str
    NumParcialidad: int | str
    ImpSaldoAnt: Amount
    ImpPagado: Amount
    ObjetoImpDR: str | None = None  # default "02" with taxes, else "01"
    Serie: str | None = None
    Folio: str | None = None
    EquivalenciaDR: Amount | None = None  # default "1" when MonedaDR == MonedaP
    TrasladosDR: list[TrasladoDR] = field(default_factory=list)
    RetencionesDR: list[RetencionDR] = field(default_factory=list)
    ImpSaldoInsoluto: Decimal | None = None  # computed


@dataclass(slots=True, kw_only=True)
class RetencionP:
    ImpuestoP: str
    ImporteP: Decimal


@dataclass(slots=True, kw_only=True)
class TrasladoP:
    BaseP: Decimal
    ImpuestoP: str
    TipoFactorP: str
    TasaOCuotaP: Decimal | None = None
    ImporteP: Decimal | None = None


@dataclass(slots=True, kw_only=True)
class ImpuestosP:
    RetencionesP: list[RetencionP] = field(default_factory=list)
    TrasladosP: list[TrasladoP] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Pago:
    FechaPago: str | datetime
    FormaDePagoP: str
    MonedaP: str
    DoctoRelacionado: list[DoctoRelacionado]
    Monto: Amount | None = None  # default Σ ImpPagado / EquivalenciaDR
    TipoCambioP: Amount | None = None  # "1" for MXN
    NumOperacion: str | None = None
    RfcEmisorCtaOrd: str | None = None
    NomBancoOrdExt: str | None = None
    CtaOrdenante: str | None = None
    RfcEmisorCtaBen: str | None = None
    CtaBeneficiario: str | None = None
    TipoCadPago: str | None = None
    CertPago: str | None = None
    CadPago: str | None = None
    SelloPago: str | None = None
    ImpuestosP: ImpuestosP | None = None  # computed


@dataclass(slots=True, kw_only=True)
class PagosTotales:
    MontoTotalPagos: Decimal
    TotalRetencionesIVA: Decimal | None = None
    TotalRetencionesISR: Decimal | None = None
    TotalRetencionesIEPS: Decimal | None = None
    TotalTrasladosBaseIVA16: Decimal | None = None
    TotalTrasladosImpuestoIVA16: Decimal | None = None
    TotalTrasladosBaseIVA8: Decimal | None = None
    TotalTrasladosImpuestoIVA8: Decimal | None = None
    TotalTrasladosBaseIVA0: Decimal | None = None
    TotalTrasladosImpuestoIVA0: Decimal | None = None
    TotalTrasladosBaseIVAExento: Decimal | None = None


@dataclass(slots=True, kw_only=True)
class Pagos:
    Pago: list[Pago]
    Totales: PagosTotales | None = None  # computed


# ----------------------------------------------------------------------------
# Comprobante
# ----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Comprobante:
    Emisor: Emisor
    Receptor: Receptor
    LugarExpedicion: str
    Conceptos: list[Concepto] = field(default_factory=list)
    TipoDeComprobante: str = "I"
    Moneda: str = "MXN"
    Exportacion: str = "01"
    Fecha: str | datetime | None = None  # default: now, local time at LugarExpedicion
    Serie: str | None = None
    Folio: str | None = None
    FormaPago: str | None = None
    MetodoPago: str | None = None
    CondicionesDePago: str | None = None
    TipoCambio: Amount | None = None
    Confirmacion: str | None = None
    InformacionGlobal: InformacionGlobal | None = None
    CfdiRelacionados: list[CfdiRelacionados] = field(default_factory=list)
    Pagos: Pagos | None = None
    # computed by build()
    SubTotal: Decimal | None = None
    Descuento: Decimal | None = None
    Total: Decimal | None = None
    Impuestos: Impuestos | None = None
    # set when sealing
    NoCertificado: str = ""
    Certificado: str = ""
    Sello: str = ""
