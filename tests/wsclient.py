"""A WebSocket client for tests of /ws: JSON in, JSON out, every wait with a deadline."""

from __future__ import annotations

import contextlib
import json
import socket

import trio
from trio_websocket import open_websocket_url, wrap_client_stream

from crdtbook.amount import parse_amount
from node.cli import wsclient  # noqa: F401  (trio-websocket answers no ping once closing)

WAIT_S = 15.0
CLOSE_S = 5.0  # a close handshake with a node that may read nothing more


def ws_url(url: str) -> str:
    return "ws://" + url.split("://", 1)[1] + "/ws"


class Client:
    def __init__(self, conn) -> None:
        self.conn = conn
        self.seen: list[dict] = []  # channel messages read while looking for something else

    async def send(self, **command) -> None:
        await self.conn.send_message(json.dumps(command))

    async def next(self, timeout: float = WAIT_S) -> dict:
        with trio.fail_after(timeout):
            return json.loads(await self.conn.get_message())

    async def until(self, check, timeout: float = WAIT_S) -> dict:
        """The first message ``check`` accepts; the others are kept in ``seen``."""
        with trio.fail_after(timeout):
            while True:
                message = await self.next(timeout)
                if check(message):
                    return message
                self.seen.append(message)

    async def answer(self, ident, timeout: float = WAIT_S) -> dict:
        return await self.until(lambda m: m.get("type") in ("answer", "pong")
                                and m.get("id") == ident, timeout)

    async def call(self, **command) -> dict:
        await self.send(**command)
        return await self.answer(command.get("id"))


@contextlib.asynccontextmanager
async def connect(url: str, token: str | None = None, rcvbuf: int | None = None):
    """A connection to ``url``'s /ws (``rcvbuf``: a small socket receive buffer, to
    play a client that stops reading)."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    if rcvbuf is None:
        async with open_websocket_url(ws_url(url), extra_headers=headers,
                                      message_queue_size=0) as conn:
            yield Client(conn)
        return
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(WAIT_S):
                conn = await wrap_client_stream(nursery, stream, host, "/ws",
                                                extra_headers=headers, message_queue_size=0)
        except BaseException:
            with trio.CancelScope(shield=True):  # (no checkpoint once cancelled below:
                await stream.aclose()            # a Cancelled would replace the error)
            nursery.cancel_scope.cancel()  # its reader, waiting for a handshake that failed
            raise
        try:
            yield Client(conn)
        finally:
            # Whatever ends the block (a cancellation included), the reader is
            # cancelled and the socket closed: a node that reads this client no more
            # never takes its close frame, and trio-websocket's close would wait for it
            # (and for the node's answer) for ever.
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLOSE_S):
                    await conn.aclose()
                await stream.aclose()
            nursery.cancel_scope.cancel()  # last: no checkpoint may follow it here


class BookView:
    """A book subscriber's state: the snapshot with every update applied."""

    def __init__(self, snapshot: dict) -> None:
        self.depth = snapshot["depth"]
        self.seq = snapshot["seq"]
        self.bids = dict(snapshot["bids"])
        self.asks = dict(snapshot["asks"])

    def apply(self, update: dict) -> None:
        assert update["seq"] == self.seq + 1, "a gap in the book's sequence"
        self.seq = update["seq"]
        for side, levels in ((self.bids, update["bids"]), (self.asks, update["asks"])):
            for price, qty in levels:
                if qty == "0":
                    side.pop(price, None)
                else:
                    side[price] = qty

    def shown(self) -> tuple[list, list]:
        def best(levels: dict, is_bid: bool) -> list:
            rows = sorted(levels.items(), key=lambda kv: parse_amount(kv[0]), reverse=is_bid)
            return [list(row) for row in rows[:self.depth]]
        return best(self.bids, True), best(self.asks, False)


def book_of(body: dict) -> tuple[list, list]:
    """GET /book's levels as [price, qty] pairs."""
    return ([[lv["price"], lv["qty"]] for lv in body["bids"]],
            [[lv["price"], lv["qty"]] for lv in body["asks"]])
