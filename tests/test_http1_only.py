"""The node speaks HTTP/1.1 only (node/http1.py).

Served as HTTP/2 (prior knowledge on the plain port), one connection of the
node's cap ran 50 requests at once: the connection cap and the per-connection
timeouts count HTTP/1 connections. A client that opens with HTTP/2's preface
gets a 505 and a closed connection; ``Upgrade: h2c`` is served as HTTP/1.1.
"""

from __future__ import annotations

import trio

from .nodes import start
from .test_attacks11 import h2_opening

READ_FOR_S = 10.0  # a bound on reading one short exchange, not a measure of speed


async def exchange(url: str, data: bytes) -> bytes:
    """Everything the node sends back for ``data`` until it closes (or the bound)."""
    host, port = url.split("//")[1].split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(READ_FOR_S):
            while chunk := await stream.receive_some(65536):
                received += chunk
                if b"\r\n\r\n" in received and b"h2c" in data:
                    break  # a keep-alive answer: the node does not close
    return received


async def test_http2_prior_knowledge_gets_505_and_no_request_runs(nursery):
    node = await start(nursery)
    answer = await exchange(node.url, h2_opening(50))
    assert answer.startswith(b"HTTP/1.1 505 "), answer[:80]
    assert b"connection: close" in answer.lower()
    assert answer.count(b"HTTP/1.1") == 1  # one answer, then the close: no stream ran


async def test_an_h2c_upgrade_is_answered_over_http1(nursery):
    node = await start(nursery)
    request = (b"GET /status HTTP/1.1\r\nHost: node\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    answer = await exchange(node.url, request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
    assert b" 101 " not in answer
