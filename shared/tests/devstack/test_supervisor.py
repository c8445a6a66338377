"""The process supervisor, exercised with throwaway child scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from timbra_shared.devstack.servers import free_port
from timbra_shared.devstack.supervisor import RUN_ENV, ProcessFailed, Supervisor, kill_run, pid_alive
from timbra_shared.devstack.testing import wait_gone, wait_until

PY = sys.executable


def _reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _start_http(sup: Supervisor, name: str, script: Path, **env) -> int:
    port = free_port()
    sup.start(name, [PY, str(script)], {"TIMBRA_HTTP_PORT": str(port), **env},
              health_url=f"http://127.0.0.1:{port}/healthz")
    return port


def _nice_of_every_thread(pid: int) -> set[int]:
    """The nice value of each of the process's threads (field 19 of /proc/<pid>/task/<tid>/stat)."""
    return {int(stat.read_text().rsplit(")", 1)[1].split()[16]) for stat in Path(f"/proc/{pid}/task").glob("*/stat")}


async def test_a_child_started_nicer_runs_below_its_sibling_in_every_thread(supervisor: Supervisor, tmp_path: Path):
    threaded = tmp_path / "threaded_child.py"
    threaded.write_text(textwrap.dedent('''
        import os, threading, time
        for _ in range(3):
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        print("threads up", flush=True)
        time.sleep(600)
    '''))
    base = os.getpriority(os.PRIO_PROCESS, 0)
    plain = supervisor.start("plain", [PY, str(threaded)], {})
    nicer = supervisor.start("nicer", [PY, str(threaded)], {}, nice=7)
    assert wait_until(lambda: "threads up" in (tmp_path / "logs" / "nicer.log").read_text(), 20)
    assert wait_until(lambda: len(list(Path(f"/proc/{nicer.pid}/task").iterdir())) >= 4, 10)
    # threads started after exec inherit the priority, not only the main thread
    assert _nice_of_every_thread(nicer.pid) == {min(19, base + 7)}
    assert _nice_of_every_thread(plain.pid) == {base}
    autogroup = Path(f"/proc/{nicer.pid}/autogroup")
    if autogroup.exists():  # the kernel schedules sessions as groups: the group's nice is what counts
        assert autogroup.read_text().split()[-1] == "7"
        assert Path(f"/proc/{plain.pid}/autogroup").read_text().split()[-1] == "0"
    # a restart keeps it
    supervisor.kill("nicer")
    supervisor.restart("nicer")
    assert wait_until(lambda: supervisor.pid("nicer") and _nice_of_every_thread(supervisor.pid("nicer")) == {min(19, base + 7)}, 10)


async def test_start_healthy_kill_restart_stop_all(supervisor: Supervisor, scripts, tmp_path: Path):
    _start_http(supervisor, "a", scripts["http"], GRANDCHILD_PIDFILE=str(tmp_path / "grandchild.pid"))
    _start_http(supervisor, "b", scripts["http"])
    await supervisor.wait_healthy("a", 20)
    await supervisor.wait_healthy("b", 20)

    pid_a, pid_b = supervisor.pid("a"), supervisor.pid("b")
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert pid_alive(pid_a) and pid_alive(pid_b) and pid_alive(grandchild)
    assert "child up on" in (tmp_path / "logs" / "a.log").read_text()
    state = json.loads((tmp_path / "pids.json").read_text())
    assert state["processes"]["a"]["pid"] == pid_a

    # SIGKILL takes down the whole group, grandchild included, and reaps the child
    supervisor.kill("a")
    assert _reaped(pid_a)
    assert wait_gone(grandchild), "grandchild survived a group kill"
    assert supervisor.get("a").returncode == -signal.SIGKILL

    supervisor.restart("a")
    await supervisor.wait_healthy("a", 20)
    new_a = supervisor.pid("a")
    assert new_a != pid_a and pid_alive(new_a)
    assert supervisor["a"].restarts == 1
    assert (tmp_path / "logs" / "a.log").read_text().count("starting a:") == 2

    # restart of a running process stops it first
    supervisor.restart("b")
    await supervisor.wait_healthy("b", 20)
    assert _reaped(pid_b)

    pids = [supervisor.pid("a"), supervisor.pid("b")]
    supervisor.stop_all()
    for pid in pids:
        assert _reaped(pid)
    supervisor.stop_all()  # idempotent
    assert all(not supervisor[n].running for n in ("a", "b"))


async def test_stop_all_escalates_to_sigkill(supervisor: Supervisor, scripts):
    _start_http(supervisor, "stubborn", scripts["http"], IGNORE_TERM="1")
    await supervisor.wait_healthy("stubborn", 20)
    pid = supervisor.pid("stubborn")
    t0 = time.monotonic()
    supervisor.stop_all(grace=1.0)
    assert time.monotonic() - t0 < 8
    assert _reaped(pid)
    assert supervisor["stubborn"].returncode == -signal.SIGKILL


async def test_crash_before_healthy_reports_log_tail(supervisor: Supervisor, scripts):
    supervisor.start("crashy", [PY, str(scripts["crash"])], {}, health_url=f"http://127.0.0.1:{free_port()}/healthz")
    with pytest.raises(ProcessFailed, match="boom: missing setting"):
        await supervisor.wait_healthy("crashy", 20)


async def test_health_timeout(supervisor: Supervisor, scripts):
    _start_http(supervisor, "sick", scripts["http"], ALWAYS_503="1")
    with pytest.raises(ProcessFailed, match="not healthy after"):
        await supervisor.wait_healthy("sick", 1.5)


async def test_cannot_start_twice(supervisor: Supervisor, scripts):
    _start_http(supervisor, "once", scripts["http"])
    with pytest.raises(ProcessFailed, match="already running"):
        _start_http(supervisor, "once", scripts["http"])


def _spawn_owner(tmp_path: Path, scripts, *, hang: bool) -> tuple[subprocess.Popen, int, int, str]:
    """A parent interpreter that supervises one child (which has a grandchild)."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from timbra_shared.devstack.supervisor import Supervisor
        sup = Supervisor({str(tmp_path / 'owner-logs')!r})
        mp = sup.start("kid", [sys.executable, {str(scripts['http'])!r}],
                       {{"TIMBRA_HTTP_PORT": "{free_port()}", "GRANDCHILD_PIDFILE": {str(tmp_path / 'gc.pid')!r}}})
        import os
        deadline = time.monotonic() + 20
        while not (os.path.exists({str(tmp_path / 'gc.pid')!r}) and open({str(tmp_path / 'gc.pid')!r}).read()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(mp.pid, sup.run_id, flush=True)
        if {hang!r}:
            time.sleep(600)
        """
    )
    owner = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    kid_pid, run_id = owner.stdout.readline().split()
    assert wait_until(lambda: (tmp_path / "gc.pid").exists() and (tmp_path / "gc.pid").read_text(), 20)
    return owner, int(kid_pid), int((tmp_path / "gc.pid").read_text()), run_id


def test_atexit_stops_children(tmp_path: Path, scripts):
    owner, kid, grandchild, _ = _spawn_owner(tmp_path, scripts, hang=False)
    assert owner.wait(30) == 0
    assert wait_gone(kid) and wait_gone(grandchild)


def test_parent_sigkill_kills_child_and_kill_run_cleans_up(tmp_path: Path, scripts):
    owner, kid, grandchild, run_id = _spawn_owner(tmp_path, scripts, hang=True)
    owner.kill()
    owner.wait(10)
    assert wait_gone(kid), "child outlived its SIGKILLed supervisor (no PDEATHSIG?)"
    # the grandchild is not covered by PDEATHSIG; the run id in its environment is
    found = kill_run(run_id, grace=2)
    assert wait_gone(grandchild)
    assert grandchild in found or not pid_alive(grandchild)
    assert RUN_ENV == "TIMBRA_DEVSTACK_RUN"
