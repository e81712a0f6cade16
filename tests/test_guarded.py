"""httpserve.Guarded's held writes: an answer's head waits for its body, queued
WebSocket frames go out together, and nothing held is ever left behind."""

from __future__ import annotations

import socket

import pytest
import trio

from node import httpserve
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


STALL_S = 0.3  # the send-stall cut, shortened for the test


async def test_a_stalled_send_resets_the_connection(monkeypatch):
    """The cut is a reset: the client learns at once, and the kernel keeps no socket
    (with the unsent bytes) behind a FIN it cannot deliver."""
    monkeypatch.setattr(httpserve, "SEND_STALL_S", STALL_S)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    client = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server = await listener.accept()
    guard = Guarded(server)
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(30):
        while True:  # the client reads nothing: the kernel's buffers fill, then it stalls
            await guard.send_all(b"x" * 65536)
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(10):  # not EOF: a reset
        while await client.receive_some(65536):
            pass
    await client.aclose()
    await listener.aclose()
