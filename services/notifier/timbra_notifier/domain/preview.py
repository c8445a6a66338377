"""A draft CFDI for the preview PDF ("Visualizar factura", seed 000 step 12), built with the CFDI
core from an ``InvoiceRequest`` and the issuer's projected fiscal data. It is never sealed or
stamped: the PDF carries "SIN VALIDEZ FISCAL", no UUID, no seals and no QR.

The mapping mirrors the cfdi-builder's (the notifier may not import it); a request the builder
would reject for a SAT rule may still preview, since only the CFDI core's own checks run here.
"""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from timbra_shared.cfdi import (
    CfdiRelacionados,
    Comprobante,
    Concepto,
    Emisor,
    InformacionGlobal,
    Receptor,
    Retencion,
    Traslado,
    build,
    fecha_local,
    to_xml,
)
from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.events import InvoiceRequest, ItemIn, TaxIn

IMPUESTO = {"ISR": "001", "IVA": "002", "IEPS": "003"}
PUBLICO_EN_GENERAL = "XAXX010101000"
SIX = Decimal("0.000001")


class PreviewInvalid(ValueError):
    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


def _taxes(taxes: list[TaxIn]) -> tuple[list[Traslado], list[Retencion]]:
    traslados, retenciones = [], []
    for tax in taxes:
        rate = None if tax.rate is None else Decimal(tax.rate).quantize(SIX)
        if tax.withholding:
            retenciones.append(Retencion(Impuesto=IMPUESTO[tax.type], TipoFactor=tax.factor, TasaOCuota=rate))
        elif tax.factor == "Exento":
            traslados.append(Traslado(Impuesto=IMPUESTO[tax.type], TipoFactor="Exento"))
        else:
            traslados.append(Traslado(Impuesto=IMPUESTO[tax.type], TipoFactor=tax.factor, TasaOCuota=rate))
    return traslados, retenciones


def _concepto(item: ItemIn, index: int) -> Concepto:
    product = item.product
    if product is None:
        raise PreviewInvalid("TIMBRA_PREVIEW_PRODUCT_REQUIRED", "La vista previa necesita cada producto en línea (items[].product).", f"items[{index}].product")
    traslados, retenciones = _taxes(product.taxes) if product.taxability == "02" else ([], [])
    price = Decimal(product.price)
    if product.tax_included and traslados:
        rate = sum((Decimal(t.TasaOCuota or 0) for t in traslados if t.TipoFactor == "Tasa"), Decimal(0))
        price = (price / (1 + rate)).quantize(SIX, rounding=ROUND_HALF_UP)
    return Concepto(
        ClaveProdServ=product.product_key,
        NoIdentificacion=product.sku,
        Cantidad=Decimal(item.quantity),
        ClaveUnidad=product.unit_key,
        Unidad=product.unit_name,
        Descripcion=product.description,
        ValorUnitario=price,
        Descuento=Decimal(item.discount) if item.discount else None,
        ObjetoImp=product.taxability,
        Traslados=traslados,
        Retenciones=retenciones,
    )


def _receptor(request: InvoiceRequest, issuer: dict[str, Any]) -> Receptor:
    customer = request.customer
    if customer is None:
        if request.global_info is None:
            raise PreviewInvalid("TIMBRA_PREVIEW_CUSTOMER_REQUIRED", "La vista previa necesita el receptor en línea (customer) o la información global.", "customer")
        return Receptor(Rfc=PUBLICO_EN_GENERAL, Nombre="PUBLICO EN GENERAL", DomicilioFiscalReceptor=issuer["zip"], RegimenFiscalReceptor="616", UsoCFDI="S01")
    rfc = customer.rfc.replace(" ", "").replace("-", "").upper()
    return Receptor(
        Rfc=rfc,
        Nombre=customer.legal_name,
        DomicilioFiscalReceptor=issuer["zip"] if rfc == PUBLICO_EN_GENERAL else customer.zip,
        RegimenFiscalReceptor=customer.tax_regime,
        UsoCFDI=request.use or customer.use or ("S01" if rfc == PUBLICO_EN_GENERAL else "G03"),
        ResidenciaFiscal=customer.tax_residence,
        NumRegIdTrib=customer.tax_id,
    )


def preview_xml(request: InvoiceRequest, issuer: dict[str, Any], now: datetime) -> bytes:
    """The unsealed CFDI 4.0 of ``request`` for ``issuer`` (rfc, legal_name, tax_regime, zip)."""
    if request.type == "P":
        raise PreviewInvalid("TIMBRA_PREVIEW_PAGOS_PENDING", "La vista previa de recibos de pago (tipo P) aún no está disponible.", "type")
    if request.customer_id:
        raise PreviewInvalid("TIMBRA_PREVIEW_CUSTOMER_REQUIRED", "La vista previa necesita el receptor en línea (customer), no customer_id.", "customer_id")
    if not request.items:
        raise PreviewInvalid("TIMBRA_ITEMS_REQUIRED", "La factura necesita al menos un concepto.", "items")
    comprobante = Comprobante(
        Emisor=Emisor(Rfc=issuer["rfc"], Nombre=issuer["legal_name"], RegimenFiscal=issuer["tax_regime"]),
        Receptor=_receptor(request, issuer),
        LugarExpedicion=issuer["zip"],
        Conceptos=[_concepto(item, i) for i, item in enumerate(request.items)],
        TipoDeComprobante=request.type,
        Moneda=request.currency,
        TipoCambio=request.exchange,
        Exportacion=request.export,
        Fecha=fecha_local(issuer["zip"], now),
        Serie=request.series,
        FormaPago=request.payment_form if request.type in ("I", "E") else None,
        MetodoPago=request.payment_method if request.type in ("I", "E") else None,
        CondicionesDePago=request.conditions,
        InformacionGlobal=InformacionGlobal(Periodicidad=request.global_info.periodicity, Meses=request.global_info.months, Año=request.global_info.year) if request.global_info else None,
        CfdiRelacionados=[CfdiRelacionados(TipoRelacion=r.relationship, UUIDs=list(r.uuids)) for r in request.related],
    )
    try:
        return to_xml(build(comprobante))
    except CfdiError as error:
        raise PreviewInvalid(error.code if error.code.upper().startswith("CFDI") else f"TIMBRA_{error.code.upper()}", error.message) from None
