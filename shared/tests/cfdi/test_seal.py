"""Sealing and verification; golden files with generated and SAT certificates; TFD 1.1."""

from __future__ import annotations

import base64
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from lxml import etree

from timbra_shared.cfdi import (
    Csd,
    CsdError,
    build,
    cadena_of_model,
    cadena_original,
    cadena_xslt,
    load_csd,
    parse_xml,
    seal,
    seal_xml,
    to_xml,
    validate,
    verify,
)
from timbra_shared.cfdi.csd import no_certificado, rfc_from_certificate
from timbra_shared.cfdi.testing import make_csd, sample_invoice, sample_pago
from timbra_shared.cfdi.tfd import build_tfd, find_tfd, insert_tfd, stamp, verify_tfd
from timbra_shared.cfdi.xsd import xsd_errors

PWD = "12345678a"
UPDATE = os.environ.get("TIMBRA_UPDATE_GOLDEN") == "1"


def _golden(golden_dir: Path, name: str, content: str) -> None:
    path = golden_dir / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    assert path.exists(), f"golden file {path} missing (run with TIMBRA_UPDATE_GOLDEN=1 to create it)"
    assert content == path.read_text(encoding="utf-8"), f"output differs from golden file {name}"


def _mask(xml: bytes) -> str:
    """Sello/Certificado vary with the randomly generated key; everything else is fixed."""
    s = xml.decode("utf-8")
    s = re.sub(r' Certificado="[^"]*"', ' Certificado="<CERTIFICADO>"', s)
    s = re.sub(r' Sello="[^"]*"', ' Sello="<SELLO>"', s)
    return s


def _unchecked_csd(cer: bytes, key: bytes) -> Csd:
    """A Csd object without load_csd's checks (to seal with a FIEL / expired cert on purpose)."""
    from cryptography.hazmat.primitives.serialization import Encoding, load_der_private_key

    cert = x509.load_der_x509_certificate(cer)
    return Csd(
        certificate=cert,
        private_key=load_der_private_key(key, PWD.encode()),
        serial=no_certificado(cert),
        rfc=rfc_from_certificate(cert),
        legal_name="",
        valid_from=cert.not_valid_before_utc,
        valid_to=cert.not_valid_after_utc,
        certificate_b64=base64.b64encode(cert.public_bytes(Encoding.DER)).decode(),
    )


# --- seal / verify ---------------------------------------------------------------


def test_seal_model_and_verify(gen_csd):
    b = build(sample_invoice())
    xml = seal(b, gen_csd)
    assert verify(xml).valid
    assert b.Sello and b.NoCertificado == gen_csd.serial and b.Certificado == gen_csd.certificate_b64
    root = parse_xml(xml)
    assert root.get("NoCertificado") == gen_csd.serial
    assert cadena_xslt(xml) == cadena_of_model(b)  # the fast path signed exactly SAT's cadena
    assert xsd_errors(root) == []
    assert to_xml(b) == xml


def test_seal_xml_equals_model_path(gen_csd):
    b = build(sample_invoice())
    unsigned = to_xml(b)
    sealed_from_xml = seal_xml(unsigned, gen_csd)
    sealed_from_model = seal(build(sample_invoice()), gen_csd)
    assert parse_xml(sealed_from_xml).get("Sello") == parse_xml(sealed_from_model).get("Sello")
    assert verify(sealed_from_xml).valid


def test_seal_refuses_csd_of_another_rfc(gen_csd):
    c = sample_invoice()
    c.Emisor.Rfc = "URE180429TM6"
    with pytest.raises(CsdError) as e:
        seal(build(c), gen_csd)
    assert e.value.code == CsdError.RFC_MISMATCH


@pytest.mark.parametrize(
    "mutation,needle",
    [
        (lambda s: s.replace('Total="', 'Total="1', 1), "cadena"),
        (lambda s: s.replace("Consultoría", "Consultoria"), "cadena"),
        (lambda s: s.replace('NoCertificado="3', 'NoCertificado="4', 1), "NoCertificado"),
        (lambda s: re.sub(r' Sello="[^"]*"', ' Sello=""', s), "Sello"),
        (lambda s: re.sub(r' Certificado="[^"]*"', ' Certificado="AAAA"', s), "Certificado"),
    ],
)
def test_verify_detects_tampering(gen_csd, mutation, needle):
    xml = seal(build(sample_invoice()), gen_csd).decode()
    res = verify(mutation(xml).encode())
    assert not res.valid and needle in res.reason


def test_verify_with_other_certificate_fails(gen_csd):
    xml = seal(build(sample_invoice()), gen_csd)
    other_cer, _ = make_csd("CACX7605101P8", "XOCHILT CASAS CHAVEZ")
    root = parse_xml(xml)
    root.set("Certificado", base64.b64encode(other_cer).decode())
    root.set("NoCertificado", no_certificado(x509.load_der_x509_certificate(other_cer)))
    res = verify(etree.tostring(root, encoding="UTF-8"))
    assert not res.valid and "CFDI40102" in res.reason


def test_seal_pago_and_verify(gen_csd):
    xml = seal(build(sample_pago()), gen_csd)
    assert verify(xml).valid
    assert xsd_errors(parse_xml(xml)) == []
    assert cadena_original(xml) == cadena_xslt(xml)


# --- golden files --------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["csd", "csd_expired"])
def test_golden_generated_certificates(variant, golden_dir):
    if variant == "csd":
        cer, key = make_csd()
        csd = load_csd(cer, key, PWD)
    else:
        cer, key = make_csd(expired=True)
        with pytest.raises(CsdError):
            load_csd(cer, key, PWD)
        # sealing happened while it was valid: load it "as of" then
        at = x509.load_der_x509_certificate(cer).not_valid_before_utc + timedelta(days=30)
        csd = load_csd(cer, key, PWD, at=at)
    for doc, builder in (("invoice", sample_invoice), ("pago", sample_pago)):
        b = build(builder())
        xml = seal(b, csd)
        assert verify(xml).valid
        _golden(golden_dir, f"{doc}_generated_{variant}.xml", _mask(xml))
        _golden(golden_dir, f"{doc}_generated_{variant}.cadena.txt", cadena_of_model(b) + "\n")


def test_golden_generated_fiel_is_flagged(golden_dir):
    cer, key = make_csd(fiel=True)
    with pytest.raises(CsdError) as e:
        load_csd(cer, key, PWD)
    assert e.value.code == CsdError.FIEL_NOT_CSD
    fiel = _unchecked_csd(cer, key)
    c = sample_invoice(Fecha=None)
    xml = seal(build(c), fiel)
    assert verify(xml).valid  # mathematically valid signature...
    codes = {f.code for f in validate(xml, check_dates=False)}
    assert "CFDI40106" in codes  # ...but SAT rejects a FIEL-sealed CFDI
    body = re.sub(r' Fecha="[^"]*"', ' Fecha="<FECHA>"', _mask(xml))
    _golden(golden_dir, "invoice_generated_fiel.xml", body)


def test_golden_sat_csd_full(sat_csd, golden_dir):
    # PKCS#1 v1.5 is deterministic: with SAT's fixed key the whole sealed XML is a golden file.
    for doc, builder in (("invoice", sample_invoice), ("pago", sample_pago)):
        b = build(builder())
        xml = seal(b, sat_csd)
        assert verify(xml).valid
        assert parse_xml(xml).get("NoCertificado") == "30001000000500003416"
        _golden(golden_dir, f"{doc}_sat_EKU9003173C9.xml", xml.decode("utf-8"))
        errors = [f for f in validate(xml, check_dates=False, xsd=True) if f.severity == "error"]
        assert errors == []


def test_sat_expired_csd_seals_past_documents(sat_csd_files):
    from datetime import datetime, timezone

    cer, key = sat_csd_files("CACX7605101P8-expired")
    with pytest.raises(CsdError) as e:
        load_csd(cer, key, PWD)
    assert e.value.code == CsdError.EXPIRED
    csd = load_csd(cer, key, PWD, at=datetime(2022, 6, 1, tzinfo=timezone.utc))
    c = sample_invoice(Fecha="2022-06-01T10:00:00")
    c.Emisor.Rfc, c.Emisor.Nombre, c.Emisor.RegimenFiscal = "CACX7605101P8", "XOCHILT CASAS CHAVEZ", "612"
    xml = seal(build(c), csd)
    assert verify(xml).valid
    assert not any(f.code == "CFDI40106" for f in validate(xml, check_dates=False))
    # a current Fecha is outside the certificate's validity
    c2 = sample_invoice(Fecha="2025-01-15T10:00:00")
    c2.Emisor.Rfc, c2.Emisor.Nombre, c2.Emisor.RegimenFiscal = "CACX7605101P8", "XOCHILT CASAS CHAVEZ", "612"
    xml2 = seal(build(c2), csd)
    assert any(f.code == "CFDI40106" for f in validate(xml2, check_dates=False))


def test_seal_sat_example_files_with_sat_csd(sat_examples, sat_csd):
    for path in sat_examples:
        sealed = seal_xml(path.read_bytes(), sat_csd, check_rfc=False)
        assert verify(sealed).valid, path.name
        assert cadena_original(sealed) == cadena_xslt(sealed)


# --- TFD 1.1 ---------------------------------------------------------------------------


def test_tfd_build_insert_verify(gen_csd):
    pac_cer, pac_key = make_csd("SPR190613I52", "SOLUCION DE PRUEBAS SA DE CV")
    pac = load_csd(pac_cer, pac_key, PWD)
    xml = seal(build(sample_invoice()), gen_csd)
    stamped, tfd = stamp(xml, pac, rfc_prov_certif="SPR190613I52", fecha_timbrado="2025-01-15T10:31:00")
    assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}", tfd.UUID)
    assert tfd.SelloCFD == parse_xml(xml).get("Sello") and tfd.NoCertificadoSAT == pac.serial
    assert verify_tfd(tfd, pac_cer, sello_cfd=tfd.SelloCFD)
    assert not verify_tfd(tfd, gen_csd.certificate.public_bytes(__import__("cryptography").hazmat.primitives.serialization.Encoding.DER))
    # stamping does not change the CFDI's cadena: the seal still verifies
    assert verify(stamped).valid
    assert find_tfd(stamped) == tfd
    el = parse_xml(stamped).find(".//{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital")
    assert cadena_original(el) == cadena_xslt(el) == tfd.cadena
    assert tfd.cadena.startswith(f"||1.1|{tfd.UUID}|2025-01-15T10:31:00|SPR190613I52|")
    assert xsd_errors(parse_xml(stamped)) == []


def test_tfd_with_leyenda_and_existing_complemento(gen_csd):
    pac_cer, pac_key = make_csd("SPR190613I52", "SOLUCION DE PRUEBAS SA DE CV")
    pac = load_csd(pac_cer, pac_key, PWD)
    xml = seal(build(sample_pago()), gen_csd)
    tfd = build_tfd(xml, pac, rfc_prov_certif="SPR190613I52", leyenda="Leyenda de prueba",
                    uuid="ed1752fe-e865-4ff2-bfe1-0f552e770dc9")
    assert tfd.UUID == "ED1752FE-E865-4FF2-BFE1-0F552E770DC9"
    stamped = insert_tfd(xml, tfd)
    comp = parse_xml(stamped).find("{http://www.sat.gob.mx/cfd/4}Complemento")
    assert [etree.QName(e).localname for e in comp] == ["Pagos", "TimbreFiscalDigital"]
    assert verify(stamped).valid and verify_tfd(find_tfd(stamped), pac_cer)
    assert "|Leyenda de prueba|" in tfd.cadena
