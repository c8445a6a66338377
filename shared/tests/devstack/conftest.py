"""Fixtures for the devstack tests: throwaway child scripts, free ports, temp dirs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from timbra_shared.devstack.supervisor import Supervisor

HTTP_CHILD = textwrap.dedent(
    '''
    import http.server, os, signal, subprocess, sys, time

    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("GRANDCHILD_PIDFILE"):
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open(os.environ["GRANDCHILD_PIDFILE"], "w").write(str(g.pid))
    time.sleep(float(os.environ.get("HEALTH_DELAY", "0")))

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 200 if self.path == "/healthz" and not os.environ.get("ALWAYS_503") else 503
            self.send_response(code); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a):
            pass

    print("child up on", os.environ["TIMBRA_HTTP_PORT"], flush=True)
    http.server.HTTPServer(("127.0.0.1", int(os.environ["TIMBRA_HTTP_PORT"])), H).serve_forever()
    '''
)

CRASH_CHILD = "import sys; print('boom: missing setting', flush=True); sys.exit(3)\n"


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "scripts"
    d.mkdir()
    (d / "http_child.py").write_text(HTTP_CHILD)
    (d / "crash_child.py").write_text(CRASH_CHILD)
    return {"http": d / "http_child.py", "crash": d / "crash_child.py"}


@pytest.fixture
def supervisor(tmp_path: Path):
    sup = Supervisor(tmp_path / "logs", grace=3.0, state_file=tmp_path / "pids.json")
    yield sup
    sup.stop_all()



