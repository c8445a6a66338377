"""TimbreFiscalDigital 1.1 helpers (for a sandbox PAC and for readers of stamped CFDIs)."""

from __future__ import annotations

import base64
import uuid as _uuid
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from .cadena import tfd_cadena
from .csd import Csd, load_certificate
from .errors import CfdiError
from .fecha import fecha_local
from .xmlparse import NS_CFDI4, NS_TFD, NS_XSI, TAG_TFD, as_element, ensure_cfdi40

__all__ = ["Tfd", "build_tfd", "insert_tfd", "stamp", "find_tfd", "tfd_cadena", "verify_tfd", "TFD_SCHEMA_LOCATION"]

TFD_SCHEMA_LOCATION = (
    "http://www.sat.gob.mx/TimbreFiscalDigital "
    "http://www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd"
)


@dataclass(frozen=True, slots=True)
class Tfd:
    UUID: str
    FechaTimbrado: str
    RfcProvCertif: str
    SelloCFD: str
    NoCertificadoSAT: str
    SelloSAT: str
    Leyenda: str | None = None
    Version: str = "1.1"

    @property
    def cadena(self) -> str:
        return tfd_cadena(self.element())

    def element(self) -> etree._Element:
        el = etree.Element(TAG_TFD, nsmap={"tfd": NS_TFD, "xsi": NS_XSI})
        el.set("{%s}schemaLocation" % NS_XSI, TFD_SCHEMA_LOCATION)
        el.set("Version", self.Version)
        el.set("UUID", self.UUID)
        el.set("FechaTimbrado", self.FechaTimbrado)
        el.set("RfcProvCertif", self.RfcProvCertif)
        if self.Leyenda:
            el.set("Leyenda", self.Leyenda)
        el.set("SelloCFD", self.SelloCFD)
        el.set("NoCertificadoSAT", self.NoCertificadoSAT)
        el.set("SelloSAT", self.SelloSAT)
        return el

    @classmethod
    def from_element(cls, el) -> "Tfd":
        g = el.get
        return cls(
            UUID=g("UUID", ""),
            FechaTimbrado=g("FechaTimbrado", ""),
            RfcProvCertif=g("RfcProvCertif", ""),
            SelloCFD=g("SelloCFD", ""),
            NoCertificadoSAT=g("NoCertificadoSAT", ""),
            SelloSAT=g("SelloSAT", ""),
            Leyenda=g("Leyenda"),
            Version=g("Version", "1.1"),
        )


def build_tfd(
    cfdi_xml,
    sat_csd: Csd,
    *,
    rfc_prov_certif: str,
    uuid: str | None = None,
    fecha_timbrado: str | datetime | None = None,
    leyenda: str | None = None,
) -> Tfd:
    """Build and sign a TFD 1.1 for a sealed CFDI.

    ``sat_csd`` is the certificate that signs the stamp (SAT's in production;
    a generated one in the sandbox). ``fecha_timbrado`` defaults to now in
    Mexico City time.
    """
    root = as_element(cfdi_xml)
    ensure_cfdi40(root)
    sello_cfd = root.get("Sello") or ""
    if not sello_cfd:
        raise CfdiError("not_sealed", "El comprobante no está sellado (Sello vacío)")
    if fecha_timbrado is None:
        fecha = fecha_local("06000")
    elif isinstance(fecha_timbrado, datetime):
        fecha = fecha_timbrado.strftime("%Y-%m-%dT%H:%M:%S")
    else:
        fecha = fecha_timbrado
    unsigned = Tfd(
        UUID=(uuid or str(_uuid.uuid4())).upper(),
        FechaTimbrado=fecha,
        RfcProvCertif=rfc_prov_certif,
        SelloCFD=sello_cfd,
        NoCertificadoSAT=sat_csd.serial,
        SelloSAT="",
        Leyenda=leyenda,
    )
    sello_sat = sat_csd.sign(unsigned.cadena.encode("utf-8"))
    return Tfd(**{**{f: getattr(unsigned, f) for f in Tfd.__dataclass_fields__}, "SelloSAT": sello_sat})


def insert_tfd(cfdi_xml, tfd: Tfd | etree._Element) -> bytes:
    """Return the CFDI with the TFD appended inside cfdi:Complemento (created if needed)."""
    root = as_element(cfdi_xml)
    ensure_cfdi40(root)
    el = tfd.element() if isinstance(tfd, Tfd) else tfd
    comp = root.find("{%s}Complemento" % NS_CFDI4)
    if comp is None:
        comp = etree.Element("{%s}Complemento" % NS_CFDI4)
        addenda = root.find("{%s}Addenda" % NS_CFDI4)
        if addenda is not None:
            addenda.addprevious(comp)
        else:
            root.append(comp)
    comp.append(el)
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def find_tfd(cfdi_xml) -> Tfd | None:
    root = as_element(cfdi_xml)
    el = root.find("{%s}Complemento/%s" % (NS_CFDI4, TAG_TFD))
    return None if el is None else Tfd.from_element(el)


def stamp(cfdi_xml, sat_csd: Csd, *, rfc_prov_certif: str, **kw) -> tuple[bytes, Tfd]:
    """build_tfd + insert_tfd: returns (stamped_xml, tfd)."""
    root = as_element(cfdi_xml)
    tfd = build_tfd(root, sat_csd, rfc_prov_certif=rfc_prov_certif, **kw)
    return insert_tfd(root, tfd), tfd


def verify_tfd(tfd: Tfd | etree._Element, certificate_der: bytes, *, sello_cfd: str | None = None) -> bool:
    """Check SelloSAT with the stamping certificate; optionally that SelloCFD matches."""
    t = tfd if isinstance(tfd, Tfd) else Tfd.from_element(tfd)
    if sello_cfd is not None and t.SelloCFD != sello_cfd:
        return False
    cert = load_certificate(certificate_der)
    try:
        cert.public_key().verify(
            base64.b64decode(t.SelloSAT), t.cadena.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
        )
        return True
    except (InvalidSignature, ValueError):
        return False
