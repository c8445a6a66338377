"""`up` / `down` as a user runs them (reduced to the SMTP sink, on free ports)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from timbra_shared.devstack.servers import free_port
from timbra_shared.devstack.testing import wait_gone, wait_until

pytestmark = pytest.mark.integration


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("MONGODB_URL", "KAFKA_BOOTSTRAP_SERVERS", "TIMBRA_ADMIN_KEY"):
        env.pop(name, None)
    env.update(
        TIMBRA_DATA_DIR=str(tmp_path / "data"),
        TIMBRA_MONGO_PORT=str(free_port()),
        TIMBRA_KAFKA_PORT=str(free_port()),
        TIMBRA_SMTP_PORT=str(free_port()),
        TIMBRA_SMTP_WEB_PORT=str(free_port()),
        TIMBRA_PARTITIONS="2",
    )
    return env


def _up(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "up.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "timbra_shared.devstack", "up", "--only", "smtp-sink"],
        env=env, stdout=out.open("w"), stderr=subprocess.STDOUT,
    )
    assert wait_until(lambda: "admin key" in out.read_text() or proc.poll() is not None, 120), out.read_text()
    assert proc.poll() is None, out.read_text()
    return proc, out


def _down(env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "timbra_shared.devstack", "down"], env=env,
                          capture_output=True, text=True, timeout=120)


def _children(data: Path) -> dict[str, int]:
    state = json.loads((data / "pids.json").read_text())
    return {name: info["pid"] for name, info in state["processes"].items()}


def test_up_prints_urls_and_key_then_down_stops_everything(tmp_path: Path):
    env = _env(tmp_path)
    data = Path(env["TIMBRA_DATA_DIR"])
    proc, out = _up(tmp_path, env)
    try:
        text = out.read_text()
        key = (data / "admin_key").read_text().strip()
        assert text.rstrip().endswith(key)
        for needle in ("http://127.0.0.1:8080", "/panel", "/portal/{issuer_slug}", "/console",
                       f"http://127.0.0.1:{env['TIMBRA_SMTP_WEB_PORT']}", "http://127.0.0.1:8090",
                       f"mongodb://127.0.0.1:{env['TIMBRA_MONGO_PORT']}/?replicaSet=rs0",
                       f"127.0.0.1:{env['TIMBRA_KAFKA_PORT']}"):
            assert needle in text
        assert int((data / "up.pid").read_text()) == proc.pid
        kids = _children(data)
        assert set(kids) == {"mongod", "tansu", "smtp-sink"}
        r = httpx.get(f"http://127.0.0.1:{env['TIMBRA_SMTP_WEB_PORT']}/healthz")
        assert r.status_code == 200

        # a second `up` on the same data folder refuses to start
        second = subprocess.run([sys.executable, "-m", "timbra_shared.devstack", "up"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "already running" in second.stdout

        res = _down(env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert proc.wait(30) == 0
        for pid in kids.values():
            assert wait_gone(pid)
        assert not (data / "up.pid").exists()
        assert "nothing was running" in _down(env).stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            _down(env)


def test_sigkilled_up_leaves_nothing_after_down(tmp_path: Path):
    env = _env(tmp_path)
    data = Path(env["TIMBRA_DATA_DIR"])
    proc, _ = _up(tmp_path, env)
    kids = _children(data)
    proc.kill()
    proc.wait(10)
    # the children got their parent-death signal; `down` sweeps whatever is left
    res = _down(env)
    assert res.returncode == 0
    for pid in kids.values():
        assert wait_gone(pid, 30), f"pid {pid} survived"


def test_up_fails_cleanly_when_a_port_is_taken(tmp_path: Path):
    env = _env(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(env["TIMBRA_SMTP_WEB_PORT"])))
        s.listen()
        res = subprocess.run([sys.executable, "-m", "timbra_shared.devstack", "up", "--only", "smtp-sink"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "already in use" in res.stdout
    assert not (Path(env["TIMBRA_DATA_DIR"]) / "up.pid").exists()
