"""Hardened XML parsing: XXE, billion laughs, external DTDs, oversized input."""

from __future__ import annotations

import pytest

from timbra_shared.cfdi import XmlError, cadena_original, parse_xml, validate, verify
from timbra_shared.cfdi.cli import main

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Serie="&xxe;"/>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Serie="&lol9;"/>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE cfdi SYSTEM "http://example.invalid/evil.dtd">
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0"/>"""

UTF16_XXE = XXE.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>').decode().encode("utf-16")


@pytest.mark.parametrize("payload", [XXE, BILLION_LAUGHS, EXTERNAL_DTD, UTF16_XXE], ids=["xxe", "billion_laughs", "external_dtd", "utf16_xxe"])
def test_dtd_and_entities_are_rejected(payload):
    with pytest.raises(XmlError) as e:
        parse_xml(payload)
    assert e.value.code in ("xml_forbidden_dtd", "xml_malformed")
    for fn in (cadena_original, validate):
        with pytest.raises(XmlError):
            fn(payload)
    assert not verify(payload).valid


def test_xxe_never_reads_local_files(tmp_path, capsys):
    f = tmp_path / "xxe.xml"
    f.write_bytes(XXE)
    assert main(["cadena", str(f)]) == 2
    out, err = capsys.readouterr()
    assert "root:" not in out + err and "DOCTYPE" in err and "Traceback" not in err


def test_size_bound():
    big = b'<a x="' + b"y" * (5 * 1024 * 1024) + b'"/>'
    with pytest.raises(XmlError) as e:
        parse_xml(big)
    assert e.value.code == "xml_too_large"
    assert parse_xml(b"<a/>", max_bytes=10).tag == "a"


def test_malformed_and_empty():
    with pytest.raises(XmlError) as e:
        parse_xml(b"<a><b></a>")
    assert e.value.code == "xml_malformed"
    with pytest.raises(XmlError) as e:
        parse_xml(b"   ")
    assert e.value.code == "xml_empty"
