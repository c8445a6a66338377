"""A small process supervisor for the local platform.

Every child is started in its own session (``start_new_session=True``) so that it
leads a process group; stopping a child signals the whole group, which also takes
down anything the child spawned.  Children additionally get ``PR_SET_PDEATHSIG``
(SIGTERM) so that they do not outlive a supervisor that was killed with SIGKILL,
and carry ``TIMBRA_DEVSTACK_RUN=<run id>`` in their environment so that
``timbra down`` can find leftovers of a run even when pid files are stale.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import os
import signal
import subprocess
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

RUN_ENV = "TIMBRA_DEVSTACK_RUN"
DEFAULT_GRACE = 10.0

__all__ = [
    "RUN_ENV",
    "ManagedProcess",
    "ProcessFailed",
    "Supervisor",
    "pid_alive",
    "kill_run",
]


class ProcessFailed(RuntimeError):
    """A supervised process exited or did not become healthy in time."""


# --------------------------------------------------------------------------- helpers

_PR_SET_PDEATHSIG = 1
try:  # resolved once, in the parent, so the pre-exec hook does as little as possible
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _prctl = None


def lower_priority(nice: int) -> None:
    """Give the calling process (and every thread it starts later) a lower CPU priority.

    With the kernel's autogroup scheduling (the default on desktop and most cloud kernels) a
    process's nice value only ranks it against its own session's threads, and every child here
    leads its own session; the session's group is what competes for the CPU, so its nice value
    (``/proc/self/autogroup``) is set too. Without autogroup the plain nice value does it."""
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(nice))
    except OSError:
        pass
    os.nice(nice)


def _make_preexec(parent_pid: int, nice: int = 0):
    """Children die (SIGTERM) when the thread that spawned them dies, and start at ``nice``.

    The death signal is only set when spawning from the main thread: PDEATHSIG fires when the
    *thread* that forked exits, which would be wrong for short-lived worker threads.
    """
    watch_parent = _prctl is not None and threading.current_thread() is threading.main_thread()
    if not watch_parent and nice <= 0:
        return None

    def preexec() -> None:  # runs in the child between fork and exec, after setsid()
        if watch_parent:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent_pid:  # parent already gone
                os._exit(1)
        if nice > 0:
            lower_priority(nice)

    return preexec


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid`` (Linux /proc scan)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0]=state, [1]=ppid, [2]=pgrp
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_run(run_id: str, grace: float = DEFAULT_GRACE) -> list[int]:
    """Stop every process whose environment carries ``TIMBRA_DEVSTACK_RUN=run_id``.

    Used by ``timbra down`` as a fallback. Returns the pids that were found.
    """
    needle = f"{RUN_ENV}={run_id}".encode()
    found: list[int] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    if not found:
        return []
    groups = set()
    for pid in found:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgid(0))  # never our own group
    for pgid in groups:
        _killpg(pgid, signal.SIGTERM)
    for pid in found:
        if pid_alive(pid) and os.getpgid(0) != _safe_getpgid(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in found):
        time.sleep(0.1)
    for pgid in groups:
        _killpg(pgid, signal.SIGKILL)
    for pid in found:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


def _safe_getpgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


# --------------------------------------------------------------------------- process


@dataclass(eq=False)
class ManagedProcess:
    """One child process that leads its own process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: str | None = None
    health_url: str | None = None
    port: int | None = None
    tier: int = 1  # higher tiers are stopped first (services before databases)
    nice: int = 0  # CPU priority below the default (see Platform: background processes)
    popen: subprocess.Popen | None = field(default=None, repr=False)
    started_at: float = 0.0
    restarts: int = 0
    stopping: bool = False  # set while we stop it on purpose

    # -- lifecycle ------------------------------------------------------------------
    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path,
        cwd: str | os.PathLike | None = None,
        health_url: str | None = None,
        port: int | None = None,
        tier: int = 1,
        nice: int = 0,
        inherit_env: bool = True,
    ) -> "ManagedProcess":
        full_env = dict(os.environ) if inherit_env else {}
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        mp = cls(
            name=name,
            argv=[str(a) for a in argv],
            env=full_env,
            log_path=Path(log_path),
            cwd=str(cwd) if cwd else None,
            health_url=health_url,
            port=port,
            tier=tier,
            nice=nice,
        )
        mp._launch()
        return mp

    def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab", buffering=0) as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"\n===== {stamp} starting {self.name}: {' '.join(self.argv)}\n".encode())
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_make_preexec(os.getpid(), self.nice),
                close_fds=True,
            )
        self.started_at = time.monotonic()
        self.stopping = False

    def relaunch(self) -> None:
        """Start the same argv/env again (the old process must be gone)."""
        if self.running:
            raise ProcessFailed(f"{self.name} is still running (pid {self.pid})")
        self.restarts += 1
        self._launch()

    # -- state ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def pgid(self) -> int | None:
        return self.pid  # session leader == group leader

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            data = self.log_path.read_bytes()[-20000:]
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    # -- signals --------------------------------------------------------------------
    def send_signal(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (no waiting)."""
        if self.popen is None:
            return
        if not _killpg(self.pid, sig) and self.running:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = DEFAULT_GRACE) -> int | None:
        """SIGTERM the group, wait up to ``grace`` s, then SIGKILL the group. Idempotent."""
        if self.popen is None:
            return None
        self.stopping = True
        if self.running:
            self.send_signal(signal.SIGTERM)
            self.wait(grace)
        self._reap_group()
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the group; for SIGKILL, also reap so the pid is gone."""
        self.send_signal(sig)
        if sig == signal.SIGKILL:
            self.wait(10)
            self._reap_group()

    def _reap_group(self) -> None:
        if self.popen is None:
            return
        if self.running:
            self.send_signal(signal.SIGKILL)
            self.wait(10)
        # grandchildren that outlived the leader still carry its pgid
        if _group_members(self.pgid):
            _killpg(self.pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _group_members(self.pgid):
                time.sleep(0.05)


# --------------------------------------------------------------------------- supervisor

_live_supervisors: "weakref.WeakSet[Supervisor]" = weakref.WeakSet()


def _atexit_stop_all() -> None:
    for sup in list(_live_supervisors):
        try:
            sup.stop_all()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


atexit.register(_atexit_stop_all)


class Supervisor:
    """Starts, watches, restarts and stops named child processes.

    ``stop_all()`` is synchronous, thread-safe and idempotent; it is also run at
    interpreter exit for every supervisor that still has children.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        grace: float = DEFAULT_GRACE,
        state_file: str | os.PathLike | None = None,
        run_id: str | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.grace = grace
        self.state_file = Path(state_file) if state_file else None
        self.run_id = run_id or uuid.uuid4().hex
        self._procs: dict[str, ManagedProcess] = {}
        self._lock = threading.RLock()
        _live_supervisors.add(self)

    # -- registry -------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._procs

    def __getitem__(self, name: str) -> ManagedProcess:
        try:
            return self._procs[name]
        except KeyError:
            raise KeyError(f"no process named {name!r}") from None

    def get(self, name: str) -> ManagedProcess | None:
        return self._procs.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._procs)

    def pid(self, name: str) -> int | None:
        return self[name].pid

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # -- lifecycle ------------------------------------------------------------------
    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        health_url: str | None = None,
        *,
        cwd: str | os.PathLike | None = None,
        port: int | None = None,
        tier: int = 1,
        nice: int = 0,
    ) -> ManagedProcess:
        with self._lock:
            old = self._procs.get(name)
            if old is not None and old.running:
                raise ProcessFailed(f"{name} is already running (pid {old.pid})")
            child_env = dict(env or {})
            child_env[RUN_ENV] = self.run_id
            mp = ManagedProcess.spawn(
                name,
                argv,
                env=child_env,
                log_path=self.log_path(name),
                cwd=cwd,
                health_url=health_url,
                port=port,
                tier=tier,
                nice=nice,
            )
            self._procs[name] = mp
            self._write_state()
            return mp

    def adopt(self, mp: ManagedProcess) -> ManagedProcess:
        """Put a process started elsewhere (e.g. mongod) under this supervisor."""
        with self._lock:
            self._procs[mp.name] = mp
            self._write_state()
            return mp

    def forget(self, name: str) -> None:
        with self._lock:
            self._procs.pop(name, None)
            self._write_state()

    async def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        """Poll the health URL until it answers 200; fail fast if the process exits."""
        mp = self[name]
        deadline = time.monotonic() + timeout
        delay = 0.05
        last_error = "no answer yet"
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if not mp.running:
                    raise ProcessFailed(
                        f"{name} exited with code {mp.returncode} before becoming healthy; "
                        f"log {mp.log_path}:\n{mp.log_tail()}"
                    )
                if mp.health_url is None:
                    return
                try:
                    resp = await client.get(mp.health_url)
                    if resp.status_code == 200:
                        return
                    last_error = f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise ProcessFailed(
                        f"{name} not healthy after {timeout:.0f}s at {mp.health_url} "
                        f"({last_error}); log {mp.log_path}:\n{mp.log_tail()}"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.5)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group of ``name`` (SIGKILL also reaps it)."""
        with self._lock:
            self[name].kill(sig)

    def stop(self, name: str, grace: float | None = None) -> None:
        with self._lock:
            self[name].stop(self.grace if grace is None else grace)

    def restart(self, name: str) -> ManagedProcess:
        """Stop ``name`` if it still runs, then start it again with the same argv/env."""
        with self._lock:
            mp = self[name]
            mp.stop(self.grace)
            mp.relaunch()
            self._write_state()
            return mp

    def exited(self) -> list[ManagedProcess]:
        """Processes that died although nobody asked them to stop."""
        return [mp for mp in self._procs.values() if not mp.running and not mp.stopping]

    def stop_all(self, grace: float | None = None) -> None:
        """Stop every child: SIGTERM per tier (highest first), SIGKILL after ``grace``."""
        grace = self.grace if grace is None else grace
        with self._lock:
            procs = list(self._procs.values())
            for tier in sorted({p.tier for p in procs}, reverse=True):
                batch = [p for p in procs if p.tier == tier]
                for p in batch:
                    p.stopping = True
                    if p.running:
                        p.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + grace
                for p in batch:
                    p.wait(max(0.0, deadline - time.monotonic()))
                for p in batch:
                    p._reap_group()
            self._write_state()

    async def astop_all(self, grace: float | None = None) -> None:
        await asyncio.to_thread(self.stop_all, grace)

    # -- state file (for `timbra down`) ---------------------------------------------
    def _write_state(self) -> None:
        if self.state_file is None:
            return
        state = {
            "run_id": self.run_id,
            "supervisor_pid": os.getpid(),
            "processes": {
                name: {"pid": p.pid, "pgid": p.pgid, "argv": p.argv, "running": p.running}
                for name, p in self._procs.items()
            },
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)
