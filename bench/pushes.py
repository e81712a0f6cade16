"""Benchmark of one push between two nodes: CPU per push of the sender and the receiver.

Usage: python bench/pushes.py [--events K ...] [--pushes N] [--instructions]
                              [--transport http|stream ...] [--baseline REV] [--json]

A durable node (a subprocess, fsync on: a push is answered once durable)
takes N pushes (default 600) from a member this script plays in process:
a replica admitted through the node's ``/peer/join``, whose blocks of K
orders each (``--events``, default 1 and 50: the fixed cost of a push and a
commit's worth of orders) are signed and encoded before the clock starts,
then sent one after the other as a node's sender does (``gossip.post`` with
the client a node of that code makes, waiting for each 204). Prints, per
push, the receiver's CPU (from /proc, its event loop's thread and the rest)
and the sender's own (``time.process_time``: its HTTP client and the wait),
and the wall time per push (sent one after the other: each waits for the
receiver's commit).

``--transport`` (default: both, each against a node of its own) says how
the pushes travel: ``http``, one ``POST /peer/push`` each, or ``stream``, one
binary message each on one WebSocket kept open to ``/peer/stream``
(node/cluster/pushstream.py, as a node's sender keeps one per peer; a
revision without it is measured over ``http`` only).

``--instructions`` counts instead what no load on the machine moves: the
receiver runs under valgrind's callgrind, once for N and once for 2N
pushes, and the difference over N is printed as user-space instructions per
push (keep N small: valgrind runs ~50 times slower).

``--baseline REV`` runs the same on REV's code (``git archive``), receiver
and sender both, in the same run: the sender half runs in a subprocess on
that tree, with the HTTP client that revision's node uses (httpx before
node/cluster/peerhttp.py existed).

Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import callgrind

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
WARM = 20  # pushes before the clock starts
MID = 100.0


def _cpu(pid: int) -> dict[str, int]:
    """Clock ticks of ``pid`` so far: its main thread, and its other threads."""
    out = {"main": 0, "threads": 0}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out["main" if task == str(pid) else "threads"] += int(fields[11]) + int(fields[12])
    return out


def _start(code: str, data: str, token: str, callgrind: str | None):
    cmd = [sys.executable, "-m", "node", "node", "--listen", "127.0.0.1:0",
           "--log-level", "warning", "--data-dir", data, "--join-token", token,
           "--rate-limit", "1000000000", "--rate-burst", "1000000000"]
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}",
               "--dump-instr=no"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=code, env=dict(os.environ, PYTHONHASHSEED="0"))
    line = proc.stdout.readline() if proc.stdout else ""
    if " listening on " not in line:
        proc.kill()
        raise SystemExit(f"the node did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[1]


def _client():
    """What a node of this tree calls its peers with, and how to close it."""
    try:
        from node.cluster.peerhttp import PeerClient
    except ImportError:  # before it: httpx, as node/server.py set it up
        import httpx
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256,
                                                       max_keepalive_connections=64,
                                                       keepalive_expiry=2.5), timeout=20)
        for name in ("accept", "accept-encoding", "connection"):
            client.headers.pop(name, None)
        client.headers["user-agent"] = "crdtbook"
        return client, "httpx"
    return PeerClient(), "peerhttp"


def sender(url: str, token: str, events: int, pushes: int, pid: int,
           transport: str = "http") -> dict:
    """This process plays the member: join, build the pushes, send them; CPU per push."""
    import trio

    from crdtbook.door import Door
    from crdtbook.feedwire import encode_blocks
    from crdtbook.keys import Signer
    from crdtbook.replica import Replica
    from node.cluster import admission, gossip

    signer = Signer.from_name("bench-pushes")
    replica = Replica(signer.id, track_fresh=True)
    door = Door(replica, signer.sign)
    rng = random.Random(1)
    headers = {"content-type": "application/cbor", "x-crdtbook-replica": signer.id,
               "x-crdtbook-book": "default"}

    def bodies(count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            now = int(time.time() * 1000)
            for _ in range(events):
                side = rng.choice(("buy", "sell"))
                offset = round(rng.gauss(0.1, 0.5), 2)
                price = MID - offset if side == "buy" else MID + offset
                replica.place(side, str(rng.randint(1, 20)), f"{max(price, 0.01):.2f}",
                              now_ms=now)
            own = [e for e in replica.take_fresh() if e.replica == signer.id]
            out.append(encode_blocks([door.seal(own)],
                                     door.outgoing_claims(replica.claim(now))))
        return out

    async def run() -> dict:
        client, kind = _client()
        async with client, trio.open_nursery() as nursery:
            join = admission.request(signer, "default", token, int(time.time() * 1000))
            await gossip.post(client, url + "/peer/join", join,
                              {"content-type": "application/cbor"}, 60, 1 << 26)
            await trio.sleep(0.01)  # the orders are stamped after the join
            made = bodies(WARM + pushes)
            if transport == "stream":
                from node.cluster import pushstream

                link = await pushstream.connect(url, signer.id, "default")
                nursery.start_soon(link.read)
                kind = "pushstream"

                async def push(body: bytes) -> None:
                    with trio.fail_after(120):
                        answer = await link.exchange(body, False)
                    assert answer.status_code == 204, answer.content
            else:
                async def push(body: bytes) -> None:
                    await gossip.post(client, url + "/peer/push", body, headers, 120, 65536,
                                      expect=204)
            for body in made[:WARM]:
                await push(body)
            before, own, wall = _cpu(pid), time.process_time(), time.perf_counter()
            for body in made[WARM:]:
                await push(body)
            own, after = time.process_time() - own, _cpu(pid)
            wall = time.perf_counter() - wall
            nursery.cancel_scope.cancel()
        return {"client": kind, "sender_us": own / pushes * 1e6,
                "wall_us": wall / pushes * 1e6,
                "receiver_main_us": (after["main"] - before["main"]) / TICK / pushes * 1e6,
                "receiver_threads_us": (after["threads"] - before["threads"]) / TICK
                / pushes * 1e6}

    return trio.run(run)


def one(code: str, events: int, pushes: int, callgrind: str | None = None,
        transport: str = "http") -> dict:
    """A receiver of ``code`` and a sender of ``code`` (a subprocess on that tree)."""
    token = "crdtbook-join-" + "0123456789abcdef" * 2
    data = tempfile.mkdtemp(prefix="crdtbook-bench-pushes-")
    proc, url = _start(code, data, token, callgrind)
    try:
        child = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "pushes.py"), "--sender", url, token,
             str(events), str(pushes), str(proc.pid), transport],
            cwd=code, env=dict(os.environ, PYTHONPATH=code), capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"the sender failed:\n{child.stderr[-2000:]}")
        return json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def measure(code: str, name: str, args, out_dir: str) -> dict:
    result: dict = {}
    streams = (Path(code) / "node" / "cluster" / "pushstream.py").exists()
    for events in args.events:
        for transport in args.transport:
            if transport == "stream" and not streams:
                continue
            print(f"{name}: pushes of {events} orders over {transport}", file=sys.stderr,
                  flush=True)
            key = f"{name}_{transport}_{events}"
            if args.instructions:
                counts = []
                for n in (args.pushes, 2 * args.pushes):
                    path = os.path.join(out_dir, f"callgrind.{name}.{transport}.{events}.{n}")
                    one(code, events, n, path, transport)
                    counts.append(callgrind.total(path))
                result[f"{key}_receiver_instructions_per_push"] = round(
                    (counts[1] - counts[0]) / args.pushes)
                continue
            figures = one(code, events, args.pushes, transport=transport)
            result[f"{key}_client"] = figures["client"]
            result[f"{key}_sender_cpu_us_per_push"] = round(figures["sender_us"])
            result[f"{key}_receiver_cpu_us_per_push"] = round(figures["receiver_main_us"]
                                                              + figures["receiver_threads_us"])
            result[f"{key}_receiver_loop_cpu_us_per_push"] = round(figures["receiver_main_us"])
            result[f"{key}_wall_us_per_push"] = round(figures["wall_us"])
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--sender"]:  # the sender half, on the tree it runs in
        url, token, events, pushes, pid = argv[1:6]
        transport = argv[6] if len(argv) > 6 else "http"
        sys.path.insert(0, os.getcwd())
        print(json.dumps(sender(url, token, int(events), int(pushes), int(pid), transport)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--pushes", type=int, default=600)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--transport", nargs="+", choices=("http", "stream"),
                        default=["http", "stream"])
    parser.add_argument("--baseline", metavar="REV", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (callgrind)")
    sys.path.insert(0, str(ROOT / "bench"))
    from figures import print_figures
    from revision import export

    out_dir = tempfile.mkdtemp(prefix="crdtbook-bench-pushes-out-")
    result: dict = {}
    try:
        if args.baseline:
            code = export(args.baseline)
            try:
                result.update(measure(code, "baseline", args, out_dir))
            finally:
                shutil.rmtree(code, ignore_errors=True)
            result["baseline_revision"] = args.baseline
        result.update(measure(str(ROOT), "this", args, out_dir))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
