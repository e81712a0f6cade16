"""Attacks on the node's newer front doors (WebSocket /ws, the web page, /metrics,
/openapi.json) against real nodes.

Each test is one attack and passes when the node held: the attacker got a
clear refusal, nothing changed that should not have, memory stayed bounded,
and the node kept serving everyone else. The ones that once got through are
fixed in the node; their tests stay here.
"""

from __future__ import annotations

import json

import pytest
import trio

from node.store import accounts

from . import nodes
from .procs import NodeProcess
from .test_resources import vm_kb
from .wsclient import connect

POLL_S = 0.05  # how often a test samples a node while it waits (within a deadline)


@pytest.fixture
async def proc(tmp_path):
    """A node process without a rate limit (memory is measured on its own process)."""
    node = NodeProcess(str(tmp_path / "n"), extra=("--rate-limit", "0"))
    await node.start()
    try:
        yield node
    finally:
        node.kill()


def nested_pad(size: int) -> list:
    """A JSON value that costs ~20 times its text once parsed: many empty lists."""
    return [[]] * (size // 4)


# -- floods ----------------------------------------------------------------------
SWEEP = 3500  # resting sells each sweeping buy takes (~950 KB of answer; the client reads 1 MiB)
SWEEPS = 4
PADS = 300  # padded commands sent once the node stopped reading the connection
PAD_BYTES = 60_000
MAX_GROWTH_MB = 100  # what one connection may add to the node's peak memory


async def test_commands_read_ahead_of_a_stuck_connection_stay_small(proc):
    """A client that stops reading makes the node stop processing its commands; the
    commands it keeps sending (each a 60 KB frame of nested empty arrays, ~1 MB once
    parsed) must not pile up parsed in the node's memory."""
    pid = proc.proc.pid
    token = accounts.read(proc.data_dir)
    async with nodes.client() as http:
        for _ in range(SWEEPS):
            sells = [{"side": "sell", "qty": "1", "price": "10"}] * SWEEP
            r = await http.post(proc.url + "/orders", json=sells, timeout=60)
            assert r.status_code == 201, r.text
        base = vm_kb(pid, "VmHWM") // 1024
        pad = json.dumps({"op": "ping", "id": 1, "pad": nested_pad(PAD_BYTES)})
        async with connect(proc.url, token=token, rcvbuf=4096) as ws:
            for i in range(SWEEPS):  # answers of ~1 MB each, never read: the node stops reading
                await ws.send(op="order", id=i, order={"side": "buy", "qty": str(SWEEP),
                                                       "price": "10"})
            with trio.move_on_after(10):  # our sends block once the node stops reading
                for _ in range(PADS):
                    await ws.conn.send_message(pad)
            peak = vm_kb(pid, "VmHWM") // 1024
            r = await http.get(proc.url + "/status", timeout=5)  # everyone else is served
            assert r.status_code == 200
    print(f"\nnode peak memory: {base} MB before, {peak} MB with a stuck connection")
    assert peak - base < MAX_GROWTH_MB
