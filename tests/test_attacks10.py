"""Attacks on the WebSocket entry's fast path (hypercorn hands frames over without a
checkpoint, httpserve.QueuedTaskGroup) and its opt-in ``answers`` frames
(``{"op": "options", "batch_answers": true}``, docs/streams.md), against real nodes.

Each test is one attack and passes when the node held: a clear refusal and nothing
changed, memory bounded, every command answered once and in order (each answer as
it would have come alone), an order answered only once durable, nothing left
behind by a connection that ended. The ones that once got through are fixed in the
node; their tests stay here.
"""

from __future__ import annotations

import socket
import struct

import trio

from node.api import websocket

from . import nodes
from .test_attacks4 import bugs, raw_frame, raw_ws, task_count  # noqa: F401 (a fixture)

FLOOD_S = 3.0  # how long a client floods a node that stopped reading it
SAMPLE_S = 0.01  # how often a test samples a node's state while a flood runs
GONE_S = 15.0  # a connection that ended is gone by then (a half-closed one within 5 s)


def flatten(frames: list[dict]) -> list[dict]:
    """The messages of ``frames``, each ``answers`` frame's answers in their place."""
    return [m for f in frames for m in (f["answers"] if f["type"] == "answers" else [f])]


class Recorded:
    """Every ``websocket.Connection`` a node in this process runs (to look inside)."""

    def __init__(self, monkeypatch) -> None:
        self.connections: list[websocket.Connection] = []
        run = websocket.Connection.run
        seen = self.connections

        async def recorded(conn, receive) -> None:
            seen.append(conn)
            await run(conn, receive)
        monkeypatch.setattr(websocket.Connection, "run", recorded)


# -- frames that cost the client nothing: the read-ahead bounds them in number --------
INBOX_FRAMES = websocket.READ_AHEAD // websocket.FRAME_COST  # the most it may hold


async def test_empty_and_binary_frames_are_bounded_in_the_inbox_by_number():
    """An empty text frame and a binary one (kept as nothing: only an error answer is
    owed) each count ``FRAME_COST`` against the read-ahead: the reader waits once it
    holds ``INBOX_FRAMES`` of them. They counted 0: it never waited, and the inbox
    of a client that stops reading grew by a slot for every 6 bytes it sent."""
    inbox = websocket.Inbox()
    with trio.CancelScope() as waited:
        waited.cancel()  # raised at put's first checkpoint: only when it has to wait
        for i in range(websocket.READ_AHEAD):
            await inbox.put("" if i % 2 else None)
    assert waited.cancelled_caught
    assert len(inbox.items) == INBOX_FRAMES
    while inbox.items:
        assert inbox.take_nowait().refused is not None  # each still gets its refusal
    assert inbox.size == 0


async def test_a_flood_of_empty_frames_to_a_stuck_connection_stays_bounded(
        nursery, monkeypatch, bugs):  # noqa: F811 (the fixture)
    """A client whose commands the node stopped processing (its answers unread) keeps
    sending empty and binary frames as fast as it can: the node holds at most
    ``INBOX_FRAMES`` of them, then stops reading it (TCP pushes back), serves everyone
    else, and forgets the connection once it is gone."""
    recorded = Recorded(monkeypatch)
    stuck = trio.Event()
    process = websocket.Connection._processor

    async def processor(conn) -> None:  # as while the outbox is full: waits
        await stuck.wait()
        await process(conn)
    monkeypatch.setattr(websocket.Connection, "_processor", processor)
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    stream, _client = await raw_ws(a.url)
    await nodes.eventually(lambda: recorded.connections)
    inbox = recorded.connections[0].inbox
    burst = (raw_frame(0x1, b"") + raw_frame(0x2, b"")) * 10_000
    most = 0

    async def flood() -> None:
        while True:
            await stream.send_all(burst)

    with trio.move_on_after(FLOOD_S):
        async with trio.open_nursery() as inner:
            inner.start_soon(flood)
            while True:
                most = max(most, len(inbox.items))
                await trio.sleep(SAMPLE_S)
    assert 0 < most <= INBOX_FRAMES + 1, most
    async with nodes.client() as http:
        assert (await http.get(a.url + "/status")).status_code == 200
    stuck.set()  # (its answers now go to a socket that is reset)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    await nodes.eventually(lambda: hub.connections == 0, timeout=GONE_S)
    assert not bugs
    await a.stop()
