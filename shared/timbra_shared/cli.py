"""The ``timbra`` console script.

- ``timbra cfdi validate|cadena|verify|seal``: work on CFDI files.
- ``timbra up`` / ``timbra down``: the embedded local platform.
- ``timbra demo``: create an issuer with a generated test CSD, grant credits, issue one invoice
  through the public API and wait until it is emailed.
"""

import sys


def _usage() -> int:
    print("uso: timbra {cfdi,up,down,demo} ...\n"
          "  timbra cfdi validate|cadena|verify|seal FILE.xml   herramientas sobre archivos CFDI\n"
          "  timbra up | timbra down                            plataforma local embebida\n"
          "  timbra demo [--url URL] [--admin-key KEY]          emite una factura de prueba de punta a punta", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        return _usage()
    command, rest = args[0], args[1:]
    if command == "cfdi":
        from timbra_shared.cfdi.cli import main as cfdi_main

        return cfdi_main(rest)
    if command == "up":
        from timbra_shared.devstack.cli import up

        return up(rest) or 0
    if command == "down":
        from timbra_shared.devstack.cli import down

        return down(rest) or 0
    if command == "demo":
        from timbra_shared.demo import main as demo_main

        return demo_main(rest)
    return _usage()


if __name__ == "__main__":
    sys.exit(main())
