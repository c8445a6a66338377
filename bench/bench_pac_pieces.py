"""What the sandbox PAC spends per stamp, piece by piece, in one process: parse, the checks a PAC
makes (CFDI40 rules and the sello, which recomputes the cadena original), the TFD (its cadena and
SAT's RSA signature) and the JSON envelope of the answer.

    .venv/bin/python bench/bench_pac_pieces.py [--against REV] [--rounds 150]

``--against REV`` compares with another revision of ``shared/timbra_shared`` (extracted with
``git archive`` and imported under another package name), interleaving the two in short turns so
that a shared machine's changing speed hits both alike; it prints each piece's median per call
and the ratio. The JSON piece compares the standard library (REV) with orjson (this checkout)
only when REV predates orjson.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "shared"))

from timbra_shared.cfdi import build, load_csd, seal  # noqa: E402
from timbra_shared.cfdi.fecha import fecha_local  # noqa: E402
from timbra_shared.cfdi.testing import make_csd, sample_invoice  # noqa: E402


def extract(rev: str, into: Path) -> str:
    """``shared/timbra_shared`` at ``rev`` as the package ``timbra_against`` under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "shared/timbra_shared"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "timbra_against"
    (into / "shared" / "timbra_shared").rename(package)
    for source in package.rglob("*.py"):  # its absolute imports must stay inside the copy
        text = source.read_text()
        if "timbra_shared" in text:
            source.write_text(text.replace("timbra_shared", "timbra_against"))
    sys.path.insert(0, str(into))
    return "timbra_against"


def pieces(package: str, xml: bytes, pac_csd) -> dict:
    def module(name: str):
        return importlib.import_module(f"{package}.{name}")

    parse_xml = module("cfdi.xmlparse").parse_xml
    cadena_original = module("cfdi.cadena").cadena_original
    validate = module("cfdi.validate").validate
    stamp_tfd = module("cfdi.tfd").stamp
    csd = module("cfdi.csd").load_csd(*pac_csd)
    uses_orjson = "orjson" in Path(importlib.util.find_spec(f"{package}.sandbox_pac.store").origin).read_text()
    root = parse_xml(xml)
    answer = {"status": "success", "message": None, "messageDetail": None,
              "data": {"cfdi": stamp_tfd(parse_xml(xml), csd, rfc_prov_certif="SPR190613I52")[0].decode(), "uuid": "X"}}
    if uses_orjson:
        import orjson

        def envelope():
            return orjson.loads(orjson.dumps(answer))
    else:
        def envelope():
            return json.loads(json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode())
    return {
        "parse": lambda: parse_xml(xml),
        "cadena original": lambda: cadena_original(root),
        "checks (rules + sello)": lambda: validate(root, catalogs=True, check_dates=False),
        "TFD (cadena + signature)": lambda: stamp_tfd(parse_xml(xml), csd, rfc_prov_certif="SPR190613I52"),
        "answer JSON out and in": envelope,
    }


def timed(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="a git revision to compare with")
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--calls", type=int, default=20, help="calls per turn")
    args = parser.parse_args()

    csd = load_csd(*make_csd(), "12345678a")
    xml = seal(build(sample_invoice(Fecha=fecha_local("42501"), Folio="B1")), csd)
    pac_csd = (*make_csd(rfc="SAT970701NN3", name="SERVICIO DE ADMINISTRACION TRIBUTARIA"), "12345678a")
    current = pieces("timbra_shared", xml, pac_csd)
    with tempfile.TemporaryDirectory() as tmp:
        other = pieces(extract(args.against, Path(tmp)), xml, pac_csd) if args.against else None
        print(f"one sealed CFDI of {len(xml)} bytes (sample_invoice); median microseconds per call over {args.rounds} turns of {args.calls} calls")
        for name, fn in current.items():
            mine: list[float] = []
            theirs: list[float] = []
            for _ in range(args.rounds):
                mine.append(timed(fn, args.calls))
                if other:
                    theirs.append(timed(other[name], args.calls))
            if other:
                a, b = statistics.median(theirs), statistics.median(mine)
                print(f"  {name:26s} {args.against}: {a:8.1f}   this checkout: {b:8.1f}   ratio {b / a:.2f}")
            else:
                print(f"  {name:26s} {statistics.median(mine):8.1f}")


if __name__ == "__main__":
    main()
