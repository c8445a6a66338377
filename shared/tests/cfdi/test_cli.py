"""timbra cfdi validate | cadena | verify | seal — via main() and via python -m."""

from __future__ import annotations

import subprocess
import sys

import pytest

from timbra_shared.cfdi import build, cadena_xslt, to_xml, verify
from timbra_shared.cfdi.cli import main
from timbra_shared.cfdi.testing import make_csd, sample_invoice

PWD = "12345678a"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cer, key = make_csd()
    (d / "csd.cer").write_bytes(cer)
    (d / "csd.key").write_bytes(key)
    (d / "unsigned.xml").write_bytes(to_xml(build(sample_invoice(Fecha=None))))
    (d / "malformed.xml").write_bytes(b"<cfdi:Comprobante><oops></cfdi:Comprobante>")
    (d / "notcfdi.xml").write_bytes(b"<?xml version='1.0'?><factura><total>1</total></factura>")
    (d / "cfdi33.xml").write_bytes(
        b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/3" Version="3.3" Fecha="2020-01-01T00:00:00"/>'
    )
    return d


def _seal(files, capsysbinary) -> bytes:
    rc = main(["seal", str(files / "unsigned.xml"), "--cer", str(files / "csd.cer"), "--key", str(files / "csd.key"),
               "--password", PWD])
    out = capsysbinary.readouterr().out
    assert rc == 0
    return out


def test_seal_then_verify_then_validate(files, capsysbinary):
    sealed = _seal(files, capsysbinary)
    assert verify(sealed).valid
    (files / "sealed.xml").write_bytes(sealed)
    assert main(["verify", str(files / "sealed.xml")]) == 0
    assert capsysbinary.readouterr().out.strip() == b"valid"
    assert main(["validate", str(files / "sealed.xml"), "--xsd"]) == 0
    tampered = sealed.replace(b'Descripcion="Anualidad"', b'Descripcion="Anualidad 2"')
    (files / "tampered.xml").write_bytes(tampered)
    assert main(["verify", str(files / "tampered.xml")]) == 1
    assert capsysbinary.readouterr().out.startswith(b"invalid: ")


def test_cadena_prints_only_the_cadena(files, capsys):
    assert main(["cadena", str(files / "unsigned.xml")]) == 0
    out, err = capsys.readouterr()
    assert out == cadena_xslt((files / "unsigned.xml").read_bytes()) + "\n"


def test_validate_prints_codes_and_exits_1(files, capsys):
    bad = (files / "unsigned.xml").read_bytes().replace(b'SubTotal="6021.00"', b'SubTotal="6021.50"')
    (files / "bad.xml").write_bytes(bad)
    assert main(["validate", str(files / "bad.xml")]) == 1
    out = capsys.readouterr().out
    assert "CFDI40108" in out and "CFDI40119" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["validate", "/nonexistent/x.xml"], "no existe"),
        (["cadena", "{d}/malformed.xml"], "mal formado"),
        (["verify", "{d}/notcfdi.xml"], "no es un CFDI"),
        (["validate", "{d}/cfdi33.xml"], "3.3"),
        (["cadena", "{d}/cfdi33.xml"], "3.3"),
        (["seal", "{d}/unsigned.xml", "--cer", "{d}/csd.cer", "--key", "{d}/csd.key", "--password", "mala"], "contraseña"),
        (["seal", "{d}/unsigned.xml"], "--cer"),
        (["frobnicate"], "invalid choice"),
        ([], "usage"),
    ],
)
def test_clear_errors_exit_2_without_traceback(files, capsys, args, needle):
    rc = main([a.format(d=files) for a in args])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in out + err
    assert needle.lower() in err.lower()
    assert len(err.strip().splitlines()) <= 2


def test_python_dash_m(files):
    env_cmd = [sys.executable, "-m", "timbra_shared.cfdi.cli"]
    r = subprocess.run(env_cmd + ["cadena", str(files / "unsigned.xml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("||4.0|") and r.stdout.endswith("||\n")
    r = subprocess.run(env_cmd + ["verify", str(files / "cfdi33.xml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error:")
    r = subprocess.run(env_cmd + ["validate", str(files / "missing.xml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no existe" in r.stderr


def test_sat_examples_through_cli(sat_examples, capsys):
    for path in sat_examples:
        assert main(["cadena", str(path)]) == 0
        assert capsys.readouterr().out == cadena_xslt(path.read_bytes()) + "\n"
        assert main(["verify", str(path)]) == 1  # SAT's examples are unsealed
        assert capsys.readouterr().out.startswith("invalid: ")
        assert main(["validate", str(path)]) == 1
        assert "CFDI40" in capsys.readouterr().out
