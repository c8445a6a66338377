"""SAT business-rule validation of a CFDI 4.0, returning coded findings.

Codes are SAT's ``CFDI40xxx`` (Matriz de errores CFDI 4.0) where SAT has one;
rules without a SAT code in the base matrix use ``TIMBRAxxx`` codes and XSD
errors use ``XSD``. docs/cfdi.md lists them all.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation

from . import catalogs as cat
from .errors import CfdiError
from .xmlparse import NS_CFDI4, NS_PAGO20, NS_TFD, as_element, ensure_cfdi40

__all__ = ["Finding", "validate"]

C = "{%s}" % NS_CFDI4
P = "{%s}" % NS_PAGO20
ROOT = "/cfdi:Comprobante"

_FECHA_RE = re.compile(r"^(20[1-9][0-9])-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])T(([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])$")
_RFC_RE = re.compile(r"^[A-ZÑ&]{3,4}[0-9]{2}(0[1-9]|1[012])(0[1-9]|[12][0-9]|3[01])[A-Z0-9]{2}[0-9A]$")
_NUM_RE = re.compile(r"^[0-9]{1,18}(\.[0-9]{1,6})?$")
_TC_RE = re.compile(r"^[0-9]{1,18}(\.[0-9]{1,6})?$")
RFC_PUBLICO = "XAXX010101000"
RFC_EXTRANJERO = "XEXX010101000"


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    message: str  # Spanish, actionable
    path: str  # node/attribute at fault, XPath-like
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.code} [{self.severity}] {self.path}: {self.message}"


def _d(v: str | None) -> Decimal | None:
    if v is None:
        return None
    try:
        d = Decimal(v.strip())
    except (InvalidOperation, AttributeError):
        return None
    return d if d.is_finite() else None


def _places(v: str | None) -> int:
    if not v or "." not in v:
        return 0
    return len(v.strip().split(".", 1)[1])


@functools.lru_cache(maxsize=64)
def _half(places: int) -> Decimal:
    return Decimal(1).scaleb(-places) / 2


@functools.lru_cache(maxsize=64)
def _q(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


class _V:
    def __init__(self, root, use_catalogs: bool, at: datetime | None, check_dates: bool):
        self.root = root
        self.cat = use_catalogs
        self.at = at
        self.check_dates = check_dates
        self.out: list[Finding] = []

    def add(self, code: str, message: str, path: str, severity: str = "error") -> None:
        self.out.append(Finding(code, message, path, severity))

    # -- helpers ----------------------------------------------------------
    def in_cat(self, catalog: str, value: str | None, code: str, path: str, label: str) -> bool:
        if value is None or not self.cat:
            return True
        if not cat.exists(catalog, value):
            self.add(code, f"{label} {value!r} no existe en el catálogo {catalog} del SAT", path)
            return False
        return True

    # -- main ---------------------------------------------------------------
    def run(self) -> list[Finding]:
        r = self.root
        g = r.get
        tipo = g("TipoDeComprobante")
        moneda = g("Moneda")
        try:
            dec = cat.moneda_decimales(moneda) if moneda else 2
        except KeyError:
            dec = 2
            self.add("CFDI40113", f"La Moneda {moneda!r} no existe en el catálogo c_Moneda", f"{ROOT}/@Moneda")
        self.dec = dec
        self.tipo = tipo
        emisor = r.find(C + "Emisor")
        receptor = r.find(C + "Receptor")
        self._comprobante(g, tipo, moneda, dec, emisor)
        self._sello(emisor)
        if emisor is not None:
            self._emisor(emisor)
        if receptor is not None:
            self._receptor(receptor, tipo)
        self._info_global(receptor, emisor)
        for i, rel in enumerate(r.iterchildren(C + "CfdiRelacionados"), 1):
            self.in_cat("c_TipoRelacion", rel.get("TipoRelacion"), "CFDI40137",
                        f"{ROOT}/cfdi:CfdiRelacionados[{i}]/@TipoRelacion", "TipoRelacion")
        self._conceptos_y_totales(tipo, dec, emisor, receptor)
        if tipo == "P":
            self._pagos()
        return self.out

    def _comprobante(self, g, tipo, moneda, dec, emisor) -> None:
        fecha = g("Fecha") or ""
        if not _FECHA_RE.match(fecha):
            self.add("CFDI40101", f"Fecha {fecha!r} no cumple el patrón AAAA-MM-DDThh:mm:ss", f"{ROOT}/@Fecha")
        elif self.check_dates:
            self._fecha_rango(fecha, g("LugarExpedicion"))
        if tipo not in ("I", "E", "T", "N", "P"):
            self.add("CFDI40121", f"TipoDeComprobante {tipo!r} no existe en c_TipoDeComprobante", f"{ROOT}/@TipoDeComprobante")
        forma = g("FormaPago")
        metodo = g("MetodoPago")
        if tipo in ("T", "P"):
            if forma is not None:
                self.add("CFDI40103", f"Un comprobante de tipo {tipo} no debe registrar FormaPago", f"{ROOT}/@FormaPago")
            if metodo is not None:
                self.add("CFDI40125", f"Un comprobante de tipo {tipo} no debe registrar MetodoPago", f"{ROOT}/@MetodoPago")
        elif tipo in ("I", "E"):
            if forma is None:
                self.add("CFDI40103", "Falta FormaPago: regístrela (99 'Por definir' si se paga en parcialidades o diferido)",
                         f"{ROOT}/@FormaPago")
            if metodo is None:
                self.add("TIMBRA102", "Falta MetodoPago (PUE o PPD)", f"{ROOT}/@MetodoPago")
        if forma is not None:
            self.in_cat("c_FormaPago", forma, "CFDI40104", f"{ROOT}/@FormaPago", "FormaPago")
        if metodo is not None:
            if metodo not in ("PUE", "PPD"):
                self.add("CFDI40124", f"MetodoPago {metodo!r} no existe en c_MetodoPago", f"{ROOT}/@MetodoPago")
            elif metodo == "PPD" and forma is not None and forma != "99":
                self.add("CFDI40105", "Con MetodoPago PPD la FormaPago debe ser 99 (Por definir)", f"{ROOT}/@FormaPago")
        # decimals of SubTotal / Descuento / Total
        for attr, code in (("SubTotal", "CFDI40107"), ("Descuento", "CFDI40112"), ("Total", "TIMBRA103")):
            v = g(attr)
            if v is not None and (_d(v) is None or _places(v) > dec):
                self.add(code, f"{attr}={v!r} excede los {dec} decimales de la moneda {moneda}", f"{ROOT}/@{attr}")
        if moneda is not None and self.cat and moneda != "XXX":
            self.in_cat("c_Moneda", moneda, "CFDI40113", f"{ROOT}/@Moneda", "Moneda")
        tc = g("TipoCambio")
        if moneda == "MXN" and tc is not None and _d(tc) != 1:
            self.add("CFDI40114", "Con Moneda MXN el TipoCambio debe ser 1 (u omitirse)", f"{ROOT}/@TipoCambio")
        elif moneda == "XXX" and tc is not None:
            self.add("CFDI40116", "Con Moneda XXX no debe registrarse TipoCambio", f"{ROOT}/@TipoCambio")
        elif moneda not in (None, "MXN", "XXX") and tc is None:
            self.add("CFDI40115", f"Con Moneda {moneda} el TipoCambio es requerido", f"{ROOT}/@TipoCambio")
        if tc is not None and not _TC_RE.match(tc):
            self.add("CFDI40117", f"TipoCambio {tc!r} no cumple el patrón (hasta 6 decimales)", f"{ROOT}/@TipoCambio")
        exp = g("Exportacion")
        self.in_cat("c_Exportacion", exp, "CFDI40123", f"{ROOT}/@Exportacion", "Exportacion")
        if exp == "02":
            has_cce = any(
                (ch.tag or "").startswith("{http://www.sat.gob.mx/ComercioExterior")
                for comp in self.root.iterchildren(C + "Complemento") for ch in comp
                if isinstance(ch.tag, str)
            )
            if not has_cce:
                self.add("CFDI40122", "Exportacion 02 requiere el complemento de Comercio Exterior", f"{ROOT}/@Exportacion")
        lugar = g("LugarExpedicion")
        self.in_cat("c_CodigoPostal", lugar, "CFDI40126", f"{ROOT}/@LugarExpedicion", "LugarExpedicion")

    def _fecha_rango(self, fecha: str, lugar: str | None) -> None:
        from .fecha import now_local

        f = datetime.strptime(fecha, "%Y-%m-%dT%H:%M:%S")
        tfd = self.root.find(f"{C}Complemento/{{{NS_TFD}}}TimbreFiscalDigital")
        if tfd is not None and _FECHA_RE.match(tfd.get("FechaTimbrado") or ""):
            ref = datetime.strptime(tfd.get("FechaTimbrado"), "%Y-%m-%dT%H:%M:%S")
        else:
            try:
                ref = now_local(lugar or "06000", self.at).replace(tzinfo=None)
            except CfdiError:
                ref = now_local("06000", self.at).replace(tzinfo=None)
        if f > ref + timedelta(minutes=5):
            self.add("CFDI40101", f"La Fecha {fecha} es posterior a la hora local actual en LugarExpedicion ({ref:%Y-%m-%dT%H:%M:%S})",
                     f"{ROOT}/@Fecha")
        elif ref - f > timedelta(hours=72):
            self.add("CFDI40101", f"La Fecha {fecha} tiene más de 72 horas de antigüedad respecto de {ref:%Y-%m-%dT%H:%M:%S}; "
                     "el PAC no podrá timbrarlo", f"{ROOT}/@Fecha")

    def _sello(self, emisor) -> None:
        r = self.root
        sello = (r.get("Sello") or "").strip()
        cert_b64 = (r.get("Certificado") or "").strip()
        if not sello:
            self.add("TIMBRA001", "El comprobante no está sellado (Sello vacío)", f"{ROOT}/@Sello", "warning")
            return
        from .csd import embedded_certificate
        from .seal import verify

        try:
            embedded = embedded_certificate(cert_b64)
        except Exception:
            self.add("CFDI40106", "El atributo Certificado no contiene un certificado válido en base64", f"{ROOT}/@Certificado")
            return
        cert = embedded.certificate
        if embedded.no_certificado != (r.get("NoCertificado") or ""):
            self.add("CFDI40106", "NoCertificado no corresponde al número de serie del Certificado", f"{ROOT}/@NoCertificado")
        if embedded.is_fiel:
            self.add("CFDI40106", "El certificado es una e.firma (FIEL); se debe sellar con un CSD", f"{ROOT}/@Certificado")
        rfc = embedded.rfc
        if emisor is not None and rfc and (emisor.get("Rfc") or "").strip().upper() != rfc:
            self.add("TIMBRA002", f"El certificado pertenece al RFC {rfc}, distinto del RFC del Emisor", f"{ROOT}/cfdi:Emisor/@Rfc")
        fecha = r.get("Fecha") or ""
        if _FECHA_RE.match(fecha):
            f = datetime.strptime(fecha, "%Y-%m-%dT%H:%M:%S")
            nb = cert.not_valid_before_utc.replace(tzinfo=None) - timedelta(hours=8)
            na = cert.not_valid_after_utc.replace(tzinfo=None) + timedelta(hours=8)
            if not (nb <= f <= na):
                self.add("CFDI40106", "La Fecha del comprobante está fuera de la vigencia del certificado", f"{ROOT}/@Certificado")
        res = verify(r)
        if not res.valid and "CFDI40106" not in (res.reason or ""):
            self.add("CFDI40102", f"El sello no es válido: {res.reason}", f"{ROOT}/@Sello")

    def _emisor(self, e) -> None:
        path = f"{ROOT}/cfdi:Emisor"
        rfc = (e.get("Rfc") or "").strip()
        if not _RFC_RE.match(rfc) or rfc in (RFC_PUBLICO, RFC_EXTRANJERO):
            self.add("CFDI40138", f"El RFC del emisor {rfc!r} no tiene un formato válido", f"{path}/@Rfc")
        reg = e.get("RegimenFiscal")
        if self.in_cat("c_RegimenFiscal", reg, "CFDI40140", f"{path}/@RegimenFiscal", "RegimenFiscal"):
            flags = cat.regimen_persona(reg or "")
            persona = cat.persona_de_rfc(rfc)
            if flags and persona and not (flags[0] if persona == "fisica" else flags[1]):
                self.add("CFDI40141", f"El régimen {reg} no aplica a una persona {'física' if persona == 'fisica' else 'moral'}"
                         f" (RFC de {len(rfc)} caracteres)", f"{path}/@RegimenFiscal")

    def _receptor(self, rc, tipo) -> None:
        path = f"{ROOT}/cfdi:Receptor"
        g = rc.get
        rfc = (g("Rfc") or "").strip()
        nombre = g("Nombre") or ""
        cp = g("DomicilioFiscalReceptor")
        reg = g("RegimenFiscalReceptor")
        uso = g("UsoCFDI")
        lugar = self.root.get("LugarExpedicion")
        generic = rfc in (RFC_PUBLICO, RFC_EXTRANJERO)
        if not _RFC_RE.match(rfc):
            self.add("CFDI40143", f"El RFC del receptor {rfc!r} no tiene un formato válido", f"{path}/@Rfc")
        if rfc == RFC_PUBLICO:
            if nombre.strip() != "PUBLICO EN GENERAL":
                self.add("CFDI40145", "Con RFC XAXX010101000 el Nombre debe ser exactamente 'PUBLICO EN GENERAL'", f"{path}/@Nombre")
        elif nombre.strip().upper() == "PUBLICO EN GENERAL":
            self.add("CFDI40146", "Con Nombre 'PUBLICO EN GENERAL' el RFC debe ser XAXX010101000", f"{path}/@Rfc")
        if generic:
            if cp != lugar:
                self.add("CFDI40149", f"Con RFC genérico {rfc} el DomicilioFiscalReceptor debe ser igual a LugarExpedicion ({lugar})",
                         f"{path}/@DomicilioFiscalReceptor")
            if reg != "616":
                self.add("CFDI40158", f"Con RFC genérico {rfc} el RegimenFiscalReceptor debe ser 616 (Sin obligaciones fiscales)",
                         f"{path}/@RegimenFiscalReceptor")
            allowed = {"S01"} if rfc == RFC_PUBLICO else {"S01", "CP01"}
            if tipo == "P":
                allowed = {"CP01"}
            if uso not in allowed:
                self.add("CFDI40161", f"Con RFC genérico {rfc} el UsoCFDI debe ser {' o '.join(sorted(allowed))}", f"{path}/@UsoCFDI")
        elif self.cat and cp is not None and not cat.exists("c_CodigoPostal", cp):
            self.add("TIMBRA104", f"DomicilioFiscalReceptor {cp!r} no existe en c_CodigoPostal", f"{path}/@DomicilioFiscalReceptor")
        res = g("ResidenciaFiscal")
        num = g("NumRegIdTrib")
        if rfc != RFC_EXTRANJERO:
            if res is not None:
                self.add("CFDI40151", "ResidenciaFiscal sólo se registra para un receptor extranjero (XEXX010101000)",
                         f"{path}/@ResidenciaFiscal")
            if num is not None:
                self.add("CFDI40154", "NumRegIdTrib sólo se registra para un receptor extranjero (XEXX010101000)",
                         f"{path}/@NumRegIdTrib")
        else:
            if res == "MEX":
                self.add("CFDI40152", "ResidenciaFiscal no puede ser MEX", f"{path}/@ResidenciaFiscal")
            elif res is not None:
                self.in_cat("c_Pais", res, "CFDI40150", f"{path}/@ResidenciaFiscal", "ResidenciaFiscal")
            if num is not None and res is None:
                self.add("CFDI40153", "Si se registra NumRegIdTrib debe registrarse ResidenciaFiscal", f"{path}/@ResidenciaFiscal")
        persona = cat.persona_de_rfc(rfc)
        if self.in_cat("c_RegimenFiscal", reg, "CFDI40157", f"{path}/@RegimenFiscalReceptor", "RegimenFiscalReceptor") and not generic:
            flags = cat.regimen_persona(reg or "")
            if flags and persona and not (flags[0] if persona == "fisica" else flags[1]):
                self.add("CFDI40158", f"El régimen {reg} no corresponde a una persona "
                         f"{'física' if persona == 'fisica' else 'moral'}", f"{path}/@RegimenFiscalReceptor")
        if self.in_cat("c_UsoCFDI", uso, "CFDI40160", f"{path}/@UsoCFDI", "UsoCFDI") and not generic:
            if tipo == "P" and uso != "CP01":
                self.add("CFDI40161", "Un comprobante de tipo P debe registrar UsoCFDI CP01", f"{path}/@UsoCFDI")
            elif tipo != "P" and uso == "CP01":
                self.add("CFDI40161", "UsoCFDI CP01 sólo aplica a comprobantes de tipo P", f"{path}/@UsoCFDI")
            elif tipo != "N" and uso == "CN01":
                self.add("CFDI40161", "UsoCFDI CN01 sólo aplica a comprobantes de nómina", f"{path}/@UsoCFDI")
            elif uso not in ("CP01",) and not cat.uso_cfdi_permitido(uso or "", reg or "", persona):
                self.add("CFDI40161", f"El UsoCFDI {uso} no aplica a una persona "
                         f"{'física' if persona == 'fisica' else 'moral'} con régimen {reg}", f"{path}/@UsoCFDI")

    def _info_global(self, receptor, emisor) -> None:
        ig = self.root.find(C + "InformacionGlobal")
        path = f"{ROOT}/cfdi:InformacionGlobal"
        publico = receptor is not None and (receptor.get("Rfc") or "").strip() == RFC_PUBLICO and \
            (receptor.get("Nombre") or "").strip() == "PUBLICO EN GENERAL"
        if ig is None:
            if publico and self.tipo in ("I", "E"):
                self.add("CFDI40130", "Una factura a PUBLICO EN GENERAL (XAXX010101000) requiere el nodo InformacionGlobal", path)
            return
        if receptor is not None and (receptor.get("Rfc") or "").strip() != RFC_PUBLICO:
            self.add("CFDI40130", "InformacionGlobal sólo aplica con RFC receptor XAXX010101000 (público en general)", path)
        per, mes, anio = ig.get("Periodicidad"), ig.get("Meses"), ig.get("Año")
        self.in_cat("c_Periodicidad", per, "CFDI40131", f"{path}/@Periodicidad", "Periodicidad")
        if per == "05" and emisor is not None and emisor.get("RegimenFiscal") != "621":
            self.add("CFDI40132", "La periodicidad 05 (bimestral) sólo aplica al régimen 621", f"{path}/@Periodicidad")
        if self.in_cat("c_Meses", mes, "CFDI40133", f"{path}/@Meses", "Meses") and mes:
            if per == "05" and not ("13" <= mes <= "18"):
                self.add("CFDI40135", "Con periodicidad bimestral Meses debe ser 13 a 18", f"{path}/@Meses")
            elif per != "05" and not ("01" <= mes <= "12"):
                self.add("CFDI40134", "Con periodicidad distinta de bimestral Meses debe ser 01 a 12", f"{path}/@Meses")
        fecha = self.root.get("Fecha") or ""
        if anio is not None and _FECHA_RE.match(fecha):
            year = int(fecha[:4])
            if anio not in (str(year), str(year - 1)):
                self.add("CFDI40136", f"Año {anio} debe ser el año de la Fecha ({year}) o el anterior", f"{path}/@Año")

    # -- conceptos, impuestos, totales ------------------------------------
    def _conceptos_y_totales(self, tipo, dec, emisor, receptor) -> None:
        r = self.root
        conceptos = r.find(C + "Conceptos")
        sum_importe = Decimal(0)
        sum_desc = Decimal(0)
        any_desc = False
        tras: dict[tuple, list] = {}
        rets: dict[str, Decimal] = {}
        emisor_rfc = emisor.get("Rfc") if emisor is not None else None
        receptor_rfc = receptor.get("Rfc") if receptor is not None else None
        for i, cp in enumerate(conceptos.iterchildren(C + "Concepto") if conceptos is not None else (), 1):
            path = f"{ROOT}/cfdi:Conceptos/cfdi:Concepto[{i}]"
            g = cp.get
            self.in_cat("c_ClaveProdServ", g("ClaveProdServ"), "CFDI40162", f"{path}/@ClaveProdServ", "ClaveProdServ")
            self.in_cat("c_ClaveUnidad", g("ClaveUnidad"), "CFDI40165", f"{path}/@ClaveUnidad", "ClaveUnidad")
            cant, vu, imp = _d(g("Cantidad")), _d(g("ValorUnitario")), _d(g("Importe"))
            if vu is not None and tipo in ("I", "E", "N") and vu <= 0:
                self.add("CFDI40166", "ValorUnitario debe ser mayor que cero en comprobantes I, E o N", f"{path}/@ValorUnitario")
            if cant is not None and vu is not None and imp is not None:
                pc, pv, pi = _places(g("Cantidad")), _places(g("ValorUnitario")), _places(g("Importe"))
                lo = ((cant - _half(pc)) * (vu - _half(pv))).quantize(_q(pi), rounding=ROUND_FLOOR)
                hi = ((cant + _half(pc)) * (vu + _half(pv))).quantize(_q(pi), rounding=ROUND_CEILING)
                if not (lo <= imp <= hi):
                    self.add("CFDI40167", f"Importe {imp} fuera de límites para Cantidad × ValorUnitario "
                             f"({cant} × {vu}); debe estar entre {lo} y {hi}", f"{path}/@Importe")
            if imp is not None:
                sum_importe += imp
            desc_s = g("Descuento")
            desc = _d(desc_s)
            if desc_s is not None:
                any_desc = True
                if tipo in ("T", "P"):
                    self.add("CFDI40111", f"Un comprobante de tipo {tipo} no admite Descuento en conceptos", f"{path}/@Descuento")
                if desc is not None:
                    sum_desc += desc
                    if _places(desc_s) > _places(g("Importe")):
                        self.add("CFDI40168", "El Descuento tiene más decimales que el Importe del concepto", f"{path}/@Descuento")
                    if imp is not None and desc > imp:
                        self.add("CFDI40169", "El Descuento excede el Importe del concepto", f"{path}/@Descuento")
            obj = g("ObjetoImp")
            self.in_cat("c_ObjetoImp", obj, "CFDI40170", f"{path}/@ObjetoImp", "ObjetoImp")
            impuestos = cp.find(C + "Impuestos")
            if obj == "02" and impuestos is None:
                self.add("CFDI40171", "Con ObjetoImp 02 el concepto debe incluir el nodo Impuestos", f"{path}/@ObjetoImp")
            if obj in ("01", "03", "04") and impuestos is not None:
                self.add("CFDI40172", f"Con ObjetoImp {obj} el concepto no debe incluir el nodo Impuestos", f"{path}/cfdi:Impuestos")
            if impuestos is not None:
                tl = impuestos.findall(f"{C}Traslados/{C}Traslado")
                rl = impuestos.findall(f"{C}Retenciones/{C}Retencion")
                if not tl and not rl:
                    self.add("CFDI40173", "El nodo Impuestos del concepto debe tener al menos un traslado o una retención",
                             f"{path}/cfdi:Impuestos")
                for j, t in enumerate(tl, 1):
                    self._tax(t, "T", f"{path}/cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado[{j}]", tras, rets)
                for j, t in enumerate(rl, 1):
                    self._tax(t, "R", f"{path}/cfdi:Impuestos/cfdi:Retenciones/cfdi:Retencion[{j}]", tras, rets)
            terc = cp.find(C + "ACuentaTerceros")
            if terc is not None:
                trfc = terc.get("RfcACuentaTerceros")
                if trfc in (emisor_rfc, receptor_rfc):
                    self.add("CFDI40188", "RfcACuentaTerceros debe ser distinto del RFC del emisor y del receptor",
                             f"{path}/cfdi:ACuentaTerceros/@RfcACuentaTerceros")
                self.in_cat("c_RegimenFiscal", terc.get("RegimenFiscalACuentaTerceros"), "CFDI40191",
                            f"{path}/cfdi:ACuentaTerceros/@RegimenFiscalACuentaTerceros", "RegimenFiscalACuentaTerceros")
            for j, ia in enumerate(cp.iterchildren(C + "InformacionAduanera"), 1):
                ped = ia.get("NumeroPedimento") or ""
                if not re.match(r"^[0-9]{2}  [0-9]{2}  [0-9]{4}  [0-9]{7}$", ped):
                    self.add("CFDI40194", f"NumeroPedimento {ped!r} no tiene el formato 'AA  AA  AAAA  AAAAAAA'",
                             f"{path}/cfdi:InformacionAduanera[{j}]/@NumeroPedimento")

        g = r.get
        sub = _d(g("SubTotal"))
        total = _d(g("Total"))
        desc_total = _d(g("Descuento"))
        if tipo in ("T", "P"):
            if sub is not None and sub != 0:
                self.add("CFDI40109", f"En un comprobante de tipo {tipo} el SubTotal debe ser 0", f"{ROOT}/@SubTotal")
            if total is not None and total != 0:
                self.add("CFDI40119", f"En un comprobante de tipo {tipo} el Total debe ser 0", f"{ROOT}/@Total")
            if r.find(C + "Impuestos") is not None:
                self.add("CFDI40201", f"Un comprobante de tipo {tipo} no debe incluir el nodo Impuestos", f"{ROOT}/cfdi:Impuestos")
            return
        q = _q(dec)
        if sub is not None and sub != sum_importe.quantize(q, rounding=ROUND_HALF_UP):
            self.add("CFDI40108", f"SubTotal {sub} no es igual a la suma de los importes de los conceptos "
                     f"({sum_importe.quantize(q, rounding=ROUND_HALF_UP)})", f"{ROOT}/@SubTotal")
        if desc_total is not None and sub is not None and desc_total > sub:
            self.add("CFDI40110", "El Descuento es mayor que el SubTotal", f"{ROOT}/@Descuento")
        if any_desc and (desc_total is None or desc_total != sum_desc.quantize(q, rounding=ROUND_HALF_UP)):
            self.add("TIMBRA101", f"Descuento debe ser la suma de los descuentos de los conceptos ({sum_desc.quantize(q)})",
                     f"{ROOT}/@Descuento")
        tit, tir = self._impuestos_globales(dec, tras, rets)
        if sub is not None and total is not None:
            expected = sub - (desc_total or 0) + (tit or 0) - (tir or 0)
            if total != expected.quantize(q, rounding=ROUND_HALF_UP):
                self.add("CFDI40119", f"Total {total} no es igual a SubTotal − Descuento + TotalImpuestosTrasladados − "
                         f"TotalImpuestosRetenidos ({expected.quantize(q, rounding=ROUND_HALF_UP)})", f"{ROOT}/@Total")

    def _tax(self, t, kind, path, tras, rets) -> None:
        g = t.get
        base_s, imp_s, tasa_s = g("Base"), g("Importe"), g("TasaOCuota")
        base, importe, tasa = _d(base_s), _d(imp_s), _d(tasa_s)
        impuesto, factor = g("Impuesto"), g("TipoFactor")
        T = kind == "T"
        if base is None or base <= 0:
            self.add("CFDI40174" if T else "CFDI40181", "La Base del impuesto debe ser mayor que cero", f"{path}/@Base")
        if impuesto not in ("001", "002", "003"):
            self.add("CFDI40175" if T else "CFDI40182", f"Impuesto {impuesto!r} no existe en c_Impuesto", f"{path}/@Impuesto")
        if factor not in ("Tasa", "Cuota", "Exento"):
            self.add("CFDI40176" if T else "CFDI40183", f"TipoFactor {factor!r} no existe en c_TipoFactor", f"{path}/@TipoFactor")
            return
        if factor == "Exento":
            if not T:
                self.add("CFDI40184", "Una retención no puede tener TipoFactor Exento", f"{path}/@TipoFactor")
                return
            if tasa_s is not None or imp_s is not None:
                self.add("CFDI40177", "Con TipoFactor Exento no deben registrarse TasaOCuota ni Importe", path)
        elif T and (tasa_s is None or imp_s is None):
            self.add("CFDI40178", "Con TipoFactor Tasa o Cuota deben registrarse TasaOCuota e Importe", path)
        if tasa is not None and impuesto in ("001", "002", "003") and factor != "Exento":
            if not cat.tasa_o_cuota_valida(kind, impuesto, factor, tasa):
                self.add("CFDI40179" if T else "CFDI40185", f"TasaOCuota {tasa_s} no es válida para el impuesto {impuesto} "
                         f"con factor {factor} (c_TasaOCuota)", f"{path}/@TasaOCuota")
        if base is not None and tasa is not None and importe is not None:
            pb, pi = _places(base_s), _places(imp_s)
            lo = ((base - _half(pb)) * tasa).quantize(_q(pi), rounding=ROUND_FLOOR)
            hi = ((base + _half(pb)) * tasa).quantize(_q(pi), rounding=ROUND_CEILING)
            if not (lo <= importe <= hi):
                self.add("CFDI40180" if T else "CFDI40186", f"Importe {importe} fuera de límites para Base × TasaOCuota "
                         f"({base} × {tasa_s}); debe estar entre {lo} y {hi}", f"{path}/@Importe")
        if T:
            key = (impuesto, factor, tasa)
            acc = tras.setdefault(key, [Decimal(0), Decimal(0), False])
            acc[0] += base or 0
            if importe is not None:
                acc[1] += importe
                acc[2] = True
        else:
            rets[impuesto] = rets.get(impuesto, Decimal(0)) + (importe or 0)

    def _impuestos_globales(self, dec, tras, rets):
        imp = self.root.find(C + "Impuestos")
        q = _q(dec)
        path = f"{ROOT}/cfdi:Impuestos"
        if imp is None:
            if tras or rets:
                self.add("TIMBRA105", "Los conceptos tienen impuestos pero falta el nodo Impuestos del comprobante", path)
            return None, None
        tit_s, tir_s = imp.get("TotalImpuestosTrasladados"), imp.get("TotalImpuestosRetenidos")
        tit, tir = _d(tit_s), _d(tir_s)
        if tir_s is not None and _places(tir_s) > dec:
            self.add("CFDI40202", "TotalImpuestosRetenidos excede los decimales de la moneda", f"{path}/@TotalImpuestosRetenidos")
        if tit_s is not None and _places(tit_s) > dec:
            self.add("CFDI40204", "TotalImpuestosTrasladados excede los decimales de la moneda", f"{path}/@TotalImpuestosTrasladados")
        g_rets = imp.findall(f"{C}Retenciones/{C}Retencion")
        g_tras = imp.findall(f"{C}Traslados/{C}Traslado")
        if g_rets and tir_s is None:
            self.add("CFDI40206", "Existen retenciones pero falta TotalImpuestosRetenidos", path)
        seen = set()
        sum_r = Decimal(0)
        for j, t in enumerate(g_rets, 1):
            p = f"{path}/cfdi:Retenciones/cfdi:Retencion[{j}]"
            impuesto, v_s = t.get("Impuesto"), t.get("Importe")
            v = _d(v_s) or Decimal(0)
            sum_r += v
            if impuesto in seen:
                self.add("CFDI40208", f"Hay más de una retención para el impuesto {impuesto}", f"{p}/@Impuesto")
            seen.add(impuesto)
            if v_s is not None and _places(v_s) > dec:
                self.add("CFDI40210", "El Importe de la retención excede los decimales de la moneda", f"{p}/@Importe")
            exp = rets.get(impuesto, Decimal(0)).quantize(q, rounding=ROUND_HALF_UP)
            if v != exp:
                self.add("CFDI40211", f"Importe {v} de la retención {impuesto} no es igual a la suma de las retenciones de los "
                         f"conceptos ({exp})", f"{p}/@Importe")
        for impuesto in rets:
            if impuesto not in seen:
                self.add("CFDI40211", f"Falta la retención del impuesto {impuesto} en el nodo Impuestos del comprobante", path)
        if tir is not None and tir != sum_r:
            self.add("CFDI40203", f"TotalImpuestosRetenidos {tir} no es igual a la suma de las retenciones ({sum_r})",
                     f"{path}/@TotalImpuestosRetenidos")
        seen_t = set()
        sum_t = Decimal(0)
        any_imp = False
        for j, t in enumerate(g_tras, 1):
            p = f"{path}/cfdi:Traslados/cfdi:Traslado[{j}]"
            impuesto, factor = t.get("Impuesto"), t.get("TipoFactor")
            tasa = _d(t.get("TasaOCuota"))
            key = (impuesto, factor, tasa)
            if key in seen_t:
                self.add("CFDI40218", f"Hay más de un traslado con impuesto {impuesto}, factor {factor} y tasa {t.get('TasaOCuota')}", p)
            seen_t.add(key)
            b_s, v_s = t.get("Base"), t.get("Importe")
            if b_s is None or impuesto is None or factor is None:
                self.add("CFDI40213", "Cada traslado debe registrar Base, Impuesto y TipoFactor", p)
            if b_s is not None and _places(b_s) > dec:
                self.add("CFDI40214", "La Base del traslado excede los decimales de la moneda", f"{p}/@Base")
            if v_s is not None and _places(v_s) > dec:
                self.add("CFDI40220", "El Importe del traslado excede los decimales de la moneda", f"{p}/@Importe")
            acc = tras.get(key)
            exp_b = (acc[0] if acc else Decimal(0)).quantize(q, rounding=ROUND_HALF_UP)
            if _d(b_s) != exp_b:
                self.add("CFDI40215", f"Base {b_s} no es igual a la suma de las bases de los conceptos con el mismo impuesto, "
                         f"factor y tasa ({exp_b})", f"{p}/@Base")
            if v_s is not None:
                any_imp = True
                v = _d(v_s) or Decimal(0)
                sum_t += v
                exp_v = (acc[1] if acc else Decimal(0)).quantize(q, rounding=ROUND_HALF_UP)
                if v != exp_v:
                    self.add("CFDI40221", f"Importe {v} no es igual a la suma de los importes trasladados por los conceptos "
                             f"con el mismo impuesto, factor y tasa ({exp_v})", f"{p}/@Importe")
        for key in tras:
            if key not in seen_t:
                self.add("CFDI40215", f"Falta el traslado {key[0]}/{key[1]}/{key[2]} en el nodo Impuestos del comprobante", path)
        if any_imp and tit_s is None:
            self.add("CFDI40212", "Existen traslados con Importe pero falta TotalImpuestosTrasladados", path)
        if tit is not None and tit != sum_t:
            self.add("CFDI40205", f"TotalImpuestosTrasladados {tit} no es igual a la suma de los traslados ({sum_t})",
                     f"{path}/@TotalImpuestosTrasladados")
        return tit, tir

    # -- Pagos 2.0 ----------------------------------------------------------
    def _pagos(self) -> None:
        r = self.root
        pagos = r.find(f"{C}Complemento/{P}Pagos")
        if r.get("Moneda") != "XXX":
            self.add("CFDI40113", "Un comprobante de tipo P debe registrar Moneda XXX", f"{ROOT}/@Moneda")
        if pagos is None:
            self.add("TIMBRA201", "Un comprobante de tipo P requiere el complemento Pagos 2.0", f"{ROOT}/cfdi:Complemento")
            return
        base = f"{ROOT}/cfdi:Complemento/pago20:Pagos"
        if pagos.get("Version") != "2.0":
            self.add("TIMBRA201", "La versión del complemento de pagos debe ser 2.0", f"{base}/@Version")
        totals: dict[str, Decimal] = {}
        monto_total = Decimal(0)
        for i, pago in enumerate(pagos.iterchildren(P + "Pago"), 1):
            pp = f"{base}/pago20:Pago[{i}]"
            g = pago.get
            mon = g("MonedaP")
            forma = g("FormaDePagoP")
            if forma == "99":
                self.add("TIMBRA202", "FormaDePagoP no puede ser 99 en un pago", f"{pp}/@FormaDePagoP")
            else:
                self.in_cat("c_FormaPago", forma, "TIMBRA202", f"{pp}/@FormaDePagoP", "FormaDePagoP")
            if mon == "XXX":
                self.add("TIMBRA203", "MonedaP no puede ser XXX", f"{pp}/@MonedaP")
            try:
                pdec = cat.moneda_decimales(mon or "MXN")
            except KeyError:
                self.add("TIMBRA203", f"MonedaP {mon!r} no existe en c_Moneda", f"{pp}/@MonedaP")
                pdec = 2
            tc = _d(g("TipoCambioP"))
            if mon == "MXN" and g("TipoCambioP") is not None and tc != 1:
                self.add("TIMBRA204", "Con MonedaP MXN el TipoCambioP debe ser 1", f"{pp}/@TipoCambioP")
            if mon != "MXN" and tc is None:
                self.add("TIMBRA204", "TipoCambioP es requerido cuando MonedaP no es MXN", f"{pp}/@TipoCambioP")
            tc = tc or Decimal(1)
            monto = _d(g("Monto")) or Decimal(0)
            monto_total += monto * tc
            sum_pagado = Decimal(0)
            ret_dr: dict[str, Decimal] = {}
            tra_dr: dict[tuple, list] = {}
            for j, d in enumerate(pago.iterchildren(P + "DoctoRelacionado"), 1):
                pd = f"{pp}/pago20:DoctoRelacionado[{j}]"
                ant, pag, ins = _d(d.get("ImpSaldoAnt")), _d(d.get("ImpPagado")), _d(d.get("ImpSaldoInsoluto"))
                eq = _d(d.get("EquivalenciaDR")) or Decimal(1)
                if d.get("MonedaDR") != mon and d.get("EquivalenciaDR") is None:
                    self.add("TIMBRA205", "EquivalenciaDR es requerida cuando MonedaDR es distinta de MonedaP", f"{pd}/@EquivalenciaDR")
                if None not in (ant, pag, ins) and ant - pag != ins:
                    self.add("TIMBRA206", f"ImpSaldoInsoluto {ins} debe ser ImpSaldoAnt − ImpPagado ({ant - pag})", f"{pd}/@ImpSaldoInsoluto")
                if ins is not None and ins < 0:
                    self.add("TIMBRA206", "ImpSaldoInsoluto no puede ser negativo", f"{pd}/@ImpSaldoInsoluto")
                sum_pagado += (pag or 0) / eq
                obj = d.get("ObjetoImpDR")
                impdr = d.find(P + "ImpuestosDR")
                if obj == "02" and impdr is None:
                    self.add("TIMBRA207", "Con ObjetoImpDR 02 debe existir ImpuestosDR", f"{pd}/@ObjetoImpDR")
                if obj != "02" and impdr is not None:
                    self.add("TIMBRA207", f"Con ObjetoImpDR {obj} no debe existir ImpuestosDR", f"{pd}/pago20:ImpuestosDR")
                for t in d.iterfind(f"{P}ImpuestosDR/{P}RetencionesDR/{P}RetencionDR"):
                    ret_dr[t.get("ImpuestoDR")] = ret_dr.get(t.get("ImpuestoDR"), Decimal(0)) + (_d(t.get("ImporteDR")) or 0) / eq
                for t in d.iterfind(f"{P}ImpuestosDR/{P}TrasladosDR/{P}TrasladoDR"):
                    key = (t.get("ImpuestoDR"), t.get("TipoFactorDR"), _d(t.get("TasaOCuotaDR")))
                    acc = tra_dr.setdefault(key, [Decimal(0), Decimal(0)])
                    acc[0] += (_d(t.get("BaseDR")) or 0) / eq
                    acc[1] += (_d(t.get("ImporteDR")) or 0) / eq
            if monto < sum_pagado.quantize(_q(pdec), rounding=ROUND_FLOOR):
                self.add("TIMBRA208", f"Monto {monto} es menor que la suma de ImpPagado/EquivalenciaDR ({sum_pagado.quantize(_q(pdec))})",
                         f"{pp}/@Monto")
            # ImpuestosP must summarise the DR taxes (tolerance: one unit of the last decimal per document)
            tol = _q(pdec)
            got_r = {t.get("ImpuestoP"): _d(t.get("ImporteP")) or Decimal(0)
                     for t in pago.iterfind(f"{P}ImpuestosP/{P}RetencionesP/{P}RetencionP")}
            for k, v in ret_dr.items():
                if k not in got_r or abs(got_r[k] - v) > tol:
                    self.add("TIMBRA209", f"RetencionP {k} debe ser la suma de ImporteDR/EquivalenciaDR ({v.quantize(tol)})",
                             f"{pp}/pago20:ImpuestosP")
            got_t = {}
            for t in pago.iterfind(f"{P}ImpuestosP/{P}TrasladosP/{P}TrasladoP"):
                got_t[(t.get("ImpuestoP"), t.get("TipoFactorP"), _d(t.get("TasaOCuotaP")))] = (
                    _d(t.get("BaseP")) or Decimal(0), _d(t.get("ImporteP")) or Decimal(0))
            for k, (b, v) in tra_dr.items():
                gv = got_t.get(k)
                if gv is None or abs(gv[0] - b) > tol or abs(gv[1] - v) > tol:
                    self.add("TIMBRA209", f"TrasladoP {k[0]}/{k[1]}/{k[2]} debe ser la suma de los TrasladoDR convertidos "
                             f"(Base {b.quantize(tol)}, Importe {v.quantize(tol)})", f"{pp}/pago20:ImpuestosP")
            for k, (b, v) in got_t.items():
                if k[0] != "002":
                    continue
                if k[1] == "Exento":
                    totals["TotalTrasladosBaseIVAExento"] = totals.get("TotalTrasladosBaseIVAExento", Decimal(0)) + b * tc
                    continue
                names = {Decimal("0.16"): "IVA16", Decimal("0.08"): "IVA8", Decimal(0): "IVA0"}.get(k[2])
                if names:
                    totals["TotalTrasladosBase" + names] = totals.get("TotalTrasladosBase" + names, Decimal(0)) + b * tc
                    totals["TotalTrasladosImpuesto" + names] = totals.get("TotalTrasladosImpuesto" + names, Decimal(0)) + v * tc
            for k, v in got_r.items():
                name = {"001": "TotalRetencionesISR", "002": "TotalRetencionesIVA", "003": "TotalRetencionesIEPS"}.get(k)
                if name:
                    totals[name] = totals.get(name, Decimal(0)) + v * tc
        tot = pagos.find(P + "Totales")
        if tot is None:
            self.add("TIMBRA210", "Falta el nodo Totales del complemento de pagos", base)
            return
        q2 = Decimal("0.01")
        mtp = _d(tot.get("MontoTotalPagos"))
        exp = monto_total.quantize(q2, rounding=ROUND_HALF_UP)
        if mtp is None or abs(mtp - exp) > q2:
            self.add("TIMBRA210", f"MontoTotalPagos {tot.get('MontoTotalPagos')} debe ser la suma de Monto × TipoCambioP ({exp})",
                     f"{base}/pago20:Totales/@MontoTotalPagos")
        names = ("TotalRetencionesIVA", "TotalRetencionesISR", "TotalRetencionesIEPS", "TotalTrasladosBaseIVA16",
                 "TotalTrasladosImpuestoIVA16", "TotalTrasladosBaseIVA8", "TotalTrasladosImpuestoIVA8",
                 "TotalTrasladosBaseIVA0", "TotalTrasladosImpuestoIVA0", "TotalTrasladosBaseIVAExento")
        for n in names:
            got = _d(tot.get(n))
            want = totals.get(n)
            if want is None and got is None:
                continue
            if want is None or got is None or abs(got - want.quantize(q2, rounding=ROUND_HALF_UP)) > q2:
                self.add("TIMBRA210", f"{n} debe ser {want.quantize(q2, rounding=ROUND_HALF_UP) if want is not None else 'omitido'}",
                         f"{base}/pago20:Totales/@{n}")


def validate(
    xml,
    *,
    xsd: bool = False,
    catalogs: bool = True,
    at: datetime | None = None,
    check_dates: bool = True,
) -> list[Finding]:
    """Validate a CFDI 4.0 and return coded findings (empty list = valid).

    * ``xsd``: also validate against SAT's XSD (satcfdi's copy); ~ms per call.
    * ``catalogs``: check codes against SAT catalogs.
    * ``at``: reference instant for the Fecha rules (default now; a stamped
      CFDI is checked against its FechaTimbrado instead).
    * ``check_dates``: set False to skip the 72 h / future Fecha rules.

    Raises :class:`XmlError`, :class:`NotCfdiError` or
    :class:`UnsupportedVersionError` when the input is not a CFDI 4.0 at all.
    """
    root = as_element(xml)
    ensure_cfdi40(root)
    findings: list[Finding] = []
    if xsd:
        from .xsd import xsd_errors

        for path, msg in xsd_errors(root):
            findings.append(Finding("XSD", f"No cumple el esquema XSD del SAT: {msg}", path))
    findings.extend(_V(root, catalogs, at, check_dates).run())
    return findings
