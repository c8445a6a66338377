"""Issuer rules that need no I/O: RFC shape, slugs, what blocks stamping."""

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from timbra_shared.errors import Problem

# The same shape SAT's validation (and the CFDI core) applies: a real date, and a homoclave whose
# last character (the check digit) is a digit or "A".
_DATE_HOMOCLAVE = r"\d{2}(0[1-9]|1[012])(0[1-9]|[12]\d|3[01])[A-Z\d]{2}[\dA]$"
RFC_MORAL = re.compile(r"^[A-ZÑ&]{3}" + _DATE_HOMOCLAVE)
RFC_FISICA = re.compile(r"^[A-ZÑ&]{4}" + _DATE_HOMOCLAVE)
GENERIC_RFCS = {"XAXX010101000", "XEXX010101000"}
CSD_WARNING_DAYS = (30, 7)
CSD_HELP_URL = "https://www.sat.gob.mx/tramites/17507/obten-tu-certificado-de-sello-digital"
DOCUMENT_TYPES = {"I": "Ingreso", "E": "Egreso", "T": "Traslado", "P": "Pago"}
PHONE = re.compile(r"^\+?\d{10,15}$")
SERIE = re.compile(r"^[^|\s]{1,25}$")

# Each CsdError code of the CFDI core, as the issuer reads it (the API answers 422 with the code).
CSD_MESSAGES = {
    "wrong_password": "La contraseña de la llave privada (.key) es incorrecta. Usa la contraseña que definiste al generar el CSD (no la de tu e.firma).",
    "key_mismatch": "La llave privada (.key) no corresponde al certificado (.cer). Sube el par de archivos del mismo CSD.",
    "fiel_not_csd": "El certificado es de tu e.firma (FIEL), no un Certificado de Sello Digital (CSD). Para facturar se requiere el CSD que tramitas en el SAT con tu e.firma.",
    "rfc_mismatch": "El certificado pertenece al RFC {cert_rfc}, no al RFC del emisor {rfc}. Sube el CSD de este emisor.",
    "expired": "El certificado de sello digital (CSD) está vencido (venció el {date}). Tramita uno nuevo en el SAT y súbelo aquí.",
    "not_yet_valid": "El certificado de sello digital (CSD) aún no es vigente (inicia el {date}). Súbelo cuando entre en vigor.",
    "invalid_certificate": "El archivo .cer no es un certificado válido. Sube el archivo .cer de tu CSD tal como lo descargaste del SAT.",
    "invalid_key": "El archivo .key no es una llave privada válida. Sube el archivo .key de tu CSD tal como lo generaste.",
}


def normalize_rfc(rfc: str) -> str:
    return re.sub(r"[\s-]", "", rfc).upper()


def persona_of(rfc: str) -> str | None:
    if RFC_MORAL.match(rfc):
        return "moral"
    if RFC_FISICA.match(rfc):
        return "fisica"
    return None


def validate_fiscal_data(rfc: str, tax_regime: str, zip_code: str) -> list[Problem]:
    problems: list[Problem] = []
    persona = persona_of(rfc)
    if persona is None or rfc in GENERIC_RFCS:
        problems.append(Problem("TIMBRA_RFC_INVALID", "El RFC del emisor no tiene un formato válido (12 caracteres para persona moral, 13 para física).", path="rfc"))
    from timbra_shared.cfdi import catalogs

    regime = catalogs.regimen_persona(tax_regime)
    if regime is None:
        problems.append(Problem("CFDI40141", f"El régimen fiscal {tax_regime} no existe en el catálogo c_RegimenFiscal.", "sat", "tax_regime"))
    elif persona is not None:
        fisica, moral = regime
        if (persona == "fisica" and not fisica) or (persona == "moral" and not moral):
            problems.append(Problem("CFDI40141", f"El régimen fiscal {tax_regime} no aplica a una persona {'física' if persona == 'fisica' else 'moral'}.", "sat", "tax_regime"))
    if not catalogs.codigo_postal(zip_code):
        problems.append(Problem("CFDI40126", f"El código postal {zip_code} no existe en el catálogo c_CodigoPostal.", "sat", "zip"))
    return problems


def csd_message(code: str, *, rfc: str = "", cert_rfc: str = "", date: str = "", fallback: str = "") -> str:
    template = CSD_MESSAGES.get(code)
    return template.format(rfc=rfc, cert_rfc=cert_rfc or "desconocido", date=date) if template else fallback


def normalize_phone(phone: str) -> str:
    return re.sub(r"[\s\-().]", "", phone)


def validate_phone(phone: str | None, path: str = "phone") -> list[Problem]:
    if phone is None or phone == "":
        return []
    if not PHONE.match(normalize_phone(phone)):
        return [Problem("TIMBRA_PHONE_INVALID", "El teléfono debe tener 10 dígitos (o lada internacional con +).", path=path)]
    return []


ADDRESS_FIELDS = ("street", "exterior", "interior", "neighborhood", "zip", "reference", "locality", "municipality", "state", "country")


def validate_address(address: dict[str, object], path: str) -> list[Problem]:
    """Calle, número exterior, código postal, municipio y estado are required; the CP must exist (Mexico)."""
    from timbra_shared.cfdi import catalogs

    problems = []
    for name, label in (("street", "la calle"), ("exterior", "el número exterior"), ("zip", "el código postal"), ("municipality", "el municipio"), ("state", "el estado")):
        if not str(address.get(name) or "").strip():
            problems.append(Problem("TIMBRA_ADDRESS_INCOMPLETE", f"Falta {label} en la dirección.", path=f"{path}.{name}"))
    country = str(address.get("country") or "MEX").upper()
    zip_code = str(address.get("zip") or "").strip()
    if zip_code and country == "MEX" and not catalogs.codigo_postal(zip_code):
        problems.append(Problem("CFDI40126", f"El código postal {zip_code} no existe en el catálogo c_CodigoPostal.", "sat", f"{path}.zip"))
    return problems


def validate_document_types(types: list[str]) -> list[Problem]:
    unknown = [t for t in types if t not in DOCUMENT_TYPES]
    if unknown:
        return [Problem("TIMBRA_TYPE_UNKNOWN", f"Tipo de comprobante desconocido: {', '.join(unknown)}. Usa I (Ingreso), E (Egreso), T (Traslado) o P (Pago).", path="enabled_types")]
    if not types:
        return [Problem("TIMBRA_TYPE_REQUIRED", "Habilita al menos un tipo de comprobante.", path="enabled_types")]
    return []


def validate_series(series: dict[str, str]) -> list[Problem]:
    problems = []
    for doc_type, serie in series.items():
        if doc_type not in DOCUMENT_TYPES:
            problems.append(Problem("TIMBRA_TYPE_UNKNOWN", f"Tipo de comprobante desconocido: {doc_type}.", path=f"series.{doc_type}"))
        elif not SERIE.match(serie):
            problems.append(Problem("TIMBRA_SERIE_INVALID", "La serie debe tener de 1 a 25 caracteres, sin espacios ni '|'.", path=f"series.{doc_type}"))
    return problems


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:40] or "emisor"


@dataclass(frozen=True)
class CsdStatus:
    serial: str
    valid_from: datetime
    valid_to: datetime

    def days_left(self, now: datetime) -> int:
        return (self.valid_to - now).days

    def expired(self, now: datetime) -> bool:
        return now > self.valid_to

    def threshold(self, now: datetime) -> int | None:
        """The most severe warning threshold reached: 0 (expired), 7, 30, or None."""
        if self.expired(now):
            return 0
        days = self.days_left(now)
        for limit in sorted(CSD_WARNING_DAYS):
            if days <= limit:
                return limit
        return None

    def warning(self, now: datetime) -> str | None:
        days = self.days_left(now)
        if self.expired(now):
            return "Aviso de sellos vencidos: tu certificado de sello digital (CSD) venció; sube uno vigente para seguir timbrando."
        if days <= CSD_WARNING_DAYS[0]:
            return f"Tu certificado de sello digital (CSD) vence en {days} días; renuévalo en el SAT y súbelo aquí."
        return None

    def notice(self, now: datetime) -> dict[str, object] | None:
        """The seed's "Aviso de sellos vencidos" pop-up, shown when seals are expired or about to expire."""
        threshold = self.threshold(now)
        message = self.warning(now)
        if threshold is None or message is None:
            return None
        return {
            "code": "csd_expired" if threshold == 0 else "csd_expiring",
            "severity": "error" if threshold == 0 else ("critical" if threshold == 7 else "warning"),
            "title": "Aviso de sellos vencidos",
            "message": message,
            "days_left": max(self.days_left(now), 0),
            "valid_to": self.valid_to.isoformat(),
            "help": "Cómo tramitar o renovar un Certificado de Sello Digital",
            "help_url": CSD_HELP_URL,
        }


def missing_acceptances(acceptances: dict[str, object]) -> list[Problem]:
    problems = []
    if not acceptances.get("privacy_notice"):
        problems.append(Problem("TIMBRA_PRIVACY_NOTICE_PENDING", "Falta aceptar el aviso de privacidad antes de timbrar."))
    if not acceptances.get("carta_manifiesto"):
        problems.append(Problem("TIMBRA_CARTA_MANIFIESTO_PENDING", "Falta aceptar la carta manifiesto con el PAC antes de timbrar."))
    return problems


def active_certificate(csds: list[dict[str, Any]], now: datetime) -> dict[str, Any] | None:
    """The certificate that seals: among those valid now, the most recently issued (a renewed CSD
    takes over as soon as it is uploaded, while the old one is still valid)."""
    valid = [c for c in csds if c["valid_from"] <= now <= c["valid_to"] and not c.get("disabled_at")]
    if not valid:
        return None
    return max(valid, key=lambda c: (c["valid_from"], c.get("uploaded_at") or c["valid_from"]))


def expiry_certificate(csds: list[dict[str, Any]], now: datetime) -> dict[str, Any] | None:
    """The certificate whose expiry matters: the one that lasts longest. An issuer who already
    uploaded the renewal is not warned about the old certificate."""
    started = [c for c in csds if c["valid_from"] <= now and not c.get("disabled_at")]
    if not started:
        return None
    return max(started, key=lambda c: c["valid_to"])


def expiry_email(legal_name: str, rfc: str, serial: str, threshold: int, valid_to: datetime, now: datetime) -> tuple[str, str]:
    """Subject and body (final Spanish copy) of the CSD-expiry email."""
    date = valid_to.strftime("%d/%m/%Y")
    if threshold == 0:
        subject = f"Aviso de sellos vencidos: el CSD de {rfc} venció"
        lead = f"El certificado de sello digital (CSD) número {serial} de {legal_name} ({rfc}) venció el {date}. Mientras no subas uno vigente no podrás timbrar facturas."
    else:
        days = max((valid_to - now).days, 0)
        subject = f"Tu CSD vence en {days} días ({rfc})"
        lead = f"El certificado de sello digital (CSD) número {serial} de {legal_name} ({rfc}) vence el {date}, en {days} días. Cuando venza ya no podrás timbrar facturas."
    body = (
        f"Hola:\n\n{lead}\n\n"
        "Tramita o renueva tu CSD en el SAT con tu e.firma (programa Certifica) y súbelo en Timbra, en Configuración > Certificados.\n"
        f"Cómo tramitar o renovar un Certificado de Sello Digital: {CSD_HELP_URL}\n\n"
        "— Timbra\n"
    )
    return subject, body
