"""Attacks on the collector policy pass (node/gcpolicy.py): memory stays bounded
whatever a stranger sends, with the heap frozen after every compaction.

A compaction (every five seconds in a node) freezes the heap: every object
tracked then goes to the permanent generation, which no collection visits.
A reference cycle frozen there (garbage already, or alive then and dropped
later: a connection open across a compaction) waits for the next thaw. So
the question for each kind of traffic that makes cycles is how much memory
those cycles hold, and for how long.

* A stranger's refused push large enough to be decoded on a worker thread
  left its body in a cycle (the ``CodecError`` came back through trio's thread
  machinery, whose frames held it and the payload): with the node's
  thresholds (50,000) a megabyte per refusal waited for a collection even
  before the freezing, and with it until the thaw, ten minutes. A real node
  grew by 42 MB/s under 4 MiB pushes (docs/performance.md, "attacked").
"""

from __future__ import annotations

import gc

import pytest
import trio

from node import gcpolicy
from node.service import LARGE_MESSAGE

from .nodes import start

MIB = 1024 * 1024


@pytest.fixture
def policy(monkeypatch):
    """The node's policy in this process (as ``crdtbook node`` runs it), its thaw
    clock at rest unless a test moves it; the interpreter's collector restored after."""
    now = [1000.0]
    monkeypatch.setattr(gcpolicy._Freezing, "clock", lambda: now[0])
    monkeypatch.setattr(gcpolicy._Freezing, "thawed_at", None)
    enabled = gc.isenabled()
    previous = gcpolicy.tune()
    try:
        yield now
    finally:
        gcpolicy._Freezing.on = False
        gc.set_threshold(*previous)
        gc.unfreeze()
        gc.collect()
        if enabled:
            gc.enable()


async def raw_request(url: str, method: str, path: str, body: bytes = b"",
                      headers: tuple[str, ...] = ()) -> int:
    """One request on a fresh connection, by hand (no client's own objects to mix
    in); returns the answer's status."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
            "Connection: close", *headers]
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def buffers_in_cycles(at_least: int) -> int:
    """Bytes of buffers of ``at_least`` bytes or more that only unreachable cycles
    hold now, frozen or not (the heap is unfrozen to see them all, then collected)."""
    gc.unfreeze()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        seen: dict[int, int] = {}
        for thing in gc.garbage:
            for referent in gc.get_referents(thing):
                if isinstance(referent, (bytes, bytearray, memoryview)) \
                        and len(referent) >= at_least:
                    seen[id(referent)] = len(referent)
        return sum(seen.values())
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()
        if was:
            gc.enable()


async def test_a_refused_large_push_leaves_no_cycle_holding_its_body(nursery, tmp_path):
    """Whatever the policy: a push decoded on a worker thread and refused frees its
    body when it is answered, not at some later collection."""
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    body = b"\x01" * (LARGE_MESSAGE + 1)  # not a blocks message; decoded on a thread
    gc.collect()
    was = gc.isenabled()
    gc.disable()  # nothing is freed by a collection meanwhile: only references count
    try:
        for _ in range(3):
            assert await raw_request(a.url, "POST", "/peer/push", body) == 400
        held = buffers_in_cycles(LARGE_MESSAGE)
    finally:
        if was:
            gc.enable()
    assert held == 0, f"{held} bytes of refused pushes wait in reference cycles"


async def test_refused_large_pushes_do_not_pile_up_under_the_frozen_heap(
        policy, nursery, tmp_path):
    """A stranger's refused 1 MiB pushes against a node that compacts (and so
    freezes) ten times a second, well within ``THAW_S``: what they leave in
    cycles stays small, not a megabyte each until the thaw."""
    a = await start(nursery, data_dir=str(tmp_path / "a"), compact_interval_s=0.1)
    body = b"\x01" * MIB
    pushes = 60
    for _ in range(pushes):
        assert await raw_request(a.url, "POST", "/peer/push", body) == 400
    held = buffers_in_cycles(LARGE_MESSAGE)
    assert held <= 8 * MIB, f"{held // MIB} MiB of {pushes} refused pushes held in cycles"
