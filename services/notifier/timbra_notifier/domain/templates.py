"""Email subject and body templates: Spanish defaults, customisable per issuer.

Placeholders are ``{name}`` fields from :data:`FIELDS`; anything else in braces is rejected when
the template is saved (so a typo is an error then, not a broken email later).
"""

import string
from typing import Any

FIELDS = {
    "emisor": "nombre o razón social del emisor",
    "rfc_emisor": "RFC del emisor",
    "receptor": "nombre del receptor",
    "rfc_receptor": "RFC del receptor",
    "serie_folio": "serie y folio (o el UUID si no tiene)",
    "uuid": "folio fiscal",
    "total": "total con moneda",
    "fecha": "fecha de emisión",
    "tipo": "Factura, Nota de crédito, Recibo de pago…",
}

DEFAULT_SUBJECT = "{tipo} {serie_folio} de {emisor}"
DEFAULT_BODY = (
    "Hola {receptor}:\n\n"
    "{emisor} te envía la {tipo} {serie_folio} por {total}.\n"
    "Folio fiscal (UUID): {uuid}\n\n"
    "Adjuntamos el XML y la representación impresa (PDF).\n\n"
    "Este correo se envió automáticamente; para cualquier aclaración responde a {emisor}.\n"
)

TIPOS = {"I": "Factura", "E": "Nota de crédito", "T": "Traslado", "P": "Recibo de pago", "N": "Nómina"}


class TemplateInvalid(ValueError):
    pass


def placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise TemplateInvalid(f"La plantilla no es válida: {exc}.") from None


def check(text: str) -> None:
    unknown = placeholders(text) - set(FIELDS)
    if unknown:
        raise TemplateInvalid(f"Campos desconocidos en la plantilla: {', '.join(sorted(unknown))}. Disponibles: {', '.join(FIELDS)}.")


def values(summary: Any, uuid: str, issuer_name: str) -> dict[str, str]:
    serie_folio = f"{summary.serie or ''}{summary.folio or ''}" or uuid
    return {
        "emisor": issuer_name or summary.rfc_emisor,
        "rfc_emisor": summary.rfc_emisor,
        "receptor": summary.nombre_receptor,
        "rfc_receptor": summary.rfc_receptor,
        "serie_folio": serie_folio,
        "uuid": uuid,
        "total": f"{summary.total} {summary.currency}",
        "fecha": summary.fecha or "",
        "tipo": TIPOS.get(summary.type, "Factura"),
    }


def render(subject: str, body: str, fields: dict[str, str]) -> tuple[str, str]:
    safe = {k: str(v).replace("\r", " ").replace("\n", " ") for k, v in fields.items()}
    return subject.format(**safe).replace("\n", " ")[:250], body.format(**fields)
