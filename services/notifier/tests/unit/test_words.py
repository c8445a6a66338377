"""Amounts in Spanish words, as Mexican invoices print them."""

from decimal import Decimal

import pytest

from timbra_notifier.domain.words import amount_in_words, integer_words


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        ("1305.00", "UN MIL TRESCIENTOS CINCO PESOS 00/100 M.N."),
        ("1", "UN PESO 00/100 M.N."),
        ("1.00", "UN PESO 00/100 M.N."),
        ("0.50", "CERO PESOS 50/100 M.N."),
        ("0", "CERO PESOS 00/100 M.N."),
        ("2", "DOS PESOS 00/100 M.N."),
        ("15", "QUINCE PESOS 00/100 M.N."),
        ("16.16", "DIECISEIS PESOS 16/100 M.N."),
        ("21", "VEINTIUN PESOS 00/100 M.N."),
        ("29", "VEINTINUEVE PESOS 00/100 M.N."),
        ("30", "TREINTA PESOS 00/100 M.N."),
        ("31", "TREINTA Y UN PESOS 00/100 M.N."),
        ("99", "NOVENTA Y NUEVE PESOS 00/100 M.N."),
        ("100", "CIEN PESOS 00/100 M.N."),
        ("101", "CIENTO UN PESOS 00/100 M.N."),
        ("115", "CIENTO QUINCE PESOS 00/100 M.N."),
        ("500", "QUINIENTOS PESOS 00/100 M.N."),
        ("999", "NOVECIENTOS NOVENTA Y NUEVE PESOS 00/100 M.N."),
        ("1000", "UN MIL PESOS 00/100 M.N."),
        ("1001", "UN MIL UN PESOS 00/100 M.N."),
        ("1100", "UN MIL CIEN PESOS 00/100 M.N."),
        ("21000", "VEINTIUN MIL PESOS 00/100 M.N."),
        ("100000", "CIEN MIL PESOS 00/100 M.N."),
        ("232.00", "DOSCIENTOS TREINTA Y DOS PESOS 00/100 M.N."),
        ("1000000", "UN MILLON DE PESOS 00/100 M.N."),
        ("1000001", "UN MILLON UN PESOS 00/100 M.N."),
        ("1001000", "UN MILLON UN MIL PESOS 00/100 M.N."),
        ("2000000", "DOS MILLONES DE PESOS 00/100 M.N."),
        ("2500000.99", "DOS MILLONES QUINIENTOS MIL PESOS 99/100 M.N."),
        ("21000000", "VEINTIUN MILLONES DE PESOS 00/100 M.N."),
        ("999999999.99", "NOVECIENTOS NOVENTA Y NUEVE MILLONES NOVECIENTOS NOVENTA Y NUEVE MIL NOVECIENTOS NOVENTA Y NUEVE PESOS 99/100 M.N."),
    ],
)
def test_pesos(amount, words):
    assert amount_in_words(Decimal(amount)) == words


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        ("1", "UN DOLAR 00/100 USD"),
        ("2.50", "DOS DOLARES 50/100 USD"),
        ("1305", "UN MIL TRESCIENTOS CINCO DOLARES 00/100 USD"),
        ("1000000", "UN MILLON DE DOLARES 00/100 USD"),
    ],
)
def test_dollars(amount, words):
    assert amount_in_words(Decimal(amount), "USD") == words


def test_euros_and_unknown_currencies():
    assert amount_in_words(Decimal("1"), "EUR") == "UN EURO 00/100 EUR"
    assert amount_in_words(Decimal("3"), "GBP") == "TRES GBP 00/100 GBP"


@pytest.mark.parametrize(("amount", "cents"), [("0.005", "01"), ("1.004", "00"), ("2.675", "68"), ("0.994", "99")])
def test_cents_are_rounded_half_up(amount, cents):
    assert amount_in_words(Decimal(amount)).endswith(f" {cents}/100 M.N.")


def test_rounding_can_carry_into_the_whole_part():
    assert amount_in_words(Decimal("0.995")) == "UN PESO 00/100 M.N."
    assert amount_in_words(Decimal("999.999")) == "UN MIL PESOS 00/100 M.N."


def test_integer_words_has_no_double_spaces():
    for n in [0, 1, 10, 20, 21, 100, 101, 110, 1000, 1010, 10_000, 100_100, 1_000_000, 1_000_100, 12_345_678]:
        text = integer_words(n)
        assert "  " not in text and text == text.strip(), (n, text)
