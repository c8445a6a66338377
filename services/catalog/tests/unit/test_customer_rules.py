"""Customer validation: every rule fed real bad input, checked by its code and path."""

import pytest

from timbra_catalog.domain.customers import clean_name, clean_rfc, validate_customer

MORAL = {"rfc": "URE180429TM6", "legal_name": "UNIVERSIDAD ROBOTICA ESPAÑOLA", "tax_regime": "601", "zip": "86991", "default_use": "G03"}
FISICA = {"rfc": "CACX7605101P8", "legal_name": "XOCHILT CASAS CHAVEZ", "tax_regime": "612", "zip": "36257", "default_use": "D01"}


def codes(data):
    customer, problems = validate_customer(data)
    assert customer is None
    return {(p.code, p.path) for p in problems}


def test_a_valid_moral_and_fisica_pass():
    moral, problems = validate_customer(MORAL)
    assert problems == [] and moral.rfc == "URE180429TM6"
    fisica, problems = validate_customer(FISICA)
    assert problems == [] and fisica.default_use == "D01"


def test_rfc_spaces_and_dashes_are_stripped_and_upper_cased():
    customer, _ = validate_customer({**MORAL, "rfc": " ure-180429 tm6 "})
    assert customer.rfc == "URE180429TM6"
    assert clean_rfc("cacx-760510-1p8") == "CACX7605101P8"


@pytest.mark.parametrize("rfc", ["URE18042", "URE181329TM6", "URE180432TM6", "1RE180429TM6", "URE180429TMX", "CACXX7605101P8", "CACX760510"])
def test_malformed_rfcs_are_rejected(rfc):
    assert ("CFDI40143", "rfc") in codes({**MORAL, "rfc": rfc})


def test_regimen_must_fit_the_persona():
    assert ("CFDI40158", "tax_regime") in codes({**MORAL, "tax_regime": "605"})  # sueldos y salarios: física only
    assert ("CFDI40158", "tax_regime") in codes({**FISICA, "tax_regime": "601", "default_use": "G03"})  # general de ley: moral only
    assert ("CFDI40157", "tax_regime") in codes({**MORAL, "tax_regime": "699"})


def test_use_must_be_allowed_for_regimen_and_persona():
    assert ("CFDI40161", "default_use") in codes({**MORAL, "default_use": "D01"})  # deducciones personales: física only
    assert ("CFDI40161", "default_use") in codes({**FISICA, "tax_regime": "605", "default_use": "G03"})  # 605 cannot use G03
    assert ("CFDI40160", "default_use") in codes({**MORAL, "default_use": "Z99"})
    assert ("CFDI40161", "default_use") in codes({**MORAL, "default_use": "CP01"})


def test_zip_must_exist():
    assert ("TIMBRA_ZIP_UNKNOWN", "zip") in codes({**MORAL, "zip": "00100"})
    assert ("TIMBRA_ZIP_REQUIRED", "zip") in codes({**MORAL, "zip": ""})


def test_publico_en_general_rules():
    ok, problems = validate_customer({"rfc": "XAXX010101000", "legal_name": "PUBLICO EN GENERAL"})
    assert problems == [] and (ok.tax_regime, ok.default_use) == ("616", "S01")
    assert ("CFDI40145", "legal_name") in codes({"rfc": "XAXX010101000", "legal_name": "VENTAS MOSTRADOR"})
    assert ("CFDI40158", "tax_regime") in codes({"rfc": "XAXX010101000", "legal_name": "PUBLICO EN GENERAL", "tax_regime": "601"})
    assert ("CFDI40161", "default_use") in codes({"rfc": "XAXX010101000", "legal_name": "PUBLICO EN GENERAL", "default_use": "G03"})
    assert ("CFDI40146", "rfc") in codes({**MORAL, "legal_name": "PUBLICO EN GENERAL"})


def test_foreign_customers_need_residence_and_tax_id():
    base = {"rfc": "XEXX010101000", "legal_name": "ACME INC", "tax_regime": "616", "default_use": "S01"}
    ok, problems = validate_customer({**base, "tax_id": "123456789", "tax_residence": "usa"})
    assert problems == [] and (ok.tax_residence, ok.tax_id) == ("USA", "123456789")
    assert {("TIMBRA_TAX_RESIDENCE_REQUIRED", "tax_residence"), ("TIMBRA_TAX_ID_REQUIRED", "tax_id")} <= codes(base)
    assert ("CFDI40152", "tax_residence") in codes({**base, "tax_id": "1", "tax_residence": "MEX"})
    assert ("CFDI40150", "tax_residence") in codes({**base, "tax_id": "1", "tax_residence": "QQQ"})
    assert ("CFDI40154", "tax_id") in codes({**MORAL, "tax_id": "123"})
    assert ("CFDI40151", "tax_residence") in codes({**MORAL, "tax_residence": "USA"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("EMPRESA EJEMPLO S.A. DE C.V.", "EMPRESA EJEMPLO"),
        ("Empresa Ejemplo, S.A. de C.V.", "Empresa Ejemplo"),
        ("EMPRESA EJEMPLO SA DE CV", "EMPRESA EJEMPLO"),
        ("CONSULTORES  UNIDOS S. DE R.L. DE C.V.", "CONSULTORES  UNIDOS"),
        ("FUNDACION AMIGOS A.C.", "FUNDACION AMIGOS"),
        ("INNOVA S.A.P.I. DE C.V.", "INNOVA"),
        ("  ESCUELA KEMPER URGATE ", "ESCUELA KEMPER URGATE"),
        ("CASA  SAUCEDO", "CASA  SAUCEDO"),
        ("Universidad Robótica Española", "Universidad Robótica Española"),
    ],
)
def test_name_loses_the_regimen_de_capital_and_keeps_its_spacing_and_case(raw, expected):
    assert clean_name(raw) == expected


def test_missing_name_and_bad_emails_and_unknown_fields():
    assert ("TIMBRA_LEGAL_NAME_REQUIRED", "legal_name") in codes({**MORAL, "legal_name": "  "})
    assert ("TIMBRA_EMAIL_INVALID", "emails") in codes({**MORAL, "emails": ["pagos@ure", "dos correos@x.mx"]})
    assert ("TIMBRA_FIELD_UNKNOWN", "razon") in codes({**MORAL, "razon": "x"})
    assert ("TIMBRA_EMAILS_TOO_MANY", "emails") in codes({**MORAL, "emails": [f"c{n}@ure.mx" for n in range(11)]})


def test_emails_are_deduplicated_and_email_joins_them():
    customer, _ = validate_customer({**MORAL, "email": "pagos@ure.mx", "emails": ["PAGOS@ure.mx", "conta@ure.mx"]})
    assert customer.emails == ["pagos@ure.mx", "conta@ure.mx"]
