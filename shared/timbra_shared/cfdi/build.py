"""build(): compute every Importe, tax and total of a Comprobante.

Rounding rule (see docs/cfdi.md):

* every monetary amount is rounded **once**, per concept, to the decimals of the
  currency (c_Moneda) with ROUND_HALF_UP;
* comprobante-level figures are plain sums of those already-rounded per-concept
  amounts (so they need no further rounding and satisfy CFDI40108/40119/402xx
  exactly);
* no error is carried from one line to the next.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from . import catalogs
from .errors import BuildError
from .models import (
    Comprobante,
    Concepto,
    DoctoRelacionado,
    Impuestos,
    ImpuestosP,
    Pago,
    Pagos,
    PagosTotales,
    Retencion,
    RetencionDR,
    RetencionP,
    RetencionTotal,
    Traslado,
    TrasladoDR,
    TrasladoP,
    TrasladoTotal,
)

__all__ = ["build", "to_decimal", "quantum", "round_money", "decimals_of"]

ZERO = Decimal(0)
ONE = Decimal(1)
_QUANTA = {n: Decimal(1).scaleb(-n) for n in range(0, 11)}
_FECHA_RE = re.compile(r"^(20[1-9][0-9])-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])T(([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])$")


def quantum(decimals: int) -> Decimal:
    return _QUANTA[decimals]


def round_money(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(_QUANTA[decimals], rounding=ROUND_HALF_UP)


def decimals_of(value: Decimal) -> int:
    exp = value.as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def to_decimal(value, name: str = "valor") -> Decimal:
    """Convert Decimal/int/str to Decimal; floats are refused (binary rounding)."""
    t = type(value)
    if t is Decimal:
        if not value.is_finite():
            raise BuildError("invalid_amount", f"{name}: {value} no es un número finito")
        return value
    if t is int:
        return Decimal(value)
    if t is str:
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise BuildError("invalid_amount", f"{name}: {value!r} no es un número") from None
        if not d.is_finite():
            raise BuildError("invalid_amount", f"{name}: {value!r} no es un número finito")
        return d
    if t is float:
        raise BuildError("float_amount", f"{name}: use Decimal o str, nunca float ({value!r})")
    if isinstance(value, bool) or value is None:
        raise BuildError("invalid_amount", f"{name}: valor requerido")
    if isinstance(value, Decimal):
        return Decimal(value)
    if isinstance(value, int):
        return Decimal(int(value))
    raise BuildError("invalid_amount", f"{name}: tipo no soportado {t.__name__}")


def _check_places(d: Decimal, max_places: int, name: str) -> None:
    if d != d.quantize(_QUANTA[max_places]) and decimals_of(d) > max_places:
        raise BuildError("too_many_decimals", f"{name}={d} tiene más de {max_places} decimales")
    if d < 0:
        raise BuildError("negative_amount", f"{name}={d} no puede ser negativo")


def _fecha(c: Comprobante) -> str:
    f = c.Fecha
    if f is None:
        from .fecha import fecha_local

        return fecha_local(c.LugarExpedicion)
    if isinstance(f, datetime):
        if f.tzinfo is not None:
            from .fecha import fecha_local

            return fecha_local(c.LugarExpedicion, now=f)
        return f.strftime("%Y-%m-%dT%H:%M:%S")
    if not _FECHA_RE.match(f):
        raise BuildError("CFDI40101", f"Fecha {f!r} no cumple el patrón AAAA-MM-DDThh:mm:ss")
    return f


_TASA_OK: dict = {}


def _tax_line(t, kind: str, base_default: Decimal, cantidad: Decimal, dec: int, q: Decimal, where):
    """Return a new Traslado/Retencion with Decimal Base/TasaOCuota/Importe filled.

    ``where`` is a zero-argument callable giving the node name (error messages only)."""
    factor = t.TipoFactor
    if factor not in ("Tasa", "Cuota", "Exento"):
        raise BuildError("CFDI40176", f"{where()}: TipoFactor {factor!r} no es Tasa, Cuota ni Exento")
    if t.Base is not None:
        base = to_decimal(t.Base, f"{where()}.Base")
        _check_places(base, 6, f"{where()}.Base")
    elif factor == "Cuota":
        base = cantidad
    else:
        base = base_default
    if factor == "Exento":
        if kind == "R":
            raise BuildError("CFDI40184", f"{where()}: una retención no puede ser Exenta")
        if t.TasaOCuota is not None or t.Importe is not None:
            raise BuildError("CFDI40177", f"{where()}: un traslado Exento no lleva TasaOCuota ni Importe")
        return Traslado(Impuesto=t.Impuesto, TipoFactor=factor, TasaOCuota=None, Base=base, Importe=None)
    tasa = t.TasaOCuota
    if tasa is None:
        raise BuildError("CFDI40178", f"{where()}: falta TasaOCuota")
    if type(tasa) is not Decimal or tasa not in _TASA_OK:
        tasa = to_decimal(tasa, f"{where()}.TasaOCuota")
        _check_places(tasa, 6, f"{where()}.TasaOCuota")
        if len(_TASA_OK) < 1024:
            _TASA_OK[tasa] = True
    if t.Importe is not None:
        importe = to_decimal(t.Importe, f"{where()}.Importe")
        _check_places(importe, 6, f"{where()}.Importe")
    else:
        importe = (base * tasa).quantize(q, rounding=ROUND_HALF_UP)
    if kind == "T":
        return Traslado(Impuesto=t.Impuesto, TipoFactor=factor, TasaOCuota=tasa, Base=base, Importe=importe)
    return Retencion(Impuesto=t.Impuesto, TipoFactor=factor, TasaOCuota=tasa, Base=base, Importe=importe)


def _amount(value, max_places: int, i: int, name: str) -> Decimal:
    """to_decimal + decimals/sign check, formatting the node name only on error."""
    if type(value) is Decimal and value.is_finite():
        d = value
    else:
        d = to_decimal(value, f"Concepto[{i}].{name}")
    if d < 0 or d != d.quantize(_QUANTA[max_places]):
        _check_places(d, max_places, f"Concepto[{i}].{name}")
    return d


def _build_concepto(c: Concepto, dec: int, q: Decimal, i: int, tipo: str) -> Concepto:
    cant = _amount(c.Cantidad, 6, i, "Cantidad")
    vu = _amount(c.ValorUnitario, 6, i, "ValorUnitario")
    if cant <= 0:
        raise BuildError("invalid_amount", f"Concepto[{i}].Cantidad debe ser mayor que cero")
    importe = (cant * vu).quantize(q, rounding=ROUND_HALF_UP)
    desc = None
    base = importe
    if c.Descuento is not None:
        desc = _amount(c.Descuento, dec, i, "Descuento")
        if desc > importe:
            raise BuildError("CFDI40169", f"Concepto[{i}]: el Descuento {desc} excede el Importe {importe}")
        desc = desc.quantize(q)
        base = importe - desc
    tras = [
        _tax_line(t, "T", base, cant, dec, q, lambda j=j: f"Concepto[{i}].Traslado[{j}]")
        for j, t in enumerate(c.Traslados, 1)
    ]
    rets = [
        _tax_line(t, "R", base, cant, dec, q, lambda j=j: f"Concepto[{i}].Retencion[{j}]")
        for j, t in enumerate(c.Retenciones, 1)
    ]
    obj = c.ObjetoImp
    if obj == "02":
        if not (tras or rets):
            raise BuildError("CFDI40171", f"Concepto[{i}]: ObjetoImp 02 requiere al menos un traslado o retención")
    elif obj in ("01", "03", "04") and (tras or rets):
        raise BuildError("CFDI40172", f"Concepto[{i}]: ObjetoImp {obj} no admite el nodo Impuestos")
    return Concepto(
        ClaveProdServ=c.ClaveProdServ,
        Cantidad=cant,
        ClaveUnidad=c.ClaveUnidad,
        Descripcion=c.Descripcion,
        ValorUnitario=vu,
        ObjetoImp=obj,
        NoIdentificacion=c.NoIdentificacion,
        Unidad=c.Unidad,
        Descuento=desc,
        Traslados=tras,
        Retenciones=rets,
        ACuentaTerceros=c.ACuentaTerceros,
        InformacionAduanera=list(c.InformacionAduanera),
        CuentaPredial=list(c.CuentaPredial),
        Importe=importe,
    )


def _summarise(conceptos: list[Concepto], dec: int, q: Decimal) -> Impuestos | None:
    rets: dict[str, Decimal] = {}
    tras: dict[tuple, list] = {}
    any_tax = False
    for c in conceptos:
        for r in c.Retenciones:
            any_tax = True
            rets[r.Impuesto] = rets.get(r.Impuesto, ZERO) + r.Importe
        for t in c.Traslados:
            any_tax = True
            key = (t.Impuesto, t.TipoFactor, t.TasaOCuota)
            acc = tras.get(key)
            if acc is None:
                tras[key] = [t.Base, t.Importe]
            else:
                acc[0] += t.Base
                if t.Importe is not None:
                    acc[1] += t.Importe
    if not any_tax:
        return None
    imp = Impuestos()
    if rets:
        imp.Retenciones = [
            RetencionTotal(Impuesto=k, Importe=v.quantize(q, rounding=ROUND_HALF_UP)) for k, v in rets.items()
        ]
        total = ZERO
        for r in imp.Retenciones:
            total += r.Importe
        imp.TotalImpuestosRetenidos = total
    if tras:
        lst = []
        total = None
        for (impuesto, factor, tasa), (base, importe) in tras.items():
            base = base.quantize(q, rounding=ROUND_HALF_UP)
            if importe is not None:
                importe = importe.quantize(q, rounding=ROUND_HALF_UP)
                total = importe if total is None else total + importe
            lst.append(TrasladoTotal(Base=base, Impuesto=impuesto, TipoFactor=factor, TasaOCuota=tasa, Importe=importe))
        imp.Traslados = lst
        imp.TotalImpuestosTrasladados = total
    return imp


def _pago_concepto() -> Concepto:
    return Concepto(
        ClaveProdServ="84111506",
        Cantidad=Decimal(1),
        ClaveUnidad="ACT",
        Descripcion="Pago",
        ValorUnitario=Decimal(0),
        ObjetoImp="01",
        Importe=Decimal(0),
    )


def _dr_tax(t, kind: str, ddec: int, where: str):
    factor = t.TipoFactorDR
    base = to_decimal(t.BaseDR, f"{where}.BaseDR")
    _check_places(base, 6, f"{where}.BaseDR")
    if factor == "Exento":
        if kind == "R":
            raise BuildError("build_error", f"{where}: una retención no puede ser Exenta")
        return TrasladoDR(BaseDR=base, ImpuestoDR=t.ImpuestoDR, TipoFactorDR=factor)
    if t.TasaOCuotaDR is None:
        raise BuildError("build_error", f"{where}: falta TasaOCuotaDR")
    tasa = to_decimal(t.TasaOCuotaDR, f"{where}.TasaOCuotaDR")
    if t.ImporteDR is not None:
        importe = to_decimal(t.ImporteDR, f"{where}.ImporteDR")
        _check_places(importe, 6, f"{where}.ImporteDR")
    else:
        importe = round_money(base * tasa, ddec)
    if kind == "T":
        return TrasladoDR(BaseDR=base, ImpuestoDR=t.ImpuestoDR, TipoFactorDR=factor, TasaOCuotaDR=tasa, ImporteDR=importe)
    return RetencionDR(BaseDR=base, ImpuestoDR=t.ImpuestoDR, TipoFactorDR=factor, TasaOCuotaDR=tasa, ImporteDR=importe)


_RET_TOTAL = {"001": "TotalRetencionesISR", "002": "TotalRetencionesIVA", "003": "TotalRetencionesIEPS"}
_IVA_TOTAL = {
    Decimal("0.16"): ("TotalTrasladosBaseIVA16", "TotalTrasladosImpuestoIVA16"),
    Decimal("0.08"): ("TotalTrasladosBaseIVA8", "TotalTrasladosImpuestoIVA8"),
    Decimal("0"): ("TotalTrasladosBaseIVA0", "TotalTrasladosImpuestoIVA0"),
}


def _build_pagos(pagos: Pagos) -> Pagos:
    if not pagos.Pago:
        raise BuildError("build_error", "Pagos requiere al menos un Pago")
    out_pagos = []
    totals: dict[str, Decimal] = {}
    monto_total = ZERO
    for i, p in enumerate(pagos.Pago, 1):
        wp = f"Pago[{i}]"
        pdec = catalogs.moneda_decimales(p.MonedaP)
        if not p.DoctoRelacionado:
            raise BuildError("build_error", f"{wp}: requiere al menos un DoctoRelacionado")
        if p.MonedaP == "MXN":
            tc = Decimal(1) if p.TipoCambioP is None else to_decimal(p.TipoCambioP, f"{wp}.TipoCambioP")
        else:
            if p.TipoCambioP is None:
                raise BuildError("build_error", f"{wp}: TipoCambioP es requerido para MonedaP {p.MonedaP}")
            tc = to_decimal(p.TipoCambioP, f"{wp}.TipoCambioP")
        drs = []
        sum_pagado = ZERO
        ret_p: dict[str, Decimal] = {}
        tra_p: dict[tuple, list] = {}
        for j, d in enumerate(p.DoctoRelacionado, 1):
            wd = f"{wp}.DoctoRelacionado[{j}]"
            ddec = catalogs.moneda_decimales(d.MonedaDR)
            ant = to_decimal(d.ImpSaldoAnt, f"{wd}.ImpSaldoAnt")
            pagado = to_decimal(d.ImpPagado, f"{wd}.ImpPagado")
            _check_places(ant, ddec, f"{wd}.ImpSaldoAnt")
            _check_places(pagado, ddec, f"{wd}.ImpPagado")
            if pagado <= 0:
                raise BuildError("build_error", f"{wd}: ImpPagado debe ser mayor que cero")
            if pagado > ant:
                raise BuildError("build_error", f"{wd}: ImpPagado {pagado} excede ImpSaldoAnt {ant}")
            if d.EquivalenciaDR is not None:
                eq = to_decimal(d.EquivalenciaDR, f"{wd}.EquivalenciaDR")
            elif d.MonedaDR == p.MonedaP:
                eq = Decimal(1)
            else:
                raise BuildError("build_error", f"{wd}: EquivalenciaDR es requerida cuando MonedaDR ≠ MonedaP")
            tras = [_dr_tax(t, "T", ddec, f"{wd}.TrasladoDR[{k}]") for k, t in enumerate(d.TrasladosDR, 1)]
            rets = [_dr_tax(t, "R", ddec, f"{wd}.RetencionDR[{k}]") for k, t in enumerate(d.RetencionesDR, 1)]
            obj = d.ObjetoImpDR or ("02" if (tras or rets) else "01")
            if obj == "02" and not (tras or rets):
                raise BuildError("build_error", f"{wd}: ObjetoImpDR 02 requiere ImpuestosDR")
            if obj != "02" and (tras or rets):
                raise BuildError("build_error", f"{wd}: ObjetoImpDR {obj} no admite ImpuestosDR")
            drs.append(
                DoctoRelacionado(
                    IdDocumento=d.IdDocumento,
                    MonedaDR=d.MonedaDR,
                    NumParcialidad=d.NumParcialidad,
                    ImpSaldoAnt=ant.quantize(quantum(ddec)),
                    ImpPagado=pagado.quantize(quantum(ddec)),
                    ObjetoImpDR=obj,
                    Serie=d.Serie,
                    Folio=d.Folio,
                    EquivalenciaDR=eq,
                    TrasladosDR=tras,
                    RetencionesDR=rets,
                    ImpSaldoInsoluto=(ant - pagado).quantize(quantum(ddec)),
                )
            )
            sum_pagado += pagado / eq
            for r in rets:
                ret_p[r.ImpuestoDR] = ret_p.get(r.ImpuestoDR, ZERO) + r.ImporteDR / eq
            for t in tras:
                key = (t.ImpuestoDR, t.TipoFactorDR, t.TasaOCuotaDR)
                acc = tra_p.setdefault(key, [ZERO, None])
                acc[0] += t.BaseDR / eq
                if t.ImporteDR is not None:
                    acc[1] = (acc[1] or ZERO) + t.ImporteDR / eq
        if p.Monto is not None:
            monto = to_decimal(p.Monto, f"{wp}.Monto")
            _check_places(monto, pdec, f"{wp}.Monto")
        else:
            monto = round_money(sum_pagado, pdec)
        impp = None
        if ret_p or tra_p:
            impp = ImpuestosP(
                RetencionesP=[RetencionP(ImpuestoP=k, ImporteP=round_money(v, pdec)) for k, v in ret_p.items()],
                TrasladosP=[
                    TrasladoP(
                        BaseP=round_money(b, pdec),
                        ImpuestoP=k[0],
                        TipoFactorP=k[1],
                        TasaOCuotaP=k[2],
                        ImporteP=None if imp is None else round_money(imp, pdec),
                    )
                    for k, (b, imp) in tra_p.items()
                ],
            )
            for r in impp.RetencionesP:
                name = _RET_TOTAL.get(r.ImpuestoP)
                if name:
                    totals[name] = totals.get(name, ZERO) + r.ImporteP * tc
            for t in impp.TrasladosP:
                if t.ImpuestoP != "002":
                    continue
                if t.TipoFactorP == "Exento":
                    totals["TotalTrasladosBaseIVAExento"] = totals.get("TotalTrasladosBaseIVAExento", ZERO) + t.BaseP * tc
                    continue
                names = _IVA_TOTAL.get(t.TasaOCuotaP)
                if names:
                    totals[names[0]] = totals.get(names[0], ZERO) + t.BaseP * tc
                    totals[names[1]] = totals.get(names[1], ZERO) + t.ImporteP * tc
        monto_total += monto * tc
        out_pagos.append(
            Pago(
                FechaPago=p.FechaPago if isinstance(p.FechaPago, str) else p.FechaPago.strftime("%Y-%m-%dT%H:%M:%S"),
                FormaDePagoP=p.FormaDePagoP,
                MonedaP=p.MonedaP,
                DoctoRelacionado=drs,
                Monto=monto.quantize(quantum(pdec)),
                TipoCambioP=tc,
                NumOperacion=p.NumOperacion,
                RfcEmisorCtaOrd=p.RfcEmisorCtaOrd,
                NomBancoOrdExt=p.NomBancoOrdExt,
                CtaOrdenante=p.CtaOrdenante,
                RfcEmisorCtaBen=p.RfcEmisorCtaBen,
                CtaBeneficiario=p.CtaBeneficiario,
                TipoCadPago=p.TipoCadPago,
                CertPago=p.CertPago,
                CadPago=p.CadPago,
                SelloPago=p.SelloPago,
                ImpuestosP=impp,
            )
        )
    tot = PagosTotales(MontoTotalPagos=round_money(monto_total, 2))
    for k, v in totals.items():
        setattr(tot, k, round_money(v, 2))
    return Pagos(Pago=out_pagos, Totales=tot)


def build(comprobante: Comprobante) -> Comprobante:
    """Return a new Comprobante with every Importe, tax and total computed.

    The input is not modified. Raises :class:`BuildError` for input that can
    not produce a valid CFDI (floats, too many decimals, Exento retención, ...).
    """
    c = comprobante
    tipo = c.TipoDeComprobante
    if tipo not in ("I", "E", "T", "P", "N"):
        raise BuildError("CFDI40121", f"TipoDeComprobante {tipo!r} no está en c_TipoDeComprobante")
    try:
        dec = catalogs.moneda_decimales(c.Moneda)
    except KeyError:
        raise BuildError("CFDI40113", f"Moneda {c.Moneda!r} no está en c_Moneda") from None
    q = _QUANTA[dec]
    conceptos_in = c.Conceptos
    if tipo == "P" and not conceptos_in:
        conceptos = [_pago_concepto()]
    else:
        if not conceptos_in:
            raise BuildError("build_error", "El comprobante requiere al menos un Concepto")
        conceptos = [_build_concepto(x, dec, q, i, tipo) for i, x in enumerate(conceptos_in, 1)]

    tipo_cambio = None
    if c.TipoCambio is not None:
        tipo_cambio = to_decimal(c.TipoCambio, "TipoCambio")
        _check_places(tipo_cambio, 6, "TipoCambio")

    pagos = None
    if tipo in ("T", "P"):
        sub_total = q * 0
        total = q * 0
        descuento = None
        impuestos = None
        if tipo == "P":
            if c.Pagos is None:
                raise BuildError("build_error", "Un comprobante de tipo P requiere el complemento Pagos")
            pagos = _build_pagos(c.Pagos)
        for x in conceptos:
            if x.Traslados or x.Retenciones:
                raise BuildError("CFDI40201", f"Un comprobante de tipo {tipo} no lleva impuestos")
    else:
        sub_total = ZERO.quantize(q)
        descuento = None
        for x in conceptos:
            sub_total += x.Importe
            if x.Descuento is not None:
                descuento = x.Descuento if descuento is None else descuento + x.Descuento
        impuestos = _summarise(conceptos, dec, q)
        total = sub_total
        if descuento is not None:
            total -= descuento
        if impuestos is not None:
            if impuestos.TotalImpuestosTrasladados is not None:
                total += impuestos.TotalImpuestosTrasladados
            if impuestos.TotalImpuestosRetenidos is not None:
                total -= impuestos.TotalImpuestosRetenidos
        if total < 0:
            raise BuildError("CFDI40119", f"El Total resultante es negativo ({total})")

    return Comprobante(
        Emisor=c.Emisor,
        Receptor=c.Receptor,
        LugarExpedicion=c.LugarExpedicion,
        Conceptos=conceptos,
        TipoDeComprobante=tipo,
        Moneda=c.Moneda,
        Exportacion=c.Exportacion,
        Fecha=_fecha(c),
        Serie=c.Serie,
        Folio=c.Folio,
        FormaPago=c.FormaPago,
        MetodoPago=c.MetodoPago,
        CondicionesDePago=c.CondicionesDePago,
        TipoCambio=tipo_cambio,
        Confirmacion=c.Confirmacion,
        InformacionGlobal=c.InformacionGlobal,
        CfdiRelacionados=list(c.CfdiRelacionados),
        Pagos=pagos,
        SubTotal=sub_total,
        Descuento=descuento,
        Total=total,
        Impuestos=impuestos,
        NoCertificado=c.NoCertificado,
        Certificado=c.Certificado,
        Sello=c.Sello,
    )
