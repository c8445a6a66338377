"""Helpers for tests that run real processes (no pytest import at module level)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from .platform import Platform, PlatformConfig
from .servers import free_port
from .supervisor import pid_alive

__all__ = ["free_port", "pid_alive", "wait_until", "until", "wait_gone", "running_platform"]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


async def until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """``wait_until`` for a test's event loop: the loop keeps running while it polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


def wait_gone(pid: int | None, timeout: float = 10.0) -> bool:
    """True once ``pid`` no longer exists (a zombie waiting for init counts as gone)."""
    return pid is None or wait_until(lambda: not pid_alive(pid), timeout)


@contextlib.asynccontextmanager
async def running_platform(data_dir: str | os.PathLike, **overrides) -> AsyncIterator[Platform]:
    """``async with running_platform(tmp_path, processes=[...]) as p:`` — free ports, temp data."""
    platform = Platform(PlatformConfig.for_tests(Path(data_dir), **overrides))
    try:
        await platform.start()
        yield platform
    finally:
        await platform.stop()
