"""Issuer rules that need no I/O: RFC shape, slugs, what blocks stamping."""

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from timbra_shared.errors import Problem

RFC_MORAL = re.compile(r"^[A-ZÑ&]{3}\d{6}[A-Z\d]{3}$")
RFC_FISICA = re.compile(r"^[A-ZÑ&]{4}\d{6}[A-Z\d]{3}$")
GENERIC_RFCS = {"XAXX010101000", "XEXX010101000"}
CSD_WARNING_DAYS = (30, 7)


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

    def warning(self, now: datetime) -> str | None:
        days = self.days_left(now)
        if days < 0:
            return "Aviso de sellos vencidos: tu certificado de sello digital (CSD) venció; sube uno vigente para seguir timbrando."
        if days <= CSD_WARNING_DAYS[0]:
            return f"Tu certificado de sello digital (CSD) vence en {days} días; renuévalo en el SAT y súbelo aquí."
        return None


def missing_acceptances(acceptances: dict[str, object]) -> list[Problem]:
    problems = []
    if not acceptances.get("privacy_notice"):
        problems.append(Problem("TIMBRA_PRIVACY_NOTICE_PENDING", "Falta aceptar el aviso de privacidad antes de timbrar."))
    if not acceptances.get("carta_manifiesto"):
        problems.append(Problem("TIMBRA_CARTA_MANIFIESTO_PENDING", "Falta aceptar la carta manifiesto con el PAC antes de timbrar."))
    return problems
