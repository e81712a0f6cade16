"""``crdtbook devnet``: a local cluster of real node processes.

Starts n ``crdtbook node`` children on free loopback ports (the first one
alone: it founds the cluster and prints its join token; the others with
``--peer`` pointing at it and that token, read from the founder's data
directory: discovery does the rest),
each with its data directory under one folder (a new temporary one unless
``--data-dir`` names it),
prints their URLs and a command to try, and waits for Ctrl-C, then stops
them with SIGTERM. ``--demo`` also submits a scripted set of crossing orders
to different nodes, waits until every node holds the same digest, and prints
each node's book and fills. Orders go in with each node's default account
(its token is in the node's data directory, ``account-token``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from . import client
from .client import CliError

DEMO = [  # (node index, side, qty, price)
    (0, "sell", "3", "12"),
    (1, "sell", "2", "12.5"),
    (2, "buy", "2", "13"),
    (0, "buy", "1", "11"),
    (1, "buy", "4", "12.5"),
    (2, "sell", "1", "10"),
]


def start_node(extra: list[str], log_level: str = "warning",
               cwd: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``crdtbook node`` on a free port; return the process and its URL.

    ``cwd``: run the code found there instead (a benchmark's baseline revision).
    """
    cmd = [sys.executable, "-m", "node", "node", "--listen", "127.0.0.1:0",
           "--log-level", log_level, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=cwd)
    line = proc.stdout.readline() if proc.stdout else ""
    if " listening on " not in line:
        proc.kill()
        raise CliError(f"a node failed to start (exit {proc.wait()}); run {' '.join(cmd)} "
                       "to see why")
    return proc, line.strip().rsplit(" ", 1)[1]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


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


def run_devnet(n: int, demo: bool, book: str, data_root: str | None = None) -> int:
    procs: list[subprocess.Popen] = []
    urls: list[str] = []
    data_root = data_root or tempfile.mkdtemp(prefix="crdtbook-devnet-")
    try:
        print(f"starting {n} nodes, data under {data_root} ...", file=sys.stderr)
        for i in range(n):
            extra = ["--book", book, "--pull-interval", "0.5",
                     "--data-dir", os.path.join(data_root, f"node{i}")]
            if urls:  # founded by now: its join token is kept
                extra += ["--peer", urls[0], "--join-token",
                          founders_token(os.path.join(data_root, "node0"))]
            proc, url = start_node(extra)
            procs.append(proc)
            urls.append(url)
            print(f"  node {i}: {url}")
            wait_joined(urls[:1])
        wait_joined(urls)
        first, last = (os.path.join(data_root, f"node{i}") for i in (0, n - 1))
        print(f"\ntry:  CRDTBOOK_NODE={urls[0]} crdtbook order sell 3@12 --data-dir {first}")
        print(f"      CRDTBOOK_NODE={urls[-1]} crdtbook order buy 2@13 --data-dir {last}")
        print(f"      CRDTBOOK_NODE={urls[0]} crdtbook book")
        # leave/evict need a node's admin token, which is in its data directory
        print(f"      crdtbook admin-token --data-dir {os.path.join(data_root, 'node0')}")
        print(f"      crdtbook join-token --data-dir {os.path.join(data_root, 'node0')}")
        if demo:
            run_demo(urls, [local_token(os.path.join(data_root, f"node{i}")) for i in range(n)])
        print("\ncluster running; Ctrl-C to stop", file=sys.stderr)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a node exited; stopping the cluster", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", file=sys.stderr)
        return 0
    finally:
        stop(procs)


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
    for url, book in zip(urls, books, strict=True):
        fills = client.call("GET", url, "/fills")["fills"]
        print(f"\n== {url}  digest {book['digest'][:16]}")
        print(client.format_book(book))
        print(client.format_fills(fills))
    print(f"\nall {len(urls)} nodes agree on digest {books[0]['digest'][:16]}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_devnet(int(os.environ.get("N", "3")), True, "default"))
