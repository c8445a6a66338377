"""``outlast_outage``: the record of a side effect that already happened survives a short outage."""

from types import SimpleNamespace

import pytest
from pymongo.errors import AutoReconnect, DuplicateKeyError

from timbra_shared import mongo


class Flaky:
    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "recorded"


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(mongo, "asyncio", SimpleNamespace(sleep=sleep))  # this module's waits only
    return waits


async def test_retries_through_an_outage_with_growing_waits(no_waiting):
    write = Flaky(AutoReconnect("down"), AutoReconnect("down"), ConnectionError("refused"))
    assert await mongo.outlast_outage(write, within_s=60, what="test") == "recorded"
    assert write.calls == 4 and no_waiting == [0.2, 0.4, 0.8]


async def test_a_failure_that_is_not_an_outage_is_raised_at_once():
    write = Flaky(DuplicateKeyError("E11000"), AutoReconnect("down"))
    with pytest.raises(DuplicateKeyError):
        await mongo.outlast_outage(write, within_s=60, what="test")
    assert write.calls == 1


async def test_gives_up_when_the_outage_outlasts_the_window(monkeypatch, no_waiting):
    clock = [1000.0]
    monkeypatch.setattr(mongo.time, "monotonic", lambda: clock[0])

    async def down() -> None:
        clock[0] += 5.0  # each try waits for server selection
        raise AutoReconnect("still down")

    with pytest.raises(AutoReconnect):
        await mongo.outlast_outage(down, within_s=30, what="test")
    assert 0 < len(no_waiting) <= 6
