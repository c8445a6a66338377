"""``python -m timbra_shared.sandbox_pac``: serve the sandbox PAC on ``TIMBRA_HTTP_PORT`` (default 8090)."""

import os

import uvicorn

from timbra_shared.sandbox_pac.app import create_app


def main() -> None:
    data_dir = os.environ.get("TIMBRA_DATA_DIR", ".data")
    app = create_app(data_dir, token=os.environ.get("TIMBRA_PAC_TOKEN", "sandbox-token"))
    uvicorn.run(app, host=os.environ.get("TIMBRA_HTTP_HOST", "127.0.0.1"), port=int(os.environ.get("TIMBRA_HTTP_PORT", "8090")), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
