"""Products, prices and the totals of a payment sheet (constancia de pago). Money is ``Decimal``
rounded to the cent, half up, as a Mexican bank and the SAT would; never ``float``."""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
IVA_RATE = Decimal("0.16")


def cents(value: Decimal | int | str) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def mxn(value: Decimal) -> str:
    """``$ 1,305.00`` as the seed's sheet prints it."""
    return f"$ {cents(value):,.2f}"


@dataclass(frozen=True)
class Product:
    code: str
    description: str
    price: Decimal  # before IVA
    stamps: int = 0  # credits the product grants when paid (0: a service, e.g. an update)
    months: int = 12  # validity of those credits
    active: bool = True

    def as_doc(self) -> dict[str, Any]:
        return {"_id": self.code, "code": self.code, "description": self.description, "price": str(cents(self.price)), "iva_rate": str(IVA_RATE), "stamps": self.stamps, "months": self.months, "active": self.active}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Product":
        return cls(code=doc["code"], description=doc["description"], price=Decimal(doc["price"]), stamps=int(doc.get("stamps", 0)), months=int(doc.get("months", 12)), active=bool(doc.get("active", True)))


# The seed's two products (002-constancia-de-pago) and the stamp packages of the FAQ (1 and 2 years).
DEFAULT_PRODUCTS: tuple[Product, ...] = (
    Product("SP0800", "Actualización NIVEL A", Decimal("575.00"), stamps=0, months=12),
    Product("I05077", "Anualidad NIVEL 1", Decimal("550.00"), stamps=100, months=12),
    Product("TIM0100", "Paquete 100 timbres, vigencia 1 año", Decimal("350.00"), stamps=100, months=12),
    Product("TIM0500", "Paquete 500 timbres, vigencia 1 año", Decimal("1500.00"), stamps=500, months=12),
    Product("TIM1000", "Paquete 1,000 timbres, vigencia 2 años", Decimal("2600.00"), stamps=1000, months=24),
)


class UnknownProduct(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def quote(items: list[tuple[str, int]], catalog: dict[str, Product]) -> dict[str, Any]:
    """Lines, subtotal, IVA 16% (on the subtotal) and total of a sheet; credits it will grant.

    Lines with the same code are merged, in first-seen order."""
    merged: dict[str, int] = {}
    for code, quantity in items:
        if code not in catalog or not catalog[code].active:
            raise UnknownProduct(code)
        merged[code] = merged.get(code, 0) + int(quantity)
    lines = []
    for code, quantity in merged.items():
        product = catalog[code]
        lines.append({
            "code": code, "description": product.description, "quantity": quantity,
            "unit_price": cents(product.price), "amount": cents(product.price * quantity),
            "stamps": product.stamps * quantity, "months": product.months,
        })
    subtotal = cents(sum((line["amount"] for line in lines), Decimal(0)))
    iva = cents(subtotal * IVA_RATE)
    return {"items": lines, "subtotal": subtotal, "iva": iva, "total": subtotal + iva}
