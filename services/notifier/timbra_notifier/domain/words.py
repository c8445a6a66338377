"""Amounts in Spanish words, as Mexican invoices print them ("UN MIL TRESCIENTOS CINCO PESOS 00/100 M.N.")."""

from decimal import ROUND_HALF_UP, Decimal

_UNITS = ["", "UN", "DOS", "TRES", "CUATRO", "CINCO", "SEIS", "SIETE", "OCHO", "NUEVE", "DIEZ", "ONCE", "DOCE", "TRECE",
          "CATORCE", "QUINCE", "DIECISEIS", "DIECISIETE", "DIECIOCHO", "DIECINUEVE", "VEINTE", "VEINTIUN", "VEINTIDOS",
          "VEINTITRES", "VEINTICUATRO", "VEINTICINCO", "VEINTISEIS", "VEINTISIETE", "VEINTIOCHO", "VEINTINUEVE"]
_TENS = ["", "", "", "TREINTA", "CUARENTA", "CINCUENTA", "SESENTA", "SETENTA", "OCHENTA", "NOVENTA"]
_HUNDREDS = ["", "CIENTO", "DOSCIENTOS", "TRESCIENTOS", "CUATROCIENTOS", "QUINIENTOS", "SEISCIENTOS", "SETECIENTOS",
             "OCHOCIENTOS", "NOVECIENTOS"]

_CURRENCY = {"MXN": ("PESO", "PESOS", "M.N."), "USD": ("DOLAR", "DOLARES", "USD"), "EUR": ("EURO", "EUROS", "EUR")}


def _below_thousand(n: int) -> str:
    if n == 0:
        return ""
    if n == 100:
        return "CIEN"
    hundreds, rest = divmod(n, 100)
    parts = [_HUNDREDS[hundreds]] if hundreds else []
    if rest < 30:
        parts.append(_UNITS[rest])
    else:
        tens, units = divmod(rest, 10)
        parts.append(_TENS[tens] + (f" Y {_UNITS[units]}" if units else ""))
    return " ".join(p for p in parts if p)


def integer_words(n: int) -> str:
    if n == 0:
        return "CERO"
    groups = []
    millions, rest = divmod(n, 1_000_000)
    thousands, units = divmod(rest, 1000)
    if millions:
        groups.append("UN MILLON" if millions == 1 else f"{integer_words(millions)} MILLONES")
    if thousands:
        groups.append(f"{_below_thousand(thousands)} MIL")
    if units:
        groups.append(_below_thousand(units))
    return " ".join(groups)


def amount_in_words(amount: Decimal, currency: str = "MXN") -> str:
    amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    whole = int(amount)
    cents = int((amount - whole) * 100)
    singular, plural, suffix = _CURRENCY.get(currency, (currency, currency, currency))
    name = singular if whole == 1 else plural
    if whole and whole % 1_000_000 == 0:
        name = f"DE {plural}"
    return f"{integer_words(whole)} {name} {cents:02d}/100 {suffix}"
