"""Benchmark of HTTP order entry, one order per request, against a bare ASGI app.

(Not bench/http.py: scripts here run with bench/ first on the path, where a
file named http.py would hide the standard library's http package from all.)

Usage: python bench/httpentry.py [--requests N] [--rounds R] [--seed S]
                            [--baseline REV] [--no-durable] [--json]
       python bench/httpentry.py --instructions [--requests N] [--baseline REV]

Starts, each in its own process:

* ``bare``: hypercorn's trio worker serving a minimal ASGI app that reads the
  request body and answers a small JSON 201: what hypercorn and trio alone
  cost per request on this machine;
* ``ephemeral``: one real node, ``--ephemeral --no-auth --rate-limit 0`` (no
  fsync, no token): the request handling the issue compares with ``bare``;
* ``durable``: one real node with a data directory (fsync on every answer),
  clients authenticated by the default account's token, no rate limit;
* with ``--baseline REV`` (e.g. 2073425, before issue 12), an ephemeral and a
  durable node of that revision's code (``git archive REV`` in a temp folder).

One keep-alive client (a separate process, a plain socket: it writes a
prepared request and reads the answer's head and Content-Length bytes, so it
costs far less CPU per request than the server and is not the bottleneck)
sends --requests sequential POST /orders (default 5,000) of one seeded limit
order each, after a warm-up of a tenth of that, and checks every answer is a
201. Each server gets --rounds rounds (default 3), interleaved so that all see
the same load from the rest of the machine; the best round counts. Prints
requests/s for each, ``ephemeral_to_bare`` (the target: >= 0.9), each server's
CPU per request (from /proc: less noisy than rates on a shared machine) and the
client's, ``--json`` for a JSON object. A status line on stderr says what runs.

``--instructions`` measures instead what no load on the machine moves: user-space
instructions per request (valgrind's callgrind), of ``bare`` and ``ephemeral``
(and the baseline's ephemeral node), each server run twice under callgrind,
for N and 3N requests (N: --requests, keep it small: valgrind runs ~50 times
slower), the difference divided by 2N. Under valgrind, trio's clock runs
``CLOCK_SCALE`` times slower than the wall clock, so that the node's timers
(its journal's window, lease, gossip) fire per request about as often as they
would without valgrind. Prints instructions per request and ``ephemeral_to_bare``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster import cpu_seconds  # noqa: E402
from figures import print_figures  # noqa: E402
from revision import export  # noqa: E402

from node.cli.devnet import start_node, stop  # noqa: E402
from node.store import accounts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MID = 100
NO_LIMIT = ["--rate-limit", "0"]
MAX_HEAD = 64 * 1024
CLOCK_SCALE = 40.0  # trio's clock under valgrind: about its slowdown of this code


# -- the bare app (run with --serve-bare) ------------------------------------
async def bare_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    answer = json.dumps({"ok": True, "bytes": len(body)}).encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


def serve_bare() -> int:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, bare_app, config)
            print(f"bare app listening on {binds[0]}", flush=True)

    trio.run(run)  # until stop()'s SIGTERM ends the process
    return 0


def serve_scaled(what: str, node_args: list[str]) -> int:
    """Serve ``bare`` or a node (``node_args``: its command line) with trio's clock
    ``CLOCK_SCALE`` times slower than the wall clock (for callgrind)."""
    import trio
    import trio.abc

    class Slow(trio.abc.Clock):
        def start_clock(self) -> None:
            self.start = time.perf_counter()

        def current_time(self) -> float:
            return (time.perf_counter() - self.start) / CLOCK_SCALE

        def deadline_to_sleep_time(self, deadline: float) -> float:
            return max(0.0, (deadline - self.current_time()) * CLOCK_SCALE)

    run = trio.run

    def slowly(*args, **kwargs):
        kwargs.setdefault("clock", Slow())
        return run(*args, **kwargs)

    trio.run = slowly
    if what == "bare":
        return serve_bare()
    from node.cli.main import main as node_main
    return node_main(["node", *node_args])


def instructions(what: str, count: int, code: str | None, out_dir: str) -> int:
    """User-space instructions a server spent in its life, serving ``count`` requests."""
    out = os.path.join(out_dir, f"callgrind.{what}.{count}")
    node_args = ["--listen", "127.0.0.1:0", "--log-level", "warning", "--ephemeral",
                 "--no-auth", *NO_LIMIT]
    script = os.path.join(code or str(ROOT), "bench", "httpentry.py")  # that code's node
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
           sys.executable, script, "--serve-scaled", "bare" if what == "bare" else "node",
           *([] if what == "bare" else node_args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=code or ROOT)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if " listening on " not in line:
            raise SystemExit(f"{what} failed to start under valgrind")
        run_client(line.strip().rsplit(" ", 1)[1], None, count, 1)
    finally:
        stop([proc])
    with open(out) as f:
        for row in f:
            if row.startswith("totals:"):
                return int(row.split()[1])
    raise SystemExit(f"no totals in {out}")


def count_instructions(args) -> dict:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (callgrind)")
    root = tempfile.mkdtemp(prefix="crdtbook-bench-http-cg-")
    code = export(args.baseline) if args.baseline else None
    if code:  # this script serves the baseline's node too (its bench/ may not know how)
        shutil.copy(__file__, os.path.join(code, "bench", "httpentry.py"))
    servers = [("bare", None), ("ephemeral", None)] + ([("baseline_ephemeral", code)]
                                                       if code else [])
    result: dict = {"requests": args.requests}
    try:
        for name, where in servers:
            totals = []
            for count in (args.requests, 3 * args.requests):
                status_line(f"{name}: {count} single orders under callgrind")
                totals.append(instructions(name, count, where, root))
            # each client run also sends a warm-up of a tenth
            result[f"{name}_instructions_per_request"] = round(
                (totals[1] - totals[0]) / (2 * args.requests * 1.1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if code:
            shutil.rmtree(code, ignore_errors=True)
    bare = result["bare_instructions_per_request"]
    for name, _ in servers[1:]:
        result[f"{name}_to_bare"] = round(result[f"{name}_instructions_per_request"] / bare, 3)
    return result


def start_bare() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve-bare"], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if " listening on " not in line:
        proc.kill()
        raise SystemExit(f"the bare app failed to start (exit {proc.wait()})")
    return proc, line.strip().rsplit(" ", 1)[1]


# -- the client (run with --client) ---------------------------------------------
def orders(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        side = rng.choice(("buy", "sell"))
        offset = round(rng.gauss(0.1, 0.5), 2)
        price = MID - offset if side == "buy" else MID + offset
        bodies.append(json.dumps({"side": side, "qty": str(rng.randint(1, 20)),
                                  "price": f"{max(price, 0.01):.2f}"}).encode())
    return bodies


def requests_for(url: str, token: str | None, bodies: list[bytes]) -> list[bytes]:
    host = url.split("://", 1)[1]
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    return [(f"POST /orders HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n").encode() + auth + b"\r\n" + body
            for body in bodies]


class Closed(Exception):
    """The server closed the connection before any byte of the answer (hypercorn
    does after ``keep_alive_max_requests`` answers): the client reconnects."""


def _fill(sock: socket.socket, buffer: bytearray, size: int) -> None:
    while len(buffer) < size:
        chunk = sock.recv(65536)
        if not chunk:
            raise Closed()
        buffer += chunk


def _line(sock: socket.socket, buffer: bytearray, mark: bytes = b"\r\n") -> int:
    """Where ``mark`` ends in ``buffer``, reading until it is there."""
    while (end := buffer.find(mark)) < 0:
        if len(buffer) > MAX_HEAD:
            raise SystemExit("the server sent a huge head")
        _fill(sock, buffer, len(buffer) + 1)
    return end + len(mark)


def answer(sock: socket.socket, buffer: bytearray) -> int:
    """Read one answer (Content-Length or chunked) off a keep-alive connection;
    return its status. Only what the servers here send is understood."""
    end = _line(sock, buffer, b"\r\n\r\n")
    head = bytes(buffer[:end]).lower()
    del buffer[:end]
    status = int(head[9:12])
    at = head.find(b"content-length:")
    if at >= 0:
        length = int(head[at + 15:head.index(b"\r\n", at)])
        _fill(sock, buffer, length)
        del buffer[:length]
        return status
    if b"transfer-encoding: chunked" not in head:
        raise SystemExit("an answer with neither Content-Length nor chunks")
    while True:
        end = _line(sock, buffer)
        size = int(bytes(buffer[:end - 2]).split(b";")[0], 16)
        _fill(sock, buffer, end + size + 2)
        del buffer[:end + size + 2]
        if size == 0:  # the last chunk (no trailers here)
            return status


def client(url: str, token: str | None, count: int, seed: int) -> int:
    """Send ``count`` single orders one after the other on one connection (after a
    warm-up); print the seconds they took as JSON."""
    warm = max(1, count // 10)
    prepared = requests_for(url, token, orders(seed, warm + count))
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    sock = None

    def send(request: bytes) -> None:
        nonlocal sock
        for _ in range(2):
            if sock is None:
                sock = socket.create_connection((host, int(port)))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = bytearray()
            sock.sendall(request)
            try:
                status = answer(sock, buffer)
            except Closed:
                if buffer:
                    raise SystemExit("the server closed the connection mid-answer") from None
                sock.close()
                sock = None  # closed after its last keep-alive answer: again, on a new one
                continue
            if status != 201:
                raise SystemExit(f"answer {status}")
            return
        raise SystemExit("the server closes every new connection")

    try:
        for request in prepared[:warm]:
            send(request)
        cpu, start = time.process_time(), time.perf_counter()
        for request in prepared[warm:]:
            send(request)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        if sock is not None:
            sock.close()
    print(json.dumps({"seconds": elapsed, "client_cpu_s": cpu}))
    return 0


def run_client(url: str, token: str | None, count: int, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--client", url, "--requests", str(count),
           "--seed", str(seed)]
    env = dict(os.environ)
    if token:
        env["BENCH_TOKEN"] = token  # not on the command line, where ps would show it
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the bench client failed against {url}: {done.stderr.strip()}")
    return json.loads(done.stdout)


# -- the servers ------------------------------------------------------------------
class Server:
    def __init__(self, name: str, proc: subprocess.Popen, url: str, token: str | None) -> None:
        self.name, self.proc, self.url, self.token = name, proc, url, token
        self.best: float = 0.0
        self.client_cpu_us: float = 0.0
        self.cpu_us: float = 0.0  # the server's CPU per request in its best round


def start_servers(args, root: str, code: str | None, prefix: str) -> list[Server]:
    servers = []
    proc, url = start_node(["--ephemeral", "--no-auth", *NO_LIMIT], cwd=code)
    servers.append(Server(f"{prefix}ephemeral", proc, url, None))
    if not args.no_durable:
        data = os.path.join(root, f"{prefix}durable")
        proc, url = start_node(["--data-dir", data, *NO_LIMIT], cwd=code)
        servers.append(Server(f"{prefix}durable", proc, url, accounts.read(data)))
    return servers


def status_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="also measure nodes of this revision (e.g. 2073425)")
    parser.add_argument("--no-durable", action="store_true", help="skip the durable node")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per request under callgrind instead "
                             "(bare and ephemeral; try --requests 100)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-scaled", choices=("bare", "node"), help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.serve_scaled:
        return serve_scaled(args.serve_scaled, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.instructions:
        print_figures(count_instructions(args), args.json)
        return 0
    if args.serve_bare:
        return serve_bare()
    if args.client:
        return client(args.client, os.environ.get("BENCH_TOKEN"), args.requests, args.seed)

    root = tempfile.mkdtemp(prefix="crdtbook-bench-http-")
    code = None
    procs: list[subprocess.Popen] = []
    try:
        proc, url = start_bare()
        procs.append(proc)
        servers = [Server("bare", proc, url, None)]
        servers += start_servers(args, root, None, "")
        if args.baseline:
            code = export(args.baseline)
            servers += start_servers(args, root, code, "baseline_")
        procs += [s.proc for s in servers[1:]]
        for rnd in range(args.rounds):
            for server in servers:
                status_line(f"round {rnd + 1}/{args.rounds}: {server.name} ({server.url}), "
                            f"{args.requests} single orders on one keep-alive connection")
                cpu = cpu_seconds(server.proc.pid)
                got = run_client(server.url, server.token, args.requests,
                                 args.seed + rnd)
                cpu = cpu_seconds(server.proc.pid) - cpu  # the warm-up's included
                rate = args.requests / got["seconds"]
                if rate > server.best:
                    server.best = rate
                    server.client_cpu_us = got["client_cpu_s"] / args.requests * 1e6
                    server.cpu_us = cpu / (args.requests * 1.1) * 1e6
    finally:
        stop(procs)
        shutil.rmtree(root, ignore_errors=True)
        if code:
            shutil.rmtree(code, ignore_errors=True)
    result: dict = {"requests": args.requests, "rounds": args.rounds}
    for server in servers:
        result[f"{server.name}_requests_per_s"] = round(server.best)
    bare = servers[0].best
    for server in servers[1:]:
        result[f"{server.name}_to_bare"] = round(server.best / bare, 3)
    for server in servers:
        result[f"{server.name}_cpu_us_per_request"] = round(server.cpu_us)
    result["client_cpu_us_per_request"] = round(servers[0].client_cpu_us, 1)
    if args.baseline:
        result["baseline_revision"] = args.baseline
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
