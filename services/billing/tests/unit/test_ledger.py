"""Credit accounting rules: every ledger entry keeps
``available + reserved + consumed + expired == granted``."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timbra_billing.domain.ledger import BALANCE_FIELDS, EFFECTS, NO_CREDITS_CODE, NO_CREDITS_MESSAGE, Entry, balanced, effect

APPLIED = [Entry.GRANT, Entry.RESERVE, Entry.COMMIT, Entry.RELEASE, Entry.EXPIRE]


def _apply(account: dict[str, int], entry: Entry, quantity: int) -> None:
    for field, delta in effect(entry, quantity).items():
        account[field] = account.get(field, 0) + delta


def test_effects_scale_with_quantity():
    assert effect(Entry.GRANT, 100) == {"granted": 100, "available": 100}
    assert effect(Entry.RESERVE, 3) == {"available": -3, "reserved": 3}
    assert effect(Entry.COMMIT, 2) == {"reserved": -2, "consumed": 2}
    assert effect(Entry.RELEASE, 1) == {"reserved": -1, "available": 1}
    assert effect(Entry.EXPIRE, 5) == {"available": -5, "expired": 5}


def test_effects_only_touch_balance_fields():
    assert all(set(moves) <= set(BALANCE_FIELDS) for moves in EFFECTS.values())


@pytest.mark.parametrize("entry", APPLIED)
def test_each_effect_is_balanced_on_its_own(entry):
    account = {f: 0 for f in BALANCE_FIELDS}
    _apply(account, entry, 7)
    assert balanced(account)


@given(st.lists(st.tuples(st.sampled_from(APPLIED), st.integers(min_value=0, max_value=10_000)), max_size=60))
def test_any_sequence_of_entries_keeps_the_books_balanced(entries):
    account: dict[str, int] = {}
    assert balanced(account)
    for entry, quantity in entries:
        _apply(account, entry, quantity)
        assert balanced(account)


@given(st.lists(st.sampled_from(["grant", "reserve", "commit", "release", "expire"]), max_size=80))
def test_guarded_sequences_never_go_negative(ops):
    """The way the service uses the ledger: reserve/expire only from available, commit/release only
    what is reserved. Totals stay balanced and non-negative."""
    account = {f: 0 for f in BALANCE_FIELDS}
    for op in ops:
        if op == "grant":
            _apply(account, Entry.GRANT, 2)
        elif op in ("reserve", "expire") and account["available"] >= 1:
            _apply(account, Entry(op), 1)
        elif op in ("commit", "release") and account["reserved"] >= 1:
            _apply(account, Entry(op), 1)
        assert balanced(account)
        assert all(account[f] >= 0 for f in BALANCE_FIELDS)


def test_balanced_detects_a_broken_account():
    assert balanced({"granted": 10, "available": 4, "reserved": 3, "consumed": 2, "expired": 1})
    assert not balanced({"granted": 10, "available": 4, "reserved": 3, "consumed": 2})
    assert not balanced({"available": 1})


def test_every_entry_kind_has_an_effect():
    assert set(EFFECTS) == set(Entry)
    for entry in Entry:
        account = {f: 0 for f in BALANCE_FIELDS}
        _apply(account, entry, 1)
        assert balanced(account)


def test_no_credits_message_is_spanish_and_coded():
    assert NO_CREDITS_CODE == "TIMBRA_NO_CREDITS"
    assert NO_CREDITS_MESSAGE.startswith("Sin folios disponibles")
