"""Bank statements (CSV) and how a deposit is classified against payment references. Pure."""

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from timbra_billing.domain import reference as refs
from timbra_billing.domain.money import cents

# Column names of the CSV, per field; the first header that matches (accents and case ignored) wins.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "date": ("fecha", "fecha operacion", "fecha de operacion", "date"),
    "description": ("concepto", "descripcion", "concepto / referencia", "description", "concept"),
    "reference": ("referencia", "referencia numerica", "reference"),
    "amount": ("abono", "abonos", "deposito", "depositos", "importe", "monto", "amount"),
}


class StatementError(ValueError):
    pass


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", text).strip().lower()


def parse_amount(text: str) -> Decimal | None:
    cleaned = re.sub(r"[\s$]|MXN|MN", "", text or "", flags=re.IGNORECASE).replace(",", "")
    if not cleaned:
        return None
    try:
        return cents(Decimal(cleaned))
    except InvalidOperation:
        return None


def parse_date(text: str) -> date | None:
    text = (text or "").strip()
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y", "%d/%m/%y", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Deposit:
    row: int  # line number in the file
    hash: str  # identity of the deposit: its fields plus which repeat of an identical line it is
    date: date
    description: str
    reference: str
    amount: Decimal


@dataclass
class Parsed:
    deposits: list[Deposit] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)  # charges, empty or unreadable lines
    columns: dict[str, str] = field(default_factory=dict)


def decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


DELIMITERS = ",;\t|"


def _header(text: str, wanted: dict[str, tuple[str, ...]]) -> tuple[Any, list[str]] | None:
    """A reader positioned after the header line, and that line normalised. The bank's preamble
    (holder, account, period…) is skipped until a line holds the date and amount headers. The
    delimiter is the sniffed one if it shows such a line (a preamble without delimiters can fool
    the sniffer), else the first of ``DELIMITERS`` that does."""
    try:
        sniffed = [csv.Sniffer().sniff(text[:4096], delimiters=DELIMITERS).delimiter]
    except csv.Error:
        sniffed = []
    for delimiter in dict.fromkeys([*sniffed, *DELIMITERS]):
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        for row in reader:
            normalized = [_norm(c) for c in row]
            if any(_norm(n) in normalized for n in wanted["date"]) and any(_norm(n) in normalized for n in wanted["amount"]):
                return reader, normalized
    return None


def parse(text: str, columns: dict[str, str | tuple[str, ...]] | None = None) -> Parsed:
    """Read a statement. ``columns`` overrides the header names per field (date, description,
    reference, amount); ``reference`` is optional (many banks only have the concept)."""
    wanted = {k: tuple(v) for k, v in DEFAULT_COLUMNS.items()}
    for key, value in (columns or {}).items():
        if value:
            wanted[key] = (value,) if isinstance(value, str) else tuple(value)
    found = _header(text, wanted)
    if found is None:
        raise StatementError("No se encontró el encabezado del estado de cuenta (columnas de fecha y abono).")
    reader, header = found
    index: dict[str, int] = {}
    for key, names in wanted.items():
        for name in names:
            if _norm(name) in header:
                index[key] = header.index(_norm(name))
                break
    if "description" not in index and "reference" not in index:
        raise StatementError("El estado de cuenta no tiene columna de concepto ni de referencia.")
    parsed = Parsed(columns={k: header[i] for k, i in index.items()})
    seen: dict[tuple[str, ...], int] = {}
    for row in reader:
        line = reader.line_num
        cell = lambda key: row[index[key]].strip() if key in index and index[key] < len(row) else ""  # noqa: E731
        if not any(c.strip() for c in row):
            continue
        amount, when = parse_amount(cell("amount")), parse_date(cell("date"))
        if amount is None or amount <= 0 or when is None:
            parsed.ignored.append({"row": line, "reason": "sin abono" if when else "línea no reconocida", "text": ",".join(row)[:200]})
            continue
        fields = (when.isoformat(), _norm(cell("description")), cell("reference"), str(amount))
        seen[fields] = seen.get(fields, 0) + 1
        digest = hashlib.sha256("\x1f".join((*fields, str(seen[fields]))).encode()).hexdigest()
        parsed.deposits.append(Deposit(row=line, hash=digest, date=when, description=cell("description"), reference=cell("reference"), amount=amount))
    return parsed


class Outcome(StrEnum):
    MATCHED = "matched"
    UNDERPAYMENT = "underpayment"
    OVERPAYMENT = "overpayment"
    UNKNOWN_REFERENCE = "unknown_reference"
    DUPLICATE_DEPOSIT = "duplicate_deposit"
    ALREADY_PAID = "already_paid"


MESSAGES = {
    Outcome.UNDERPAYMENT: "Pago incompleto: el depósito es menor que el total de la constancia.",
    Outcome.OVERPAYMENT: "Pago en exceso: el depósito es mayor que el total de la constancia.",
    Outcome.UNKNOWN_REFERENCE: "No se encontró una referencia de pago válida en el depósito.",
    Outcome.DUPLICATE_DEPOSIT: "Depósito duplicado: la misma referencia y el mismo monto ya se depositaron ese día.",
    Outcome.ALREADY_PAID: "La referencia ya estaba pagada con un depósito anterior.",
}


@dataclass(frozen=True)
class Classification:
    outcome: Outcome
    reference: str | None
    detail: str


def pick_reference(deposit: Deposit, known: set[str], ignore: frozenset[str] = frozenset()) -> tuple[str | None, list[str]]:
    """The reference a deposit pays: the first ten-digit run, in the reference column then the
    concept, that passes the check digits and exists. Returns it (or None) and the runs that
    failed the check digits (mistyped references)."""
    found = refs.candidates(deposit.reference, deposit.description, ignore=ignore)
    mistyped = [c for c in found if not refs.is_valid(c)]
    valid = [c for c in found if refs.is_valid(c)]
    for candidate in valid:
        if candidate in known:
            return candidate, mistyped
    return (valid[0] if valid else None), mistyped


def classify(deposit: Deposit, reference: str | None, mistyped: list[str], sheet: dict[str, Any] | None, *, same_day_twin: bool) -> Classification:
    """``sheet`` is the payment reference found (None: unknown); ``same_day_twin``: another
    deposit with this reference and amount on the same date was already imported."""
    if sheet is None:
        if reference:
            detail = f"La referencia {reference} tiene dígito verificador válido pero no existe."
        elif mistyped:
            detail = f"La referencia {', '.join(mistyped)} no pasa el dígito verificador: probablemente está mal capturada."
        else:
            detail = "El depósito no trae una referencia de diez dígitos."
        return Classification(Outcome.UNKNOWN_REFERENCE, reference, detail)
    total = Decimal(sheet["total"])
    if sheet.get("status") == "paid":
        if same_day_twin:
            return Classification(Outcome.DUPLICATE_DEPOSIT, reference, MESSAGES[Outcome.DUPLICATE_DEPOSIT])
        return Classification(Outcome.ALREADY_PAID, reference, MESSAGES[Outcome.ALREADY_PAID])
    if deposit.amount < total:
        return Classification(Outcome.UNDERPAYMENT, reference, f"Depositó {deposit.amount} de {total}; faltan {total - deposit.amount}.")
    if deposit.amount > total:
        return Classification(Outcome.OVERPAYMENT, reference, f"Depositó {deposit.amount} por {total}; sobran {deposit.amount - total}.")
    return Classification(Outcome.MATCHED, reference, "Pago exacto.")
