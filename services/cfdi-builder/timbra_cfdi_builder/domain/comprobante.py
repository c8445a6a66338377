"""From an issuer's request to an unsigned CFDI 4.0: Timbra's English request vocabulary maps
onto SAT's nodes here, and nowhere else."""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from timbra_cfdi_builder.service import BuiltCfdi, InvoiceInvalid
from timbra_shared.cfdi import (
    CfdiRelacionados,
    Comprobante,
    Concepto,
    DoctoRelacionado,
    Emisor,
    InformacionGlobal,
    Pago,
    Pagos,
    Receptor,
    Retencion,
    RetencionDR,
    Traslado,
    TrasladoDR,
    build,
    fecha_local,
    to_xml,
)
from timbra_shared.cfdi.catalogs import moneda_decimales
from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.errors import Problem
from timbra_shared.events import InvoiceRequest, InvoiceSummary, ItemIn, PaymentIn, TaxIn

IMPUESTO = {"ISR": "001", "IVA": "002", "IEPS": "003"}
PUBLICO_EN_GENERAL = "XAXX010101000"
EXTRANJERO = "XEXX010101000"
SIX = Decimal("0.000001")

try:  # the validator is optional: when present, SAT business rules are checked before sealing
    from timbra_shared.cfdi import validate as _validate
except ImportError:  # pragma: no cover
    _validate = None


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


def _tax_of(importe: Decimal, quantity: Decimal, traslados: list[Traslado], quantum: Decimal) -> Decimal:
    """The traslados of a concepto whose Importe is ``importe``, rounded per tax as ``build`` does."""
    total = Decimal(0)
    for t in traslados:
        if t.TipoFactor == "Tasa":
            total += (importe * Decimal(t.TasaOCuota or 0)).quantize(quantum, rounding=ROUND_HALF_UP)
        elif t.TipoFactor == "Cuota":
            total += (quantity * Decimal(t.TasaOCuota or 0)).quantize(quantum, rounding=ROUND_HALF_UP)
    return total


def split_tax_included(gross_price: Decimal, quantity: Decimal, traslados: list[Traslado], decimals: int = 2) -> Decimal:
    """ValorUnitario (6 decimals) for a tax-included price, so that the concepto's
    Importe + traslados equal ``gross_price × quantity`` (rounded to the currency) exactly when
    some Importe gives that sum, and otherwise fall short of it by the smallest amount.

    SAT recomputes Importe = round(Cantidad × ValorUnitario) and each traslado =
    round(Base × Tasa), so not every gross amount is reachable (7 × $1.00 with IVA 16%:
    Importe 6.03 gives 6.99, 6.04 gives 7.01). Retentions are not part of the price: they are
    subtracted from the Total afterwards."""
    quantum = Decimal(1).scaleb(-decimals)
    gross = (gross_price * quantity).quantize(quantum, rounding=ROUND_HALF_UP)
    rate = sum((Decimal(t.TasaOCuota or 0) for t in traslados if t.TipoFactor == "Tasa"), Decimal(0))
    cuotas = sum(((quantity * Decimal(t.TasaOCuota or 0)).quantize(quantum, rounding=ROUND_HALF_UP) for t in traslados if t.TipoFactor == "Cuota"), Decimal(0))
    guess = max(Decimal(0), ((gross - cuotas) / (1 + rate)).quantize(quantum, rounding=ROUND_HALF_UP))
    candidates = [guess + k * quantum for k in range(-3, 4) if guess + k * quantum >= 0]  # never empty: guess >= 0
    # exact first; otherwise the closest total that does not exceed the quoted amount; then the closest above
    importe = min(candidates, key=lambda i: (abs(i + _tax_of(i, quantity, traslados, quantum) - gross), i + _tax_of(i, quantity, traslados, quantum) > gross))
    unit = (importe / quantity).quantize(SIX, rounding=ROUND_HALF_UP)
    for step in (Decimal(0), SIX, -SIX, 2 * SIX, -2 * SIX):  # 6 decimals of ValorUnitario may need a nudge to land on Importe
        if ((unit + step) * quantity).quantize(quantum, rounding=ROUND_HALF_UP) == importe:
            return unit + step
    return unit


def _concepto(item: ItemIn, index: int, decimals: int = 2) -> Concepto:
    product = item.product
    if product is None:
        raise InvoiceInvalid([Problem("TIMBRA_PRODUCT_REQUIRED", "Cada concepto necesita un producto (product o product_id).", path=f"items[{index}]")])
    traslados, retenciones = _taxes(product.taxes) if product.taxability == "02" else ([], [])
    price = Decimal(product.price)
    if product.tax_included and traslados:
        price = split_tax_included(price, Decimal(item.quantity), traslados, decimals)
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
            raise InvoiceInvalid([Problem("TIMBRA_CUSTOMER_REQUIRED", "Indica el receptor (customer o customer_id), o la información global para público en general.", path="customer")])
        return Receptor(Rfc=PUBLICO_EN_GENERAL, Nombre="PUBLICO EN GENERAL", DomicilioFiscalReceptor=issuer["zip"], RegimenFiscalReceptor="616", UsoCFDI="S01")
    rfc = customer.rfc.replace(" ", "").replace("-", "").upper()
    generic = rfc in (PUBLICO_EN_GENERAL, EXTRANJERO)
    return Receptor(
        Rfc=rfc,
        Nombre=customer.legal_name,
        DomicilioFiscalReceptor=issuer["zip"] if generic else customer.zip,
        RegimenFiscalReceptor=customer.tax_regime,
        UsoCFDI=request.use or customer.use or ("S01" if generic else "G03"),
        ResidenciaFiscal=customer.tax_residence,
        NumRegIdTrib=customer.tax_id,
    )


def _problems(error: CfdiError) -> list[Problem]:
    code = error.code if error.code.upper().startswith("CFDI") else f"TIMBRA_{error.code.upper()}"
    return [Problem(code, error.message, "sat" if code.startswith("CFDI") else "timbra")]


def build_cfdi(request: InvoiceRequest, issuer: dict[str, Any], *, serie: str | None, folio: int | None, now: datetime) -> BuiltCfdi:
    # customer_id and items[].product_id are resolved by the service against the catalog projection
    if request.customer_id and request.customer is None:
        raise InvoiceInvalid([Problem("TIMBRA_CUSTOMER_NOT_FOUND", f"El cliente {request.customer_id} no existe.", path="customer_id")])
    payment = request.type == "P"
    if payment:
        if not request.payments:
            raise InvoiceInvalid([Problem("TIMBRA_PAYMENTS_REQUIRED", "Un recibo de pago (tipo P) necesita al menos un pago con sus documentos relacionados.", path="payments")])
        if request.items:
            raise InvoiceInvalid([Problem("TIMBRA_PAYMENT_ITEMS", "Un recibo de pago (tipo P) no lleva conceptos: el concepto «Pago» lo pone Timbra.", path="items")])
    elif request.payments:
        raise InvoiceInvalid([Problem("TIMBRA_PAYMENTS_TYPE", "Solo un recibo de pago (tipo P) lleva payments.", path="payments")])
    elif not request.items:
        raise InvoiceInvalid([Problem("TIMBRA_ITEMS_REQUIRED", "La factura necesita al menos un concepto.", path="items")])
    receptor = _receptor(request, issuer)
    if payment:
        receptor.UsoCFDI = "CP01"  # Pagos 2.0: UsoCFDI CP01, Moneda XXX, no FormaPago/MetodoPago
    comprobante = Comprobante(
        Emisor=Emisor(Rfc=issuer["rfc"], Nombre=issuer["legal_name"], RegimenFiscal=issuer["tax_regime"]),
        Receptor=receptor,
        LugarExpedicion=issuer["zip"],
        Conceptos=[_concepto(item, i, _decimals(request.currency)) for i, item in enumerate(request.items)],
        TipoDeComprobante=request.type,
        Moneda="XXX" if payment else request.currency,
        TipoCambio=None if payment else request.exchange,
        Pagos=Pagos(Pago=[_pago(p) for p in request.payments]) if payment else None,
        Exportacion=request.export,
        Fecha=fecha_local(issuer["zip"], now),
        Serie=serie,
        Folio=str(folio) if folio is not None else None,
        FormaPago=request.payment_form if request.type in ("I", "E") else None,
        MetodoPago=request.payment_method if request.type in ("I", "E") else None,
        CondicionesDePago=request.conditions,
        InformacionGlobal=InformacionGlobal(Periodicidad=request.global_info.periodicity, Meses=request.global_info.months, Año=request.global_info.year) if request.global_info else None,
        CfdiRelacionados=[CfdiRelacionados(TipoRelacion=r.relationship, UUIDs=list(r.uuids)) for r in request.related],
    )
    try:
        built = build(comprobante)
        xml = to_xml(built)
    except CfdiError as error:
        raise InvoiceInvalid(_problems(error)) from None
    if _validate is not None:
        findings = [f for f in _validate(xml, xsd=False, catalogs=True) if getattr(f, "severity", "error") == "error" and not _about_seal(f)]
        if findings:
            raise InvoiceInvalid([Problem(f.code, f.message, "sat" if f.code.startswith("CFDI") else "timbra", f.path) for f in findings])
    customer = request.customer
    recipients = [e for e in ([customer.email] if customer and customer.email else []) + (list(customer.emails) if customer else []) + list(request.emails)]
    summary = InvoiceSummary(
        type=request.type,
        serie=serie,
        folio=str(folio) if folio is not None else None,
        fecha=str(built.Fecha),
        rfc_emisor=issuer["rfc"],
        rfc_receptor=receptor.Rfc,
        nombre_receptor=receptor.Nombre,
        total=built.Total,
        currency=request.currency,
        customer_id=None if payment else request.customer_id,  # the catalog must not remember CP01 as the customer's Uso CFDI
        ticket_id=request.ticket_id,
        use=receptor.UsoCFDI,
        recipients=list(dict.fromkeys(recipients))[:10],
    )
    return BuiltCfdi(xml=xml, summary=summary)


def _pago(payment: PaymentIn) -> Pago:
    """A Pago of Pagos 2.0. With ObjetoImpDR 02 each document's taxes are split out of the amount
    paid: BaseDR = ImpPagado / (1 + Σ rates), to the cent (base + tax add up to what was paid)."""
    documents = []
    for doc in payment.related_documents:
        paid = Decimal(doc.amount_paid)
        traslados: list[TrasladoDR] = []
        retenciones: list[RetencionDR] = []
        if doc.taxability == "02":
            rate = sum((Decimal(t.rate or 0) for t in doc.taxes if t.factor == "Tasa" and not t.withholding), Decimal(0))
            base = (paid / (1 + rate)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            for tax in doc.taxes:
                tasa = None if tax.rate is None else Decimal(tax.rate).quantize(SIX)
                if tax.withholding:
                    retenciones.append(RetencionDR(BaseDR=base, ImpuestoDR=IMPUESTO[tax.type], TipoFactorDR=tax.factor, TasaOCuotaDR=tasa))
                elif tax.factor == "Exento":
                    traslados.append(TrasladoDR(BaseDR=base, ImpuestoDR=IMPUESTO[tax.type], TipoFactorDR="Exento"))
                else:
                    traslados.append(TrasladoDR(BaseDR=base, ImpuestoDR=IMPUESTO[tax.type], TipoFactorDR=tax.factor, TasaOCuotaDR=tasa))
        documents.append(DoctoRelacionado(
            IdDocumento=doc.uuid.upper(), Serie=doc.serie, Folio=doc.folio, MonedaDR=doc.currency,
            EquivalenciaDR=doc.exchange if doc.currency != payment.currency else None,
            NumParcialidad=doc.installment, ImpSaldoAnt=Decimal(doc.previous_balance), ImpPagado=paid,
            ObjetoImpDR=doc.taxability, TrasladosDR=traslados, RetencionesDR=retenciones,
        ))
    return Pago(
        FechaPago=payment.date.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S"), FormaDePagoP=payment.payment_form, MonedaP=payment.currency,
        TipoCambioP=payment.exchange if payment.currency != "MXN" else None, Monto=Decimal(payment.amount),
        NumOperacion=payment.operation_number, DoctoRelacionado=documents,
    )


def _decimals(currency: str) -> int:
    try:
        return moneda_decimales(currency)
    except KeyError:
        return 2  # build() reports the unknown currency with its SAT code


def _about_seal(finding: Any) -> bool:
    text = f"{getattr(finding, 'path', '')} {getattr(finding, 'code', '')}"
    return any(word in text for word in ("Sello", "NoCertificado", "Certificado", "CFDI40102"))
