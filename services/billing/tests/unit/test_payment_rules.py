"""Pure rules of payments: the seed's sheet to the cent, references with check digits, reading a
bank statement, and how a deposit is classified."""

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timbra_billing.domain import reference as refs
from timbra_billing.domain import statement
from timbra_billing.domain.money import DEFAULT_PRODUCTS, UnknownProduct, mxn, quote
from timbra_billing.domain.statement import Deposit, Outcome

CATALOG = {p.code: p for p in DEFAULT_PRODUCTS}


def test_the_seed_sheet_totals_to_the_cent():
    sheet = quote([("SP0800", 1), ("I05077", 1)], CATALOG)
    assert [(i["code"], i["description"], i["unit_price"], i["amount"]) for i in sheet["items"]] == [
        ("SP0800", "Actualización NIVEL A", Decimal("575.00"), Decimal("575.00")),
        ("I05077", "Anualidad NIVEL 1", Decimal("550.00"), Decimal("550.00")),
    ]
    assert (sheet["subtotal"], sheet["iva"], sheet["total"]) == (Decimal("1125.00"), Decimal("180.00"), Decimal("1305.00"))
    assert all(isinstance(sheet[k], Decimal) for k in ("subtotal", "iva", "total"))
    assert (mxn(sheet["subtotal"]), mxn(sheet["iva"]), mxn(sheet["total"])) == ("$ 1,125.00", "$ 180.00", "$ 1,305.00")


def test_quote_merges_repeated_codes_and_rounds_iva_half_up():
    sheet = quote([("TIM0100", 2), ("TIM0100", 1)], CATALOG)
    (line,) = sheet["items"]
    assert (line["quantity"], line["amount"], line["stamps"]) == (3, Decimal("1050.00"), 300)
    assert sheet["iva"] == Decimal("168.00")


def test_quote_refuses_an_unknown_product():
    with pytest.raises(UnknownProduct) as excinfo:
        quote([("NOPE", 1)], CATALOG)
    assert excinfo.value.code == "NOPE"


def test_reference_has_ten_digits_and_valid_check():
    ref = refs.make("93544700")
    assert ref == "9354470093" and refs.is_valid(ref)
    for _ in range(200):
        r = refs.random_reference()
        assert len(r) == 10 and r[0] != "0" and refs.is_valid(r)


@given(st.integers(min_value=10_000_000, max_value=99_999_999), st.integers(min_value=0, max_value=9), st.integers(min_value=1, max_value=9))
def test_every_single_mistyped_digit_is_detected(base, position, shift):
    ref = refs.make(base)
    typo = ref[:position] + str((int(ref[position]) + shift) % 10) + ref[position + 1:]
    assert not refs.is_valid(typo)


@given(st.integers(min_value=10_000_000, max_value=99_999_999), st.integers(min_value=0, max_value=8))
def test_every_swap_of_adjacent_digits_is_detected(base, position):
    ref = refs.make(base)
    swapped = ref[:position] + ref[position + 1] + ref[position] + ref[position + 2:]
    assert swapped == ref or not refs.is_valid(swapped)


def test_candidates_find_the_reference_wherever_the_bank_puts_it():
    ref = refs.make("12345678")
    assert refs.candidates(f"SPEI RECIBIDO BANORTE/REF{ref}/PAGO") == [ref]
    assert refs.candidates(f"DEPOSITO EN EFECTIVO {ref[:4]} {ref[4:]}") == [ref]
    assert refs.candidates("PAGO CUENTA 0101010101 CLABE 012180001010101013", ignore=frozenset({"0101010101"})) == []
    assert refs.candidates(f"{ref}0 FOLIO 20250512123456") == []  # part of a longer number: not a reference


STATEMENT = """BBVA México, S.A.
Cuenta: 0101010101;;;;;
Periodo: 01/05/2025 al 31/05/2025;;;;;
Fecha;Concepto;Referencia;Cargo;Abono;Saldo
02/05/2025;SPEI RECIBIDO BANAMEX REF 1234567869;;;"1,305.00";10,000.00
03/05/2025;COMISION MANEJO DE CUENTA;;150.00;;9,850.00
03/05/2025;DEPOSITO EN EFECTIVO;1234567869;;575.00;10,425.00
03/05/2025;DEPOSITO EN EFECTIVO;1234567869;;575.00;11,000.00
"""


def test_parse_reads_a_bank_layout_and_ignores_charges():
    parsed = statement.parse(STATEMENT)
    assert parsed.columns == {"date": "fecha", "description": "concepto", "reference": "referencia", "amount": "abono"}
    assert [(d.row, d.date, d.amount) for d in parsed.deposits] == [(5, date(2025, 5, 2), Decimal("1305.00")), (7, date(2025, 5, 3), Decimal("575.00")), (8, date(2025, 5, 3), Decimal("575.00"))]
    assert [i["reason"] for i in parsed.ignored] == ["sin abono"]
    # two identical lines are two deposits, with different identities; parsing again gives the same ones
    assert parsed.deposits[1].hash != parsed.deposits[2].hash
    assert [d.hash for d in statement.parse(STATEMENT).deposits] == [d.hash for d in parsed.deposits]


def test_parse_with_configured_columns():
    text = "Date,Narrative,Credit\n2025-05-02,PAY 1234567869,100.50\n"
    parsed = statement.parse(text, {"date": "Date", "description": "Narrative", "amount": "Credit"})
    (deposit,) = parsed.deposits
    assert (deposit.description, deposit.amount, deposit.reference) == ("PAY 1234567869", Decimal("100.50"), "")


def test_parse_refuses_a_file_without_the_headers():
    with pytest.raises(statement.StatementError):
        statement.parse("a,b,c\n1,2,3\n")


def _deposit(amount: str, text: str = "", ref_field: str = "") -> Deposit:
    return Deposit(row=2, hash="h", date=date(2025, 5, 2), description=text, reference=ref_field, amount=Decimal(amount))


@pytest.mark.parametrize(("amount", "status", "twin", "outcome"), [
    ("1305.00", "pending", False, Outcome.MATCHED),
    ("1300.00", "pending", False, Outcome.UNDERPAYMENT),
    ("1400.00", "pending", False, Outcome.OVERPAYMENT),
    ("1305.00", "paid", True, Outcome.DUPLICATE_DEPOSIT),
    ("1305.00", "paid", False, Outcome.ALREADY_PAID),
])
def test_classify_by_amount_and_state(amount, status, twin, outcome):
    ref = refs.make("12345678")
    verdict = statement.classify(_deposit(amount, f"REF {ref}"), ref, [], {"total": "1305.00", "status": status}, same_day_twin=twin)
    assert verdict.outcome is outcome


def test_a_mistyped_reference_is_unknown_and_says_so():
    ref = refs.make("12345678")
    typo = ref[:3] + ref[4] + ref[3] + ref[5:]
    deposit = _deposit("1305.00", f"PAGO REF {typo}")
    found, mistyped = statement.pick_reference(deposit, {ref})
    assert (found, mistyped) == (None, [typo])
    verdict = statement.classify(deposit, found, mistyped, None, same_day_twin=False)
    assert verdict.outcome is Outcome.UNKNOWN_REFERENCE and "dígito verificador" in verdict.detail


def test_pick_prefers_a_known_reference_among_several_numbers():
    ours, other = refs.make("12345678"), refs.make("87654321")
    found, _ = statement.pick_reference(_deposit("1.00", f"FACT {other} REF {ours}"), {ours})
    assert found == ours


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_parse_finds_the_delimiter_of_the_table_below_a_plain_preamble(delimiter):
    """Banks put a preamble without any delimiter (holder, account, period, with commas of their
    own) above the table; the delimiter is the one that makes a header line appear."""
    rows = [["Fecha", "Concepto", "Referencia", "Cargo", "Abono", "Saldo"],
            ["02/05/2025", "SPEI RECIBIDO REF 1234567869", "", "", "1305.00", "10000.00"],
            ["03/05/2025", "DEPOSITO EN EFECTIVO", "1234567869", "", "575.00", "10575.00"]]
    preamble = "ESTADO DE CUENTA\nTitular: Timbra, S.A. de C.V.\nCuenta 0101010101, periodo mayo 2025\n\n"
    parsed = statement.parse(preamble + "\n".join(delimiter.join(r) for r in rows) + "\n")
    assert parsed.columns["amount"] == "abono"
    assert [(d.date, d.reference, d.amount) for d in parsed.deposits] == [(date(2025, 5, 2), "", Decimal("1305.00")), (date(2025, 5, 3), "1234567869", Decimal("575.00"))]
