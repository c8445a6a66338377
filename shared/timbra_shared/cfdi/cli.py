"""``timbra cfdi ...``: validate, cadena, verify and seal CFDI 4.0 files.

Exit codes: 0 ok/valid, 1 invalid, 2 usage or input error (missing file,
malformed XML, not a CFDI, CFDI 3.3, bad CSD). Never prints a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CfdiError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit(2) with usage; keep it one line
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _read(path: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise CfdiError("file_not_found", f"no existe el archivo: {path}")
    if not p.is_file():
        raise CfdiError("file_not_found", f"no es un archivo: {path}")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise CfdiError("file_unreadable", f"no se pudo leer {path}: {exc.strerror or exc}") from None


def _load(path: str):
    from .xmlparse import ensure_cfdi40, parse_xml

    root = parse_xml(_read(path))
    ensure_cfdi40(root)
    return root


def _cmd_validate(args) -> int:
    from .validate import validate

    root = _load(args.file)
    findings = validate(root, xsd=args.xsd, catalogs=not args.no_catalogs, check_dates=not args.no_dates)
    for f in findings:
        print(f"{f.code}\t{f.severity}\t{f.path}\t{f.message}")
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        print(f"inválido: {len(errors)} error(es), {len(findings) - len(errors)} advertencia(s)", file=sys.stderr)
        return 1
    print(f"válido ({len(findings)} advertencia(s))" if findings else "válido", file=sys.stderr)
    return 0


def _cmd_cadena(args) -> int:
    from .cadena import cadena_original

    sys.stdout.write(cadena_original(_load(args.file)))
    sys.stdout.write("\n")
    return 0


def _cmd_verify(args) -> int:
    from .seal import verify

    res = verify(_load(args.file))
    print("valid" if res.valid else f"invalid: {res.reason}")
    return 0 if res.valid else 1


def _cmd_seal(args) -> int:
    from .csd import load_csd
    from .seal import seal_xml

    root = _load(args.file)
    csd = load_csd(_read(args.cer), _read(args.key), args.password)
    out = seal_xml(root, csd, check_rfc=not args.no_rfc_check)
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return 0


def _parser() -> _Parser:
    p = _Parser(prog="timbra cfdi", description="Herramientas CFDI 4.0 de Timbra")
    sub = p.add_subparsers(dest="cmd", metavar="{validate,cadena,verify,seal}", parser_class=_Parser)
    v = sub.add_parser("validate", help="valida reglas del SAT; imprime cada hallazgo con su código")
    v.add_argument("file")
    v.add_argument("--xsd", action="store_true", help="valida también contra los XSD del SAT")
    v.add_argument("--no-catalogs", action="store_true", help="no revisa catálogos del SAT")
    v.add_argument("--no-dates", action="store_true", help="no revisa el rango de Fecha (72 h / futuro)")
    v.set_defaults(fn=_cmd_validate)
    c = sub.add_parser("cadena", help="imprime la cadena original")
    c.add_argument("file")
    c.set_defaults(fn=_cmd_cadena)
    r = sub.add_parser("verify", help="verifica el Sello con el Certificado incluido")
    r.add_argument("file")
    r.set_defaults(fn=_cmd_verify)
    s = sub.add_parser("seal", help="sella el XML con un CSD y lo escribe en stdout")
    s.add_argument("file")
    s.add_argument("--cer", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--no-rfc-check", action="store_true", help="permite un CSD de RFC distinto al del Emisor")
    s.set_defaults(fn=_cmd_seal)
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(parser.format_usage().strip(), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if not getattr(args, "fn", None):
        print(parser.format_usage().strip(), file=sys.stderr)
        return 2
    try:
        return args.fn(args)
    except CfdiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # last resort: one line, never a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
