"""py-spy for the benchmarks: record the Python process behind a platform process while a phase
runs, then print each profile's functions by their share of samples at the top of the stack."""

import json
import os
import subprocess
import sys

import psutil


def python_pid(pid: int) -> int:
    """The Python interpreter of a platform process (the process itself, or a child of its wrapper)."""
    proc = psutil.Process(pid)
    try:
        return next((p.pid for p in [proc, *proc.children(recursive=True)] if "python" in (p.name() or "")), pid)
    except psutil.Error:
        return pid


def record(pids: dict[str, int], folder: str, seconds: int, rate: int = 100, *, gil: bool = False) -> list[subprocess.Popen]:
    """Start one py-spy per process (speedscope JSON in ``folder``); wait on the returned handles.
    ``gil``: only samples of the thread holding the GIL, so a wait (for the GIL, a lock, a socket)
    is not mistaken for work."""
    os.makedirs(folder, exist_ok=True)
    spy = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "py-spy")
    if not os.path.exists(spy):
        raise SystemExit(f"--profile needs py-spy next to {sys.executable} (make install puts it there)")
    return [
        subprocess.Popen([spy, "record", "--pid", str(python_pid(pid)), "--duration", str(seconds), "--rate", str(rate), "--nonblocking",
                          "--format", "speedscope", *(["--gil"] if gil else []), "--output", os.path.join(folder, f"{name}.speedscope.json")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items()
    ]


def summarize(folder: str, names: list[str] | tuple[str, ...], top: int = 12) -> None:
    """Print each profile's functions by share of samples where they are at the top of the stack
    (self) and, for the same functions, on the stack at all (inclusive), from py-spy's speedscope JSON."""
    for name in names:
        path = os.path.join(folder, f"{name}.speedscope.json")
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            data = json.load(fh)
        frames = data["shared"]["frames"]
        inclusive: dict[int, float] = {}
        own: dict[int, float] = {}
        total = 0.0
        for profile in data["profiles"]:
            for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
                total += weight
                for index in set(stack):
                    inclusive[index] = inclusive.get(index, 0.0) + weight
                if stack:
                    own[stack[-1]] = own.get(stack[-1], 0.0) + weight
        if not total:
            continue
        lines = [f"\nprofile {name} ({int(total)} samples, idle included):", "  self%  incl%  function"]
        for index, weight in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
            f = frames[index]
            lines.append(f"  {weight / total * 100:5.1f}  {inclusive[index] / total * 100:5.1f}  {f['name']} ({os.path.basename(f.get('file') or '?')}:{f.get('line', '?')})")
        with open(os.path.join(folder, f"{name}.summary.txt"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print("\n".join(lines))
