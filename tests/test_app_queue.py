"""hypercorn hands messages to the app through ``httpserve.QueuedTaskGroup``: queued
without a checkpoint while the app's queue has room, waiting (as before) when it is
full, in order either way."""

from __future__ import annotations

import trio
import trio.testing
from hypercorn.config import Config

from node import httpserve


async def test_app_put_queues_without_a_checkpoint_and_waits_when_full():
    config = Config()
    config.max_app_queue_size = 3
    received: list[dict] = []
    release = trio.Event()

    async def app(scope, receive, send, sync_spawn, call_soon):
        await release.wait()
        for _ in range(5):
            received.append(await receive())

    async with httpserve.QueuedTaskGroup() as group:
        put = await group.spawn_app(app, config, {"type": "websocket"}, _ignore)
        with trio.testing.assert_no_checkpoints():  # room for 3: none of them yields
            for i in range(3):
                await put({"n": i})
        with trio.move_on_after(0.05) as waiting:  # (the app takes nothing yet)
            await put({"n": 3})
        assert waiting.cancelled_caught  # full: the fourth waits for room
        release.set()
        await put({"n": 3})
        await put({"n": 4})
    assert [m["n"] for m in received] == [0, 1, 2, 3, 4]


async def _ignore(message) -> None:
    pass
