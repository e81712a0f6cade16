"""The age of a push's oldest event at each step of its way (node/cluster/pushage.py,
``crdtbook_push_age_seconds`` by step): the figures bench/cluster.py explains
rewinds with."""

from __future__ import annotations

from node.cluster import pushage

from .nodes import client, eventually, start


def sample(running, suffix: str, step: str) -> float:
    value = running.node.metrics.registry.get_sample_value(
        f"crdtbook_push_age_seconds{suffix}", {"step": step})
    return value or 0.0


async def test_each_push_is_seen_at_every_step_in_order(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    async with client() as http:
        answer = await http.post(f"{a.url}/orders",
                                 json={"side": "buy", "qty": "1", "price": "10"})
        assert answer.status_code == 201
    # a (the origin) saw its pushes sealed and sent, b saw them received and merged
    # (a push is counted at each step as it gets there: poll until none is midway)
    await eventually(lambda: sample(b, "_count", "merged") >= 1
                     and sample(a, "_count", "sent") >= 1
                     and sample(a, "_count", "sealed") == sample(a, "_count", "sent")
                     and sample(b, "_count", "received") == sample(b, "_count", "merged"))
    # the same pushes, older at each later step (one machine: one wall clock)
    assert sample(a, "_sum", "sent") >= sample(a, "_sum", "sealed")
    assert sample(b, "_sum", "merged") >= sample(b, "_sum", "received")

def test_the_oldest_stamp_of_a_push():
    class Event:
        def __init__(self, clock: int) -> None:
            self.clock = clock

    class Block:
        def __init__(self, *clocks: int) -> None:
            self.events = tuple(Event(c << 16) for c in clocks)

    assert pushage.oldest_ms([Block(30, 31), Block(20, 25), Block()]) == 20
    assert pushage.oldest_ms([Block()]) is None
