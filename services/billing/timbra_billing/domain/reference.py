"""Payment references: ten digits, the last two a check number (ISO 7064 MOD 97-10, the scheme of
IBAN and of several Mexican banks' "referencia numérica").

``reference = base (8 digits, first not 0) + check (2 digits)`` with ``int(reference) % 97 == 1``.
It detects every single mistyped digit and every swap of two adjacent digits, and all but about
1 % of any other error, so a mistyped reference in a deposit never matches someone else's sheet.
"""

import re
import secrets

LENGTH = 10
BASE_LENGTH = LENGTH - 2
_RUN = re.compile(r"(?<!\d)\d{%d}(?!\d)" % LENGTH)


def check_digits(base: str) -> str:
    return f"{98 - int(base + '00') % 97:02d}"


def make(base: int | str) -> str:
    base = str(base)
    if len(base) != BASE_LENGTH or not base.isdigit() or base[0] == "0":
        raise ValueError(f"base must be {BASE_LENGTH} digits not starting with 0: {base!r}")
    return base + check_digits(base)


def random_reference() -> str:
    return make(10 ** (BASE_LENGTH - 1) + secrets.randbelow(9 * 10 ** (BASE_LENGTH - 1)))


def is_valid(reference: str) -> bool:
    return len(reference) == LENGTH and reference.isdigit() and reference[0] != "0" and int(reference) % 97 == 1


def candidates(*texts: str | None, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Every run of exactly ten digits in the texts (banks put the reference in the reference
    column, at the start, middle or end of the concept, sometimes split by spaces or dashes),
    in order, without repeats. ``ignore`` drops known numbers (our own account number)."""
    found: list[str] = []
    for text in texts:
        if not text:
            continue
        variants = [text, re.sub(r"(?<=\d)[ \-.](?=\d)", "", text)]
        for variant in variants:
            for run in _RUN.findall(variant):
                if run not in found and run not in ignore:
                    found.append(run)
    return found
