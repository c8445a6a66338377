"""Credit accounting rules. The balance is derived from an append-only ledger; the account
document (and each package) is a running total kept in the same transaction, so that
``available + reserved + consumed + expired == granted`` holds at every commit."""

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

NO_CREDITS_CODE = "TIMBRA_NO_CREDITS"
NO_CREDITS_MESSAGE = "Sin folios disponibles: compra un paquete de timbres para seguir facturando."


class Entry(StrEnum):
    GRANT = "grant"
    RESERVE = "reserve"
    COMMIT = "commit"
    RELEASE = "release"
    EXPIRE = "expire"
    ADJUST = "adjust"  # signed quantity: staff add (or take back) available credits by hand


# How each entry moves the running totals (per unit of quantity; ADJUST's quantity is signed).
EFFECTS: dict[Entry, dict[str, int]] = {
    Entry.GRANT: {"granted": 1, "available": 1},
    Entry.RESERVE: {"available": -1, "reserved": 1},
    Entry.COMMIT: {"reserved": -1, "consumed": 1},
    Entry.RELEASE: {"reserved": -1, "available": 1},
    Entry.EXPIRE: {"available": -1, "expired": 1},
    Entry.ADJUST: {"granted": 1, "available": 1},
}

BALANCE_FIELDS = ("available", "reserved", "consumed", "expired", "granted")


def effect(entry: Entry, quantity: int) -> dict[str, int]:
    return {name: sign * quantity for name, sign in EFFECTS[entry].items()}


def guard_for(entry: Entry, quantity: int) -> dict[str, int]:
    """The totals that must be at least this much before the entry applies (nothing goes negative)."""
    return {name: -delta for name, delta in effect(entry, quantity).items() if delta < 0}


def balanced(account: Mapping[str, int]) -> bool:
    return sum(account.get(f, 0) for f in ("available", "reserved", "consumed", "expired")) == account.get("granted", 0)


def replay(entries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The balance derived from ledger entries alone (``{"entry", "quantity"}`` each)."""
    totals = dict.fromkeys(BALANCE_FIELDS, 0)
    for doc in entries:
        for name, delta in effect(Entry(doc["entry"]), int(doc["quantity"])).items():
            totals[name] += delta
    return totals


def from_sums(sums: Mapping[str, int]) -> dict[str, int]:
    """The balance from the per-entry-kind sums of quantity (what a MongoDB ``$group`` gives)."""
    return replay({"entry": kind, "quantity": quantity} for kind, quantity in sums.items())


def mismatch(derived: Mapping[str, int], running: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Fields whose running total differs from the ledger: ``{field: (ledger, running)}``."""
    return {f: (int(derived.get(f, 0)), int(running.get(f, 0))) for f in BALANCE_FIELDS if int(derived.get(f, 0)) != int(running.get(f, 0))}
