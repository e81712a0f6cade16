"""``crdtbook devnet``: a local cluster of real node processes.

Starts n ``crdtbook node`` children on free loopback ports (the first one
alone: it founds the cluster and prints its join token; the others with
``--peer`` pointing at it and that token, read from the founder's data
directory: discovery does the rest),
each with its data directory under one folder (a new temporary one unless
``--data-dir`` names it),
prints their URLs and commands to try, and waits for Ctrl-C (or SIGTERM),
then stops them with SIGTERM. ``--demo`` also submits a scripted set of
crossing orders to different nodes, waits until every node holds the same
digest, and prints each node's book and fills. Orders go in with each node's
default account (its token is in the node's data directory,
``account-token``).

Stopping: the nodes run in process groups of their own, so a Ctrl-C at the
terminal reaches devnet alone, and devnet alone stops them: one SIGTERM each,
one line said (``stopping 3 nodes ... stopped``), exit status 0. A second
Ctrl-C while they stop kills them at once. Each node is in ``procs`` from the
moment it is spawned, so a signal at any point leaves none behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from . import client, render
from .client import CliError
from .output import Output, crdtbook_command

DEMO = [  # (node index, side, qty, price)
    (0, "sell", "3", "12"),
    (1, "sell", "2", "12.5"),
    (2, "buy", "2", "13"),
    (0, "buy", "1", "11"),
    (1, "buy", "4", "12.5"),
    (2, "sell", "1", "10"),
]


def start_node(extra: list[str], log_level: str = "warning", cwd: str | None = None,
               procs: list[subprocess.Popen] | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``crdtbook node`` on a free port; return the process and its URL.

    ``cwd``: run the code found there instead (a benchmark's baseline revision).
    ``procs``: the process is added to it as soon as it exists (and is then
    started in its own process group: whoever keeps ``procs`` stops it).
    """
    cmd = [sys.executable, "-m", "node", "node", "--listen", "127.0.0.1:0",
           "--log-level", log_level, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=cwd,
                            process_group=0 if procs is not None else None)
    if procs is not None:
        procs.append(proc)
    line = proc.stdout.readline() if proc.stdout else ""
    if " listening on " not in line:
        proc.kill()
        raise CliError(f"a node failed to start (exit {proc.wait()}); run {' '.join(cmd)} "
                       "to see why")
    return proc, line.strip().rsplit(" ", 1)[1]


STOP_WAIT_S = 10.0  # a node that has not stopped after this is killed
POLL_S = 0.05


def stop(procs: list[subprocess.Popen], hurry=lambda: False) -> None:
    """SIGTERM to each node, then wait for all; kill those still running after
    ``STOP_WAIT_S``, or at once when ``hurry()`` turns true."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while any(proc.poll() is None for proc in procs):
        if hurry() or time.monotonic() > deadline:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            for proc in procs:
                proc.wait()
            return
        time.sleep(POLL_S)


def wait_joined(urls: list[str], timeout: float = 20.0) -> None:
    """Until every node has joined the cluster (the first founds it, the rest are admitted)."""
    deadline = time.monotonic() + timeout
    while not all(client.call("GET", url, "/status").get("joined") for url in urls):
        if time.monotonic() > deadline:
            raise CliError(f"nodes did not all join within {timeout:g}s")
        time.sleep(0.05)


def wait_converged(urls: list[str], events: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        books = [client.call("GET", url, "/book") for url in urls]
        fills = [client.call("GET", url, "/fills")["fills"] for url in urls]
        agree = len({b["digest"] for b in books}) == 1
        if (agree and all(b["events_total"] >= events for b in books)
                and all(f and all(x["final"] for x in f) for f in fills)):
            return books
        if time.monotonic() > deadline:
            raise CliError(f"nodes did not converge within {timeout:g}s")
        print(f"\rwaiting until all agree and fills are final: "
              f"{[b['events'] for b in books]} events held ...",
              end="", file=sys.stderr, flush=True)
        time.sleep(0.1)


def founders_token(directory: str) -> str:
    from ..store import jointoken
    from ..store.sqlite import StoreError

    try:
        token = jointoken.read(directory)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    if token is None:
        raise CliError(f"the founder kept no join token in {directory}")
    return token


class Stop(BaseException):
    """SIGINT or SIGTERM: stop the cluster (a BaseException, as KeyboardInterrupt,
    so that no ``except Exception`` on the way swallows it)."""


def run_devnet(n: int, demo: bool, book: str, data_root: str | None = None) -> int:
    procs: list[subprocess.Popen] = []
    asked = 0  # signals received
    stopping = raised = False

    def interrupt(signum, frame) -> None:
        nonlocal asked, stopping, raised
        asked += 1
        if not stopping:
            stopping = raised = True
            raise Stop

    def hurry() -> bool:  # one more signal while they stop: kill them now
        return asked > (1 if raised else 0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    try:
        return run_cluster(n, demo, book, data_root, procs)
    except Stop:
        # the terminal echoed ^C without a newline: the one line starts on its own
        print(f"\nstopping {render.plural(len(procs), 'node')} ...", end="",
              file=sys.stderr, flush=True)
        stop(procs, hurry)
        print(" killed" if hurry() else " stopped", file=sys.stderr)
        return 0
    finally:
        stopping = True
        stop(procs, hurry)  # (nothing to do if they are stopped already)
        # the process ends next: a late Ctrl-C must not turn into a KeyboardInterrupt
        # (or a death by SIGINT) on the way out
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def run_cluster(n: int, demo: bool, book: str, data_root: str | None,
                procs: list[subprocess.Popen]) -> int:
    urls: list[str] = []
    data_root = data_root or tempfile.mkdtemp(prefix="crdtbook-devnet-")
    print(f"starting {render.plural(n, 'node')}, data under {data_root} ...", file=sys.stderr)
    for i in range(n):
        extra = ["--book", book, "--pull-interval", "0.5",
                 "--data-dir", os.path.join(data_root, f"node{i}")]
        if urls:  # founded by now: its join token is kept
            extra += ["--peer", urls[0], "--join-token",
                      founders_token(os.path.join(data_root, "node0"))]
        _, url = start_node(extra, procs=procs)
        urls.append(url)
        print(f"  node {i}: {url}")
        wait_joined(urls[:1])
    wait_joined(urls)
    cmd = crdtbook_command()
    first, last = (os.path.join(data_root, f"node{i}") for i in (0, n - 1))
    print(f"\ntry:  CRDTBOOK_NODE={urls[0]} {cmd} order sell 3@12 --data-dir {first}")
    print(f"      CRDTBOOK_NODE={urls[-1]} {cmd} order buy 2@13 --data-dir {last}")
    print(f"      {cmd} book --node {urls[0]}")
    print(f"      {cmd} status --node {urls[0]}")
    print(f"      {cmd} trades --follow --node {urls[0]}")
    # leave/evict need a node's admin token, which is in its data directory
    print(f"      {cmd} admin-token --data-dir {first}")
    print(f"      {cmd} join-token --data-dir {first}")
    if cmd != "crdtbook":
        print(f"      (or activate the environment first: . {os.path.dirname(cmd)}/activate; "
              "then `crdtbook` works)")
    print(f"web:  open {urls[0]}/ in a browser (the book, trades and cluster, live)")
    if demo:
        run_demo(urls, [local_token(os.path.join(data_root, f"node{i}")) for i in range(n)])
    print("\ncluster running; Ctrl-C to stop", file=sys.stderr)
    while all(p.poll() is None for p in procs):
        time.sleep(0.5)
    print("a node exited; stopping the cluster", file=sys.stderr)
    return 1


def local_token(directory: str) -> str:
    """The default account's token of the node whose data directory this is."""
    from ..store import accounts
    from ..store.sqlite import StoreError

    try:
        return accounts.read(directory)
    except (FileNotFoundError, StoreError) as exc:
        raise CliError(f"no default account token in {directory}: {exc}") from None


def run_demo(urls: list[str], tokens: list[str]) -> None:
    print("\ndemo: submitting crossing orders to different nodes")
    for index, side, qty, price in DEMO:
        url = urls[index % len(urls)]
        result = client.call("POST", url, "/orders", {"side": side, "qty": qty, "price": price},
                             token=tokens[index % len(urls)])
        print(f"  {url}  {side} {qty}@{price} -> {result['order']['id']}")
    books = wait_converged(urls, len(DEMO))
    print(file=sys.stderr)
    out = Output()
    for url, book in zip(urls, books, strict=True):
        fills = client.call("GET", url, "/fills")["fills"]
        out.line(f"\n== {url}")
        out.show(render.book_view(book), render.fills_table(fills))
    sys.stdout.flush()
    print(f"\nall {len(urls)} nodes agree on digest {books[0]['digest'][:16]}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_devnet(int(os.environ.get("N", "3")), True, "default"))
