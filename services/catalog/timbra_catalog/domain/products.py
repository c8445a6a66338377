"""Products: the SAT keys and taxes of a concepto, checked once when the product is saved."""

from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from timbra_shared.cfdi import catalogs
from timbra_shared.errors import Problem
from timbra_shared.events import ProductIn

IMPUESTO = {"ISR": "001", "IVA": "002", "IEPS": "003"}
FIELDS = ("description", "product_key", "unit_key", "unit_name", "sku", "price", "tax_included", "taxability", "taxes")


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    problems = []
    for e in error.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f"{'.' if path else ''}{part}"
        problems.append(Problem("TIMBRA_FIELD_INVALID", f"El campo {path} no es válido: {e['msg']}.", "timbra", path))
    return problems


def validate_product(data: dict[str, Any]) -> tuple[ProductIn | None, list[Problem]]:
    """Normalise and check a product. Returns the product, or None with the problems."""
    problems: list[Problem] = []
    unknown = sorted(set(data) - set(FIELDS))
    for name in unknown:
        problems.append(Problem("TIMBRA_FIELD_UNKNOWN", f"El campo {name} no existe en un producto.", "timbra", name))
    if problems:
        return None, problems
    try:
        price = Decimal(str(data.get("price")))
    except (InvalidOperation, ValueError):
        price = None
    if price is None or not price.is_finite():
        return None, [Problem("TIMBRA_PRICE_INVALID", "El precio debe ser un número.", "timbra", "price")]
    if price < 0:
        return None, [Problem("TIMBRA_PRICE_INVALID", "El precio no puede ser negativo.", "timbra", "price")]
    if price != price.quantize(Decimal("0.000001")):
        return None, [Problem("TIMBRA_PRICE_INVALID", "El precio admite como máximo 6 decimales.", "timbra", "price")]
    try:
        product = ProductIn.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as error:
        return None, _pydantic_problems(error)

    def bad(code: str, message: str, path: str, source: str = "sat") -> None:
        problems.append(Problem(code, message, source, path))  # type: ignore[arg-type]

    if len(product.description) > 1000:
        bad("TIMBRA_DESCRIPTION_TOO_LONG", "La descripción admite como máximo 1000 caracteres.", "description", "timbra")
    if not catalogs.exists("c_ClaveProdServ", product.product_key):
        bad("CFDI40162", f"La clave de producto o servicio {product.product_key} no existe en el catálogo c_ClaveProdServ.", "product_key")
    if not catalogs.exists("c_ClaveUnidad", product.unit_key):
        bad("CFDI40165", f"La clave de unidad {product.unit_key} no existe en el catálogo c_ClaveUnidad.", "unit_key")
    taxes = product.taxes if product.taxability == "02" else []
    if product.taxability == "02" and not taxes:
        bad("CFDI40171", "Con objeto de impuesto 02 el producto necesita al menos un impuesto (IVA, IEPS o retención).", "taxes")
    if product.taxability in ("01", "03", "04") and data.get("taxes"):
        bad("CFDI40172", f"Con objeto de impuesto {product.taxability} el producto no lleva impuestos.", "taxes")
    seen: set[tuple[str, bool]] = set()
    for i, tax in enumerate(taxes):
        path = f"taxes[{i}]"
        kind = "R" if tax.withholding else "T"
        if (tax.type, tax.withholding) in seen:
            bad("TIMBRA_TAX_DUPLICATED", f"El impuesto {tax.type} {'retenido' if tax.withholding else 'trasladado'} aparece dos veces.", path, "timbra")
        seen.add((tax.type, tax.withholding))
        if tax.factor == "Exento":
            if tax.withholding:
                bad("CFDI40184", "Una retención no puede ser exenta.", path)
            elif tax.rate is not None:
                bad("CFDI40177", "Un impuesto exento no lleva tasa.", f"{path}.rate")
            continue
        if tax.type == "ISR" and not tax.withholding:
            bad("TIMBRA_TAX_INVALID", "El ISR sólo puede ser una retención (withholding: true).", path, "timbra")
            continue
        if tax.rate is None:
            bad("CFDI40178", f"Falta la tasa o cuota del impuesto {tax.type}.", f"{path}.rate")
            continue
        rate = Decimal(tax.rate).quantize(Decimal("0.000001"))
        if rate != tax.rate:
            bad("TIMBRA_TAX_RATE_INVALID", "La tasa o cuota admite como máximo 6 decimales.", f"{path}.rate", "timbra")
        elif not catalogs.tasa_o_cuota_valida(kind, IMPUESTO[tax.type], tax.factor, rate):
            bad("CFDI40180" if kind == "T" else "CFDI40186",
                f"La {'cuota' if tax.factor == 'Cuota' else 'tasa'} {rate} no es válida para {tax.type} "
                f"{'retenido' if tax.withholding else 'trasladado'} con factor {tax.factor} (catálogo c_TasaOCuota).", f"{path}.rate")
    if problems:
        return None, problems
    if product.taxability != "02":
        product = product.model_copy(update={"taxes": []})
    return product, []
