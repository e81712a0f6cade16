"""httpserve.Guarded's held writes: an answer's head waits for its body, queued
WebSocket frames go out together, and nothing held is ever left behind."""

from __future__ import annotations

import trio

from node.httpserve import Guarded


class Recorder:
    """A stream that records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data) -> None:
        self.writes.append(bytes(data))
        await trio.lowlevel.checkpoint()


async def test_a_held_write_goes_with_the_next_one():
    stream = Recorder()
    guard = Guarded(stream)  # type: ignore[arg-type]
    guard.hold_next()
    await guard.send_all(b"head")
    assert stream.writes == [] and guard.held == 4
    await guard.send_all(memoryview(b"body"))
    assert stream.writes == [b"headbody"] and guard.held == 0
    for frame in (b"a", b"b"):  # frames while more are queued: held, then the last
        guard.hold_next()
        await guard.send_all(frame)
    await guard.send_all(b"c")
    assert stream.writes == [b"headbody", b"abc"]


async def test_unhold_and_flush_leave_nothing_behind():
    stream = Recorder()
    guard = Guarded(stream)  # type: ignore[arg-type]
    guard.hold_next()
    guard.unhold()  # the write it was for never happened: the next one is not held
    await guard.send_all(b"ping")
    assert stream.writes == [b"ping"]
    guard.hold_next()
    await guard.send_all(b"head")
    await guard.flush()  # no body came: the head goes alone
    assert stream.writes == [b"ping", b"head"] and guard.held == 0
    await guard.flush()  # nothing held: no write
    assert stream.writes == [b"ping", b"head"]
