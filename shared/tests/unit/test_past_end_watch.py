"""``messaging.PastEndWatch``: a partition whose position stays beyond the broker's highwater (a
broker that came back empty, which tansu answers with no records instead of OFFSET_OUT_OF_RANGE)
is rewound to the beginning; a healthy partition, or a single odd reading, is left alone."""

from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from timbra_shared.messaging import PastEndWatch

TP0, TP1 = TopicPartition("invoice.rendered", 0), TopicPartition("invoice.rendered", 1)


class Consumer:
    def __init__(self, positions: dict[TopicPartition, int], highwaters: dict[TopicPartition, int | None]) -> None:
        self.positions = positions
        self.highwaters = highwaters
        self.rewound: list[TopicPartition] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.rewound.append(tp)
        self.positions[tp] = 0


def watch_over(*consumers: Any) -> PastEndWatch:
    broker: Any = SimpleNamespace(subscribers=[SimpleNamespace(consumer_subgroup=list(consumers))])
    return PastEndWatch(broker, interval=0)


async def test_a_partition_past_the_end_on_two_checks_is_rewound_once() -> None:
    consumer = Consumer({TP0: 500, TP1: 7}, {TP0: 20, TP1: 9})
    watch = watch_over(consumer)
    assert await watch.check_once() == 0  # one reading is not enough
    assert await watch.check_once() == 1
    assert consumer.rewound == [TP0]
    assert await watch.check_once() == 0
    assert consumer.rewound == [TP0] and watch.rewound == 1


async def test_a_healthy_or_unfetched_partition_is_never_rewound() -> None:
    consumer = Consumer({TP0: 20, TP1: 7}, {TP0: 20, TP1: None})
    watch = watch_over(consumer)
    for _ in range(3):
        assert await watch.check_once() == 0
    assert consumer.rewound == []


async def test_a_reading_that_recovers_in_between_is_forgotten() -> None:
    consumer = Consumer({TP0: 30}, {TP0: 20})
    watch = watch_over(consumer)
    assert await watch.check_once() == 0
    consumer.highwaters[TP0] = 40  # the fetch caught up: it was a stale reading
    assert await watch.check_once() == 0
    consumer.highwaters[TP0] = 20
    assert await watch.check_once() == 0
    assert consumer.rewound == []


async def test_a_consumer_in_a_rebalance_is_skipped() -> None:
    class Rebalancing(Consumer):
        async def position(self, tp: TopicPartition) -> int:
            raise RuntimeError("Partition is not assigned")

    broken, healthy = Rebalancing({TP0: 500}, {TP0: 1}), Consumer({TP1: 500}, {TP1: 1})
    watch = watch_over(broken, healthy)
    await watch.check_once()
    assert await watch.check_once() == 1
    assert broken.rewound == [] and healthy.rewound == [TP1]
