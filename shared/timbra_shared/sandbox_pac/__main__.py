"""``python -m timbra_shared.sandbox_pac``: serve the sandbox PAC on ``TIMBRA_HTTP_PORT`` (default 8090).

Environment: ``TIMBRA_DATA_DIR``, ``TIMBRA_PAC_TOKEN`` (the token that never expires),
``TIMBRA_PAC_USER``/``TIMBRA_PAC_PASSWORD`` (for ``/security/authenticate``), ``TIMBRA_PAC_FAST=1``
(skip the XSD check) and ``TIMBRA_PAC_RULES=0`` (skip the CFDI40xxx catalogue rules; the sello,
the certificate and the 72-hour window are always checked).
"""

import contextlib
import os

import uvicorn

from timbra_shared.http import EVENT_LOOP
from timbra_shared.sandbox_pac.app import create_app


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None or value == "" else value.strip().lower() in {"1", "true", "yes", "on"}


def main() -> None:
    data_dir = os.environ.get("TIMBRA_DATA_DIR", ".data")
    app = create_app(
        data_dir,
        token=os.environ.get("TIMBRA_PAC_TOKEN", "sandbox-token"),
        validate_xsd=not _flag("TIMBRA_PAC_FAST", False),
        validate_rules=_flag("TIMBRA_PAC_RULES", True),
        user=os.environ.get("TIMBRA_PAC_USER", "demo"),
        password=os.environ.get("TIMBRA_PAC_PASSWORD", "123456789"),
    )
    config = uvicorn.Config(app, host=os.environ.get("TIMBRA_HTTP_HOST", "127.0.0.1"), port=int(os.environ.get("TIMBRA_HTTP_PORT", "8090")), log_level="warning",
                            access_log=False, loop=EVENT_LOOP)
    server = uvicorn.Server(config)
    app.state.server = server
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


if __name__ == "__main__":
    main()
