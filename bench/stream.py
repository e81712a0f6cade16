"""Benchmark of the WebSocket streams: trade latency across nodes, single orders/s.

Usage: python bench/stream.py [--rate R] [--duration S] [--entry-duration S] [--entry-only]
                              [--window N] [--pull-interval S] [--json]

Starts 3 durable nodes (fsync on, clients authenticated, rate limits too
high to bite) under a new temporary folder (``--ephemeral``: 3 nodes that
keep nothing and never fsync, without authentication), then:

1. Stream latency: crossing pairs of single orders (a sell, then a buy, all
   at one price, so every buy takes a sell) are posted to node A over HTTP, open loop, at --rate
   orders/s (default 1,000) for --duration seconds (default 8). Node B's
   ``trades`` stream is open meanwhile. For each buy, the latency runs from
   the moment A's 201 reached the client to the moment the trade it made
   arrived on B's stream (a push from A to B, B's publish, the stream).
   Can be negative: A pushes once the order is durable, which may beat its
   own answer to the client. ``--via ws`` sends the same pairs over one
   WebSocket to A instead (pipelined; the answer with status 201 is the
   acknowledgement): a client that sends many single orders. Prints p50
   and p99 (ms), and how many trades were seen; and the same from the
   moment the client sent each buy (``sent_to_stream``).
2. Order entry: single orders to node A, for --entry-duration seconds each
   (default 5): first over one keep-alive HTTP connection (httpx, one
   request at a time, as a client without batches sends them), then over one
   WebSocket connection, pipelined (up to --window commands in flight,
   default 1,000; answers in order; each order its own message, sent by a
   lean wsproto client, so that the client is not the bottleneck), each
   answer in its own frame (``ws_single_orders_per_s``, the headline
   figure); then the same with the connection opted into ``answers`` frames
   (``ws_batched_answers_*``: still one order per client frame, each
   answered, several answers per node frame; skipped on a node without the
   option). Prints the rates in orders/s, the ratio WebSocket / HTTP, and
   the CPU the entry node, the two others and the client spent per
   WebSocket order (from /proc). ``--entry-only`` runs only this part;
   ``--baseline REV`` runs it again on a cluster of that revision's code
   (``git archive REV`` in a temp folder), in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import trio
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, TextMessage
from wsproto.events import Request as WsRequest
from wsproto.utilities import LocalProtocolError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster import (  # noqa: E402
    NO_LIMIT,
    TOKENS,
    cpu_seconds,
    discovered,
    order_stream,
    percentile,
    status_line,
)
from figures import print_figures  # noqa: E402
from revision import export  # noqa: E402

from node.cli.devnet import start_node, stop  # noqa: E402
from node.store import accounts, jointoken  # noqa: E402


def ws_url(url: str) -> str:
    return "ws://" + url.split("://", 1)[1] + "/ws"


def auth_headers(url: str) -> dict[str, str]:
    token = TOKENS.get(url)  # none: an --ephemeral cluster, without authentication
    return {"Authorization": f"Bearer {token}"} if token else {}


async def stream_latency(a: str, b: str, rate: float, duration: float,
                         via: str = "http") -> dict:
    answered: dict[str, float] = {}  # buy order id -> when A's 201 arrived
    sent: dict[str, float] = {}  # buy order id -> when the client sent it
    sending: dict[str, float] = {}  # a WebSocket command id -> when it was sent
    arrived: dict[str, float] = {}  # taker id -> when its trade came on B's stream
    failures = 0
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with (httpx.AsyncClient(limits=limits, timeout=30, headers=auth_headers(a)) as http,
                open_websocket_url(ws_url(b), max_message_size=16 * 1024 * 1024) as ws):
        await ws.send_message(json.dumps({"op": "subscribe", "id": 1, "channel": "trades"}))

        async def listen() -> None:
            while True:
                message = json.loads(await ws.get_message())
                if message.get("type") == "trade":
                    arrived.setdefault(message["trade"]["taker"], time.monotonic())

        async def pair(price: str) -> None:
            nonlocal failures
            for side in ("sell", "buy"):
                began = time.monotonic()
                try:
                    response = await http.post(f"{a}/orders", json={
                        "side": side, "qty": "1", "price": price})
                except httpx.HTTPError:
                    failures += 1
                    return
                if response.status_code != 201:
                    failures += 1
                    return
                if side == "buy":
                    answered[response.json()["order"]["id"]] = time.monotonic()
                    sent[response.json()["order"]["id"]] = began

        async def over_websocket(pairs: int, start: float) -> None:
            """The same pairs over one WebSocket to A: the answer (status 201) of each
            buy is its acknowledgement; answers come in order, commands pipelined."""
            nonlocal failures
            headers = [(k.lower().encode(), v.encode()) for k, v in auth_headers(a).items()]
            async with open_websocket_url(ws_url(a), extra_headers=headers) as entry:
                async def answers() -> None:
                    nonlocal failures
                    for _ in range(2 * pairs):
                        message = json.loads(await entry.get_message())
                        if message.get("status") != 201:
                            failures += 1
                        elif str(message["id"]).startswith("b"):
                            order = message["result"]["order"]["id"]
                            answered[order] = time.monotonic()
                            sent[order] = sending.pop(message["id"])

                async with trio.open_nursery() as inner:
                    inner.start_soon(answers)
                    for i in range(pairs):
                        await trio.sleep_until(start + i * 2 / rate)
                        sending[f"b{i}"] = time.monotonic()
                        for side in ("sell", "buy"):
                            await entry.send_message(json.dumps({
                                "op": "order", "id": f"{side[0]}{i}",
                                "order": {"side": side, "qty": "1", "price": "100"}}))
                        status_line(f"stream latency: {i + 1}/{pairs} pairs sent, "
                                    f"{len(arrived)} trades seen at B")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            start = trio.current_time()
            pairs = int(duration * rate / 2)
            if via == "ws":
                await over_websocket(pairs, start)
            else:
                async with trio.open_nursery() as load:
                    for i in range(pairs):
                        await trio.sleep_until(start + i * 2 / rate)
                        load.start_soon(pair, "100")  # each buy takes a sell: a taker
                        status_line(f"stream latency: {i + 1}/{pairs} pairs sent, "
                                    f"{len(arrived)} trades seen at B")
            with trio.move_on_after(10):  # the last trades reach B
                while not set(answered) <= set(arrived):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        status = (await http.get(f"{a}/status")).json()
    latencies = [(arrived[k] - t) * 1000 for k, t in answered.items() if k in arrived]
    from_send = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
    return {
        "stream_orders_per_s": rate,
        "stream_orders_via": via,
        "stream_trades_seen": len(latencies),
        "stream_trades_missing": len(answered) - len(latencies),
        "stream_failed_requests": failures,
        "stream_latency_p50_ms": round(percentile(latencies, 0.50), 2),
        "stream_latency_p99_ms": round(percentile(latencies, 0.99), 2),
        # from the moment the client sent the buy (its answer's own delay included)
        "sent_to_stream_p50_ms": round(percentile(from_send, 0.50), 2),
        "sent_to_stream_p99_ms": round(percentile(from_send, 0.99), 2),
        # how A's pushes to its peers went (dropped ones wait for a pull)
        "a_push_requests": status["gossip"]["push_requests"],
        "a_dropped_pushes": status["gossip"]["dropped_pushes"],
        "a_store_commits": status["store"]["commits"],
    }


async def http_entry(url: str, duration: float, rng: random.Random) -> int:
    orders = order_stream(rng)
    placed = 0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=auth_headers(url)) as http:
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                response = await http.post(f"{url}/orders", json=next(orders))
            except httpx.RemoteProtocolError:  # the connection was recycled: a new one
                continue
            assert response.status_code == 201, response.text
            placed += 1
            status_line(f"HTTP entry: {placed} orders")
    return placed


async def ws_entry(url: str, duration: float, window: int, rng: random.Random,
                   batch_answers: bool = False) -> int | None:
    """Single orders over one WebSocket, up to ``window`` unanswered: a lean client
    (wsproto over a trio socket) that writes the frames it has ready together and
    reads answers as they come, so that it costs far less CPU per order than the
    node (trio-websocket costs about as much as the node per message: the client
    would be the bottleneck; orjson for its JSON both ways, a few us less per order
    than json). Every order is its own message, as before.
    ``batch_answers``: the connection first opts into ``answers`` frames
    (docs/streams.md); None if the node does not know that option."""
    orders = order_stream(rng)
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    ws = WSConnection(ConnectionType.CLIENT)
    headers = [(k.lower().encode(), v.encode()) for k, v in auth_headers(url).items()]
    answered = sent = 0
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(ws.send(WsRequest(host=f"{host}:{port}", target="/ws",
                                                extra_headers=headers)))
        accepted = False
        while not accepted:
            data = await stream.receive_some(65536)
            if not data:
                raise SystemExit("the node closed the WebSocket handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                elif isinstance(event, RejectConnection):
                    raise SystemExit(f"WebSocket refused: {event.status_code}")
        text = ""
        if batch_answers:
            sent, answered = 0, -1  # the options command is sent; its answer comes first
            await stream.send_all(ws.send(TextMessage(json.dumps(
                {"op": "options", "id": "options", "batch_answers": True}))))
        deadline = time.monotonic() + duration
        while True:
            if time.monotonic() < deadline and sent - answered < window:
                out = bytearray()
                while sent - answered < window:
                    sent += 1
                    out += ws.send(TextMessage(orjson.dumps(
                        {"op": "order", "id": sent, "order": next(orders)}).decode()))
                await stream.send_all(out)
            elif answered == sent:
                break
            data = await stream.receive_some(65536)
            if not data:
                raise SystemExit("the node closed the WebSocket")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage):
                    text += event.data
                    if not event.message_finished:
                        continue
                    message, text = orjson.loads(text), ""
                    for answer in message["answers"] if message["type"] == "answers" \
                            else [message]:
                        if answer["id"] == "options":
                            if not answer["ok"]:
                                return None  # a node before the option
                        else:
                            assert answer.get("status") == 201, answer
                        answered += 1
                elif isinstance(event, Ping):
                    await stream.send_all(ws.send(event.response()))
            status_line(f"WebSocket entry: {answered} orders")
        with contextlib.suppress(trio.BrokenResourceError, LocalProtocolError):
            await stream.send_all(ws.send(CloseConnection(code=1000)))
    return answered


async def entry(url: str, duration: float, window: int, seed: int,
                pids: list[int] | None = None) -> dict:
    """Both rates; with ``pids`` (the entry node's first), the CPU each node and this
    client spent per WebSocket order (/proc: 0 where it is missing)."""
    rng = random.Random(seed)
    start = time.monotonic()
    http = await http_entry(url, duration, rng)
    http_rate = http / (time.monotonic() - start)
    figures = {"http_single_orders_per_s": round(http_rate)}
    for batch, name in ((False, "ws"), (True, "ws_batched_answers")):
        cpu = [cpu_seconds(pid) for pid in pids or []]
        own = time.process_time()
        start = time.monotonic()
        ws = await ws_entry(url, duration, window, rng, batch)
        if ws is None:
            continue
        figures[f"{name}_single_orders_per_s"] = round(ws / (time.monotonic() - start))
        cpu = [(cpu_seconds(pid) - c) * 1e6 / max(ws, 1)
               for pid, c in zip(pids or [], cpu, strict=True)]
        if cpu:
            figures[f"{name}_entry_node_cpu_us_per_order"] = round(cpu[0])
            figures[f"{name}_peer_nodes_cpu_us_per_order"] = " ".join(f"{c:.0f}"
                                                                      for c in cpu[1:])
            figures[f"{name}_client_cpu_us_per_order"] = round(
                (time.process_time() - own) * 1e6 / max(ws, 1))
    figures["ws_to_http"] = round(figures["ws_single_orders_per_s"] / http_rate, 2)
    return figures


def start_nodes(args, data_root: str | None, code: str | None = None
                ) -> tuple[list, list[str]]:
    """3 nodes as cluster.py's ``start_cluster`` starts them, but never rate limited
    (an ephemeral cluster included: its single account would get 429s past 1,000
    orders/s), of the code in ``code`` if given (a revision that knows today's
    options), else this checkout's."""
    procs: list = []
    urls: list[str] = []
    token = jointoken.new()
    try:
        for i in range(3):
            extra = ["--pull-interval", str(args.pull_interval), "--join-token", token]
            extra += NO_LIMIT + ([] if data_root is not None else ["--insecure-no-auth"])
            extra += (["--ephemeral"] if data_root is None
                      else ["--data-dir", os.path.join(data_root, f"node{i}")])
            proc, url = start_node(extra + (["--peer", urls[0]] if urls else []), cwd=code)
            procs.append(proc)
            urls.append(url)
            if data_root is not None:
                TOKENS[url] = accounts.read(os.path.join(data_root, f"node{i}"))
        print(f"nodes ({'ephemeral' if data_root is None else 'data under ' + data_root}): "
              f"{' '.join(urls)}", file=sys.stderr)
        trio.run(discovered, urls)
    except BaseException:
        stop(procs)
        raise
    return procs, urls


def baseline_entry(args) -> dict:
    """Part 2 on a cluster of ``args.baseline``'s code (exported, then removed)."""
    print(f"== baseline: revision {args.baseline}", file=sys.stderr)
    code = tempfile.mkdtemp(prefix="crdtbook-baseline-")
    root = tempfile.mkdtemp(prefix="crdtbook-bench-stream-")
    try:
        export(args.baseline, into=code)
        procs, urls = start_nodes(args, None if args.ephemeral else root, code)
        try:
            figures = trio.run(entry, urls[0], args.entry_duration, args.window, args.seed,
                               [proc.pid for proc in procs])
        finally:
            stop(procs)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"baseline skipped: revision {args.baseline} could not be exported ({exc})",
              file=sys.stderr)
        return {}
    finally:
        shutil.rmtree(code, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return {"baseline_revision": args.baseline,
            **{f"baseline_{k}": v for k, v in figures.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--entry-duration", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--pull-interval", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ephemeral", action="store_true",
                        help="3 --ephemeral nodes (no fsync): what the stream itself costs, "
                             "without the disk")
    parser.add_argument("--via", choices=("http", "ws"), default="http",
                        help="how the latency part sends its orders to A: single HTTP "
                             "requests (default) or one pipelined WebSocket")
    parser.add_argument("--entry-only", action="store_true",
                        help="skip the stream latency part (1)")
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="also run the order entry part (2) on a cluster of this "
                             "revision's code, e.g. 2073425 (before issue 12)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="crdtbook-bench-stream-")
    procs, urls = start_nodes(args, None if args.ephemeral else root)
    result: dict = {}
    try:
        if not args.entry_only:
            result = trio.run(stream_latency, urls[0], urls[1], args.rate, args.duration,
                              args.via)
        result.update(trio.run(entry, urls[0], args.entry_duration, args.window, args.seed,
                               [proc.pid for proc in procs]))
    finally:
        stop(procs)
        shutil.rmtree(root, ignore_errors=True)
    if args.baseline:
        result.update(baseline_entry(args))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
