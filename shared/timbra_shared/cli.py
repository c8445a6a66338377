"""The ``timbra`` console script.

- ``timbra cfdi validate|cadena|verify|seal``: work on CFDI files.
- ``timbra up`` / ``timbra down``: the embedded local platform.
- ``timbra demo``: create an issuer with a generated test CSD, grant credits, issue one invoice
  through the public API and wait until it is emailed.
- ``timbra asyncapi [FILE]``: the AsyncAPI document of the topics issuers may use.
- ``timbra dlq list|show|replay|discard``: the dead-letter store through ``/v1/ops`` (``ops_cli``).
"""

import sys


def _usage() -> int:
    print("uso: timbra {cfdi,up,down,demo} ...\n"
          "  timbra cfdi validate|cadena|verify|seal FILE.xml   herramientas sobre archivos CFDI\n"
          "  timbra up | timbra down                            plataforma local embebida\n"
          "  timbra demo [--url URL] [--admin-key KEY]          emite una factura de prueba de punta a punta"
          "\n  timbra asyncapi [ARCHIVO.json]                      el documento AsyncAPI de invoice.requested y los eventos de estado"
          "\n  timbra dlq list|show|replay|discard                 mensajes muertos (llave de operador o de administrador)", file=sys.stderr)
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
    if command == "asyncapi":
        import json

        from timbra_shared.apidocs import asyncapi_document

        text = json.dumps(asyncapi_document(), indent=2, ensure_ascii=False) + "\n"
        if rest:
            with open(rest[0], "w", encoding="utf-8") as out:
                out.write(text)
        else:
            sys.stdout.write(text)
        return 0
    if command == "dlq":
        from timbra_shared.ops_cli import main as dlq_main

        return dlq_main(rest)
    if command == "demo":
        from timbra_shared.demo import main as demo_main

        return demo_main(rest)
    return _usage()


if __name__ == "__main__":
    sys.exit(main())
