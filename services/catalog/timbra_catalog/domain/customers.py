"""Customers (receptores): the SAT rules a receptor must meet before it can appear on a CFDI.

Every rule answers with a coded Spanish ``Problem``. SAT's own code (Matriz de errores CFDI 4.0)
is used where the rule is SAT's; ``TIMBRA_*`` codes where the rule is ours.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from timbra_shared.cfdi import catalogs
from timbra_shared.errors import Problem

PUBLICO_EN_GENERAL = "XAXX010101000"
EXTRANJERO = "XEXX010101000"
GENERIC = frozenset({PUBLICO_EN_GENERAL, EXTRANJERO})
NOMBRE_PUBLICO = "PUBLICO EN GENERAL"

# persona moral: 3 letters; persona física: 4 letters; then YYMMDD and a 3-character homoclave
# whose last character is a digit or "A".
_DATE = r"[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
RFC_MORAL = re.compile(rf"^[A-ZÑ&]{{3}}{_DATE}[A-Z0-9]{{2}}[0-9A]$")
RFC_FISICA = re.compile(rf"^[A-ZÑ&]{{4}}{_DATE}[A-Z0-9]{{2}}[0-9A]$")
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")

# Régimen de capital suffixes SAT's Nombre never carries (the constancia de situación fiscal
# shows the name without them). Longest first, so "S.A.P.I. DE C.V." wins over "S.A.".
_SUFFIXES = [
    "S.A.P.I.B. DE C.V.", "S.A.P.I. DE C.V.", "S.A.B. DE C.V.", "S. DE R.L. DE C.V.", "S. EN C. POR A.",
    "S. DE R.L. MI", "S.A. DE C.V.", "S. DE R.L.", "S. EN C.", "S. EN N.C.", "S.C. DE R.L.", "S.C. DE C.V.",
    "SOFOM E.N.R.", "S.A.S. DE C.V.", "S.A.S.", "S.A.", "S.C.", "A.C.", "I.A.P.", "A. EN P.",
]


def _suffix_pattern(suffix: str) -> str:
    # "S.A. DE C.V." also matches "SA DE CV", "S.A. de C.V." and "S. A. DE C. V."
    parts = []
    for ch in suffix:
        if ch == ".":
            parts.append(r"\.?\s*")
        elif ch == " ":
            parts.append(r"\s*")
        else:
            parts.append(re.escape(ch))
    return "".join(parts)


SUFFIX = re.compile(r"(?:\s*,)?\s+(?:" + "|".join(_suffix_pattern(s) for s in _SUFFIXES) + r")\s*$", re.IGNORECASE)


def clean_rfc(rfc: str) -> str:
    """Spaces and dashes removed, upper-cased (``"ure-180429 tm6"`` -> ``"URE180429TM6"``)."""
    return re.sub(r"[\s\-]", "", rfc or "").upper()


def persona(rfc: str) -> str | None:
    if rfc in GENERIC:
        return "fisica"  # SAT treats the generic RFCs as persona física (régimen 616)
    if RFC_MORAL.match(rfc):
        return "moral"
    if RFC_FISICA.match(rfc):
        return "fisica"
    return None


def clean_name(name: str) -> str:
    """The Nombre as SAT expects it: no régimen de capital suffix, case and inner spacing kept,
    outer blanks trimmed."""
    name = (name or "").strip()
    stripped = SUFFIX.sub("", name).rstrip(" ,")
    return stripped or name


@dataclass
class Customer:
    rfc: str
    legal_name: str
    tax_regime: str
    zip: str | None
    default_use: str | None
    emails: list[str] = field(default_factory=list)
    tax_id: str | None = None
    tax_residence: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rfc": self.rfc, "legal_name": self.legal_name, "tax_regime": self.tax_regime, "zip": self.zip,
            "default_use": self.default_use, "emails": self.emails, "tax_id": self.tax_id, "tax_residence": self.tax_residence,
        }


FIELDS = ("rfc", "legal_name", "tax_regime", "zip", "default_use", "email", "emails", "tax_id", "tax_residence")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def validate_customer(data: dict[str, Any]) -> tuple[Customer | None, list[Problem]]:
    """Normalise and check a customer. Returns the customer, or None with the problems."""
    problems: list[Problem] = []

    def bad(code: str, message: str, path: str, source: str = "timbra") -> None:
        problems.append(Problem(code, message, source, path))  # type: ignore[arg-type]

    unknown = sorted(set(data) - set(FIELDS) - {"use"})
    for name in unknown:
        bad("TIMBRA_FIELD_UNKNOWN", f"El campo {name} no existe en un cliente.", name)

    rfc = clean_rfc(str(data.get("rfc") or ""))
    kind = persona(rfc)
    if not rfc:
        bad("TIMBRA_RFC_REQUIRED", "El RFC es obligatorio.", "rfc")
    elif kind is None:
        bad("CFDI40143", f"El RFC {rfc} no tiene un formato válido: persona moral son 3 letras, persona física 4, "
            "seguidas de la fecha AAMMDD y una homoclave de 3 caracteres.", "rfc", "sat")

    raw_name = _text(data.get("legal_name"))
    name = clean_name(raw_name or "")
    if not raw_name:
        bad("TIMBRA_LEGAL_NAME_REQUIRED", "El nombre o razón social es obligatorio.", "legal_name")
    elif len(name) > 254:
        bad("TIMBRA_LEGAL_NAME_TOO_LONG", "El nombre o razón social admite como máximo 254 caracteres.", "legal_name")
    elif "|" in name:
        bad("TIMBRA_LEGAL_NAME_INVALID", "El nombre no puede contener el carácter |.", "legal_name")

    regime = _text(data.get("tax_regime"))
    use = _text(data.get("default_use") if data.get("default_use") is not None else data.get("use"))
    zip_code = _text(data.get("zip"))
    tax_id = _text(data.get("tax_id"))
    residence = (_text(data.get("tax_residence")) or "").upper() or None

    if rfc == PUBLICO_EN_GENERAL:
        if name and name != NOMBRE_PUBLICO:
            bad("CFDI40145", "Con el RFC genérico XAXX010101000 el nombre debe ser exactamente PUBLICO EN GENERAL.", "legal_name", "sat")
    elif name.upper() == NOMBRE_PUBLICO:
        bad("CFDI40146", "El nombre PUBLICO EN GENERAL sólo se usa con el RFC genérico XAXX010101000.", "rfc", "sat")

    if rfc in GENERIC:
        regime = regime or "616"
        if regime != "616":
            bad("CFDI40158", f"Con el RFC genérico {rfc} el régimen fiscal debe ser 616 (Sin obligaciones fiscales).", "tax_regime", "sat")
        allowed = {"S01"} if rfc == PUBLICO_EN_GENERAL else {"S01", "CP01"}
        use = use or "S01"
        if use not in allowed:
            bad("CFDI40161", f"Con el RFC genérico {rfc} el uso del CFDI debe ser {' o '.join(sorted(allowed))}.", "default_use", "sat")
    else:
        if not regime:
            bad("TIMBRA_TAX_REGIME_REQUIRED", "El régimen fiscal es obligatorio.", "tax_regime")
        elif not catalogs.exists("c_RegimenFiscal", regime):
            bad("CFDI40157", f"El régimen fiscal {regime} no existe en el catálogo c_RegimenFiscal.", "tax_regime", "sat")
        elif kind is not None:
            fisica, moral = catalogs.regimen_persona(regime) or (True, True)
            if not (fisica if kind == "fisica" else moral):
                bad("CFDI40158", f"El régimen fiscal {regime} no aplica a una persona {'física' if kind == 'fisica' else 'moral'} "
                    f"(RFC de {len(rfc)} caracteres).", "tax_regime", "sat")
        if use is not None:
            if not catalogs.exists("c_UsoCFDI", use):
                bad("CFDI40160", f"El uso del CFDI {use} no existe en el catálogo c_UsoCFDI.", "default_use", "sat")
            elif use in ("CP01", "CN01"):
                bad("CFDI40161", f"El uso del CFDI {use} no puede ser el uso predeterminado de un cliente.", "default_use", "sat")
            elif regime and kind and not catalogs.uso_cfdi_permitido(use, regime, kind):
                bad("CFDI40161", f"El uso del CFDI {use} no aplica a una persona {'física' if kind == 'fisica' else 'moral'} "
                    f"con régimen {regime}.", "default_use", "sat")

    if rfc in GENERIC:
        # on the invoice the receptor's CP becomes the issuer's LugarExpedicion (CFDI40149)
        if zip_code is not None and not catalogs.exists("c_CodigoPostal", zip_code):
            bad("TIMBRA_ZIP_UNKNOWN", f"El código postal {zip_code} no existe en el catálogo c_CodigoPostal.", "zip")
    elif not zip_code:
        bad("TIMBRA_ZIP_REQUIRED", "El código postal del domicilio fiscal es obligatorio.", "zip")
    elif not catalogs.exists("c_CodigoPostal", zip_code):
        bad("TIMBRA_ZIP_UNKNOWN", f"El código postal {zip_code} no existe en el catálogo c_CodigoPostal.", "zip")

    if rfc == EXTRANJERO:
        if residence is None:
            bad("TIMBRA_TAX_RESIDENCE_REQUIRED", "Un cliente extranjero necesita su residencia fiscal (país, catálogo c_Pais).", "tax_residence")
        elif residence == "MEX":
            bad("CFDI40152", "La residencia fiscal de un cliente extranjero no puede ser MEX.", "tax_residence", "sat")
        elif not catalogs.exists("c_Pais", residence):
            bad("CFDI40150", f"La residencia fiscal {residence} no existe en el catálogo c_Pais.", "tax_residence", "sat")
        if tax_id is None:
            bad("TIMBRA_TAX_ID_REQUIRED", "Un cliente extranjero necesita su número de registro de identidad fiscal (NumRegIdTrib).", "tax_id")
        elif not re.fullmatch(r"[^|]{1,40}", tax_id):
            bad("TIMBRA_TAX_ID_INVALID", "El NumRegIdTrib admite de 1 a 40 caracteres, sin |.", "tax_id")
    else:
        if residence is not None:
            bad("CFDI40151", "La residencia fiscal sólo se registra para un cliente extranjero (RFC XEXX010101000).", "tax_residence", "sat")
        if tax_id is not None:
            bad("CFDI40154", "El NumRegIdTrib sólo se registra para un cliente extranjero (RFC XEXX010101000).", "tax_id", "sat")

    emails = []
    raw_emails = data.get("emails") or []
    if isinstance(raw_emails, str):
        raw_emails = re.split(r"[;,\s]+", raw_emails)
    for value in ([data.get("email")] if data.get("email") else []) + list(raw_emails):
        email = str(value).strip()
        if not email:
            continue
        if not EMAIL.match(email):
            bad("TIMBRA_EMAIL_INVALID", f"El correo {email} no es válido.", "emails")
        elif email.lower() not in (e.lower() for e in emails):
            emails.append(email)
    if len(emails) > 10:
        bad("TIMBRA_EMAILS_TOO_MANY", "Un cliente admite como máximo 10 correos.", "emails")

    if problems:
        return None, problems
    return Customer(
        rfc=rfc, legal_name=name, tax_regime=regime or "", zip=zip_code, default_use=use, emails=emails,
        tax_id=tax_id if rfc == EXTRANJERO else None, tax_residence=residence if rfc == EXTRANJERO else None,
    ), []
