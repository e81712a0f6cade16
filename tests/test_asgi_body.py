"""A request body queued whole is taken at once; anything else is read as before."""

from __future__ import annotations

import pytest
import trio

from node import asgi


def _queued(*messages: dict):
    send, receive = trio.open_memory_channel(10)
    for message in messages:
        send.send_nowait(message)
    read = asgi._BodyRead(asgi.queued_first(receive.receive), False,
                          asgi._nowait(receive.receive))
    return send, read


def _chunk(body: bytes, more: bool) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_queued_whole_is_taken_without_waiting():
    _, read = _queued(_chunk(b"ab", True), _chunk(b"cd", True), _chunk(b"", False))
    assert read.queued_body(100) == b"abcd" and read.done


async def test_a_body_not_queued_whole_is_read_on_in_order():
    send, read = _queued(_chunk(b"ab", True))
    assert read.queued_body(100) is None and not read.done
    send.send_nowait(_chunk(b"cd", False))
    assert await asgi._read_body(read.receive, 100) == b"abcd" and read.done


async def test_a_queued_body_past_the_limit_is_refused_as_before():
    _, read = _queued(_chunk(b"x" * 60, True), _chunk(b"y" * 60, False))
    with pytest.raises(asgi.BadRequest) as refused:
        await asgi._read_body(read.receive, 100)
    assert refused.value.status == 413


async def test_a_client_gone_before_its_body_ends_is_a_400():
    _, read = _queued(_chunk(b"ab", True), {"type": "http.disconnect"})
    with pytest.raises(asgi.BadRequest) as refused:
        await asgi._read_body(read.receive, 100)
    assert refused.value.status == 400 and read.done
