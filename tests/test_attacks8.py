"""Attacks on the third pass of order entry (httpserve.Connection, KeepAlive,
Guarded.absorb; asgi's queued bodies; WebSocket commits bounded in orders),
played against real nodes on 127.0.0.1.
"""

from __future__ import annotations

import json

import trio

from .nodes import start

ROUNDS = 40  # answers asked for on one connection: trio's scheduling order varies


class Reader:
    """A plain HTTP/1 client's reading side: one answer at a time, by its length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def answer(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            assert data, f"closed with {bytes(self.buffer)!r} unread"
            self.buffer.extend(data)
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        if status < 200:  # an informational answer: no body
            self.buffer[:] = rest
            return status, b""
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(fields[b"content-length"])
        while len(rest) < length:
            rest += await self.stream.receive_some(65536)
        self.buffer[:] = rest[length:]
        return status, rest[:length]


async def _open(url: str) -> trio.SocketStream:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def test_expect_continue_never_puts_the_continue_inside_an_answer(nursery):
    """A request saying ``Expect: 100-continue`` makes hypercorn write a 100
    (under the send lock) while the app may answer at once: an answer's head the
    guard took without the lock must not go out before the 100, its body after."""
    a = await start(nursery)
    for _ in range(ROUNDS):
        stream = await _open(a.url)
        async with stream:
            reader = Reader(stream)
            await stream.send_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\n"
                                  b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")
            with trio.fail_after(10):
                status, body = await reader.answer()
                if status == 100:
                    status, body = await reader.answer()
            assert status == 404, (status, body)
            assert json.loads(body)["error"] == "not_found", bytes(body)
