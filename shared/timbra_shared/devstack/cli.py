"""`timbra up` / `timbra down` (also `python -m timbra_shared.devstack up|down`)."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import signal
import sys
import time
from pathlib import Path

from .platform import PROCESSES, Platform, PlatformConfig, PlatformError
from .supervisor import ProcessFailed, kill_run, pid_alive

__all__ = ["up", "down", "main"]


def _say(msg: str) -> None:
    print(f"[timbra] {msg}", flush=True)


def _scale(specs: list[str]) -> dict[str, int]:
    """``["stamping=2", "cfdi-builder=3"]`` -> instances per service (extra ones get free ports)."""
    from .platform import SERVICES

    instances: dict[str, int] = {}
    for spec in specs:
        name, _, count = spec.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise PlatformError(f"--scale {spec}: expected <service>=<n> with one of {', '.join(SERVICES)}")
        instances[name] = int(count)
    return instances


def _config_from_args(args: argparse.Namespace) -> PlatformConfig:
    overrides: dict = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    for attr in ("mongo_port", "kafka_port", "partitions"):
        value = getattr(args, attr, None)
        if value is not None:
            overrides[attr] = value
    if getattr(args, "only", None):
        overrides["processes"] = [p.strip() for p in args.only.split(",") if p.strip()]
    if getattr(args, "skip_missing", False):
        overrides["skip_missing"] = True
    if getattr(args, "scale", None):
        overrides["instances"] = _scale(args.scale)
    config = PlatformConfig.from_env(**overrides)
    if getattr(args, "api_port", None):
        config.ports["ingress"] = args.api_port
    return config


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_up_process(pid: int) -> bool:
    """Guard against pid reuse: the pid must still be a `timbra up` interpreter."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True
    return b"up" in cmdline and (b"timbra" in cmdline or b"devstack" in cmdline or b"python" in cmdline)


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _cleanup_previous_run(config: PlatformConfig) -> None:
    state = _read_state(config.state_file)
    run_id, owner = state.get("run_id"), state.get("supervisor_pid")
    if run_id and not (owner and pid_alive(owner)):
        found = kill_run(run_id, grace=5)
        if found:
            _say(f"stopped {len(found)} leftover process(es) of a previous run")


def _banner(platform: Platform, elapsed: float) -> str:
    urls = platform.urls()
    width = max(len(k) for k in urls) + 2
    lines = ["", f"Timbra is up ({elapsed:.1f}s). Ctrl-C (or `make down`) stops everything.", ""]
    lines += [f"  {k.ljust(width)}{v}" for k, v in urls.items()]
    lines += ["", f"  {'admin key'.ljust(width)}{platform.admin_key}", ""]
    return "\n".join(lines)


def _up_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timbra up", description="Run the whole Timbra platform locally (foreground).")
    p.add_argument("--data-dir", help="local data folder (default: <repo>/.data, env TIMBRA_DATA_DIR)")
    p.add_argument("--mongo-port", type=int, help="embedded mongod port (default 27018, env TIMBRA_MONGO_PORT)")
    p.add_argument("--kafka-port", type=int, help="embedded tansu port (default 19092, env TIMBRA_KAFKA_PORT)")
    p.add_argument("--api-port", type=int, help="public API / ingress port (default 8080, env TIMBRA_PORT_INGRESS)")
    p.add_argument("--partitions", type=int, help="partitions per topic (env TIMBRA_PARTITIONS)")
    p.add_argument("--only", help="comma-separated subset of: " + ",".join(s.name for s in PROCESSES))
    p.add_argument("--skip-missing", action="store_true", help="skip processes whose module is not installed")
    p.add_argument("--scale", action="append", metavar="SERVICE=N", help="run N instances of a service in its consumer groups (repeatable)")
    p.add_argument("--no-autorestart", action="store_true", help="do not restart processes that crash")
    return p


async def _run_up(platform: Platform) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            _say(f"{signal.Signals(signum).name}: stopping…")
            stop.set()
        else:  # impatient: kill everything now
            _say("second signal: killing every process")
            for name in platform.supervisor.names:
                platform.supervisor[name].send_signal(signal.SIGKILL)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)

    t0 = time.monotonic()
    starting = asyncio.create_task(platform.start())
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await platform.stop()
        return 130
    if starting.exception() is not None:
        waiting.cancel()
        exc = starting.exception()
        _say(f"start failed: {exc}")
        return 1
    print(_banner(platform, time.monotonic() - t0), flush=True)
    await waiting
    await platform.stop()
    _say("stopped")
    return 0


def up(argv: list[str] | None = None) -> int:
    """Start the platform in the foreground; block until Ctrl-C / SIGTERM; stop it."""
    args = _up_parser().parse_args(argv)
    try:
        config = _config_from_args(args)
    except (ValueError, PlatformError) as exc:
        _say(f"bad configuration: {exc}")
        return 2
    config.autorestart = not args.no_autorestart
    config.data_dir.mkdir(parents=True, exist_ok=True)

    other = _read_pid(config.pid_file)
    if other and other != os.getpid() and _is_up_process(other):
        _say(f"already running (pid {other}, {config.pid_file}); stop it with `make down`")
        return 1
    _cleanup_previous_run(config)
    config.pid_file.write_text(f"{os.getpid()}\n")

    platform = Platform(config, echo=_say)

    def cleanup() -> None:
        platform.stop_sync()
        if _read_pid(config.pid_file) == os.getpid():
            config.pid_file.unlink(missing_ok=True)

    atexit.register(cleanup)
    _say(f"data folder {config.data_dir}; logs in {config.log_dir}")
    try:
        return asyncio.run(_run_up(platform))
    except KeyboardInterrupt:
        return 130
    except (PlatformError, ProcessFailed) as exc:
        _say(str(exc))
        return 1
    finally:
        cleanup()
        atexit.unregister(cleanup)


def down(argv: list[str] | None = None) -> int:
    """Stop what `timbra up` started (SIGTERM to it; leftovers are killed by run id)."""
    p = argparse.ArgumentParser(prog="timbra down", description="Stop what `timbra up` started.")
    p.add_argument("--data-dir", help="local data folder (default: <repo>/.data, env TIMBRA_DATA_DIR)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a clean stop")
    args = p.parse_args(argv)
    config = _config_from_args(args)
    did_something = False

    pid = _read_pid(config.pid_file)
    if pid and _is_up_process(pid):
        did_something = True
        _say(f"stopping timbra up (pid {pid})…")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            _say(f"pid {pid} did not stop in {args.timeout:.0f}s; killing it")
            os.kill(pid, signal.SIGKILL)

    state = _read_state(config.state_file)
    if state.get("run_id"):
        found = kill_run(state["run_id"], grace=10)
        if found:
            did_something = True
            _say(f"killed {len(found)} leftover process(es)")
    if pid and not pid_alive(pid):
        config.pid_file.unlink(missing_ok=True)
    _say("stopped" if did_something else "nothing was running")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("up", "down"):
        print("usage: python -m timbra_shared.devstack {up|down} [options]", file=sys.stderr)
        return 2
    return (up if argv[0] == "up" else down)(argv[1:])
