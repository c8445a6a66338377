"""Credit accounting rules. The balance is derived from an append-only ledger; the account
document is a running total kept in the same transaction, so that
``available + reserved + consumed + expired == granted`` holds at every commit."""

from enum import StrEnum

NO_CREDITS_CODE = "TIMBRA_NO_CREDITS"
NO_CREDITS_MESSAGE = "Sin folios disponibles: compra un paquete de timbres para seguir facturando."


class Entry(StrEnum):
    GRANT = "grant"
    RESERVE = "reserve"
    COMMIT = "commit"
    RELEASE = "release"
    EXPIRE = "expire"


# How each entry moves the running totals.
EFFECTS: dict[Entry, dict[str, int]] = {
    Entry.GRANT: {"granted": 1, "available": 1},
    Entry.RESERVE: {"available": -1, "reserved": 1},
    Entry.COMMIT: {"reserved": -1, "consumed": 1},
    Entry.RELEASE: {"reserved": -1, "available": 1},
    Entry.EXPIRE: {"available": -1, "expired": 1},
}

BALANCE_FIELDS = ("available", "reserved", "consumed", "expired", "granted")


def effect(entry: Entry, quantity: int) -> dict[str, int]:
    return {name: sign * quantity for name, sign in EFFECTS[entry].items()}


def balanced(account: dict[str, int]) -> bool:
    return sum(account.get(f, 0) for f in ("available", "reserved", "consumed", "expired")) == account.get("granted", 0)
