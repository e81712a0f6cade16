"""`crdtbook book --watch` and `crdtbook trades [--follow]` in subprocesses, on the stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from . import nodes
from .procs import NodeProcess

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "node"]
LINE_S = 20.0  # deadline for each line a command is expected to print


class Command:
    """A CLI command running in the background; its lines read with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*CLI, *args], cwd=ROOT, env=dict(os.environ),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def line(self, stream: str = "stdout") -> str:
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        with trio.fail_after(LINE_S):
            text = await trio.to_thread.run_sync(pipe.readline, abandon_on_cancel=True)
        assert text, f"the command ended (exit {self.proc.poll()})"
        return text

    async def line_with(self, text: str, stream: str = "stdout") -> str:
        while True:
            line = await self.line(stream)
            if text in line:
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


async def test_trades_follow_prints_trades_and_their_finality():
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        follow = Command("trades", "--follow", "--node", a.url)
        try:
            await client.post(a.url + "/orders", json={"side": "sell", "qty": "2",
                                                       "price": "10"})
            taker = (await client.post(a.url + "/orders", json={
                "side": "buy", "qty": "1", "price": "10"})).json()["order"]
            trade = await follow.line_with(" @ 10 ")
            assert "buy" in trade and taker["id"].split(":")[0][:10] in trade
            if "provisional" in trade:
                assert "final" in await follow.line_with("final")
        finally:
            follow.stop()
        with trio.fail_after(60):  # the node runs in this process: never block its loop
            once = await trio.run_process([*CLI, "trades", "--json", "--node", a.url],
                                          cwd=ROOT, capture_stdout=True, capture_stderr=True,
                                          check=False)
        assert once.returncode == 0, once.stderr
        snapshot = [json.loads(x) for x in once.stdout.decode().splitlines()][-1]
        assert [t["qty"] for t in snapshot["trades"]] == ["1"]
        await a.stop()


async def test_book_watch_json_prints_the_snapshot_then_updates():
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        watch = Command("book", "--watch", "--json", "--depth", "5", "--node", a.url)
        try:
            snapshot = json.loads(await watch.line_with('"snapshot"'))
            assert (snapshot["depth"], snapshot["bids"], snapshot["asks"]) == (5, [], [])
            await client.post(a.url + "/orders", json={"side": "buy", "qty": "4",
                                                       "price": "7.5"})
            update = json.loads(await watch.line_with('"update"'))
            assert update == {"type": "update", "channel": "book", "seq": 2,
                              "bids": [["7.5", "4"]], "asks": []}
        finally:
            watch.stop()
        await a.stop()


async def test_book_watch_reconnects_when_the_node_comes_back(tmp_path):
    node = NodeProcess(str(tmp_path / "n"))
    await node.start()
    watch = Command("book", "--watch", "--node", node.url)
    try:
        assert "(empty book)" in await watch.line_with("(empty book)")
        node.kill()
        lost = await watch.line_with("reconnecting", stream="stderr")
        assert node.url in lost
        await node.start()  # same port, same data
        assert "reconnected" in await watch.line_with("reconnected", stream="stderr")
        async with nodes.client() as client:
            placed = await client.post(node.url + "/orders", json={
                "side": "sell", "qty": "3", "price": "12"})
            assert placed.status_code == 201
        row = await watch.line_with(" 12 ")
        assert "3" in row
    finally:
        watch.stop()
        await node.stop()


class ScriptedSocket:
    """Plays a node's messages to node/cli/stream.py's subscription loop."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = [json.dumps(m) for m in messages]
        self.sent: list[dict] = []

    async def send_message(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def get_message(self) -> str:
        return self.messages.pop(0)


async def test_a_gap_or_a_reset_makes_the_cli_subscribe_again():
    from node.cli import stream

    seen = []
    old = {"type": "update", "channel": "book", "seq": 9, "bids": [], "asks": []}
    for trouble, why in (({"type": "update", "channel": "book", "seq": 4, "bids": [],
                           "asks": []}, "skipped from 2 to 4"),
                         ({"type": "reset", "channel": "book", "reason": "slow_consumer"},
                          "slow_consumer")):
        ws = ScriptedSocket([old])  # an earlier subscription's message, then the answer
        ident = f"cli-{stream._Ids.count + 1}"
        ws.messages += [json.dumps(m) for m in (
            {"type": "answer", "id": ident, "ok": True, "status": 200,
             "result": {"channel": "book"}},
            {"type": "snapshot", "channel": "book", "seq": 1, "depth": 5, "bids": [],
             "asks": [], "final_clock": 0},
            {"type": "update", "channel": "book", "seq": 2, "bids": [["1", "1"]], "asks": []},
            trouble)]
        with pytest.raises(stream.Gap) as gap:
            await stream._subscription(ws, {"channel": "book", "depth": 5}, seen.append,
                                       False, True)
        assert why in str(gap.value)
        assert ws.sent == [{"op": "subscribe", "id": ident, "channel": "book", "depth": 5}]
        assert [m["seq"] for m in seen[-2:]] == [1, 2]  # the old subscription's 9 skipped
