"""Helpers for integration tests: real nodes on 127.0.0.1, port 0, in the test's nursery.

Nodes authenticate clients (node/api/auth.py). ``client()`` authenticates
properly, the way the CLI does on a node's machine: every request to a node
these helpers (or tests/procs.py) started carries that node's default
account token, read from its data directory, unless the request sets its
own ``Authorization`` (``client(local_token=False)``: none at all).
"""

from __future__ import annotations

import contextlib

import httpx
import trio

from node import asgi
from node.server import serve_node
from node.service import Node, NodeConfig
from node.store import accounts, admintoken

# Every node these helpers start shows this join token: a founder makes it its
# cluster's token, a joiner is admitted with it (tests of admission pass their own).
JOIN_TOKEN = "crdtbook-join-" + "0123456789abcdef" * 2


class Running:
    """A node started in a nursery; ``stop()`` shuts it down gracefully."""

    def __init__(self, node: Node, shutdown: trio.Event, done: trio.Event) -> None:
        self.node = node
        self.shutdown = shutdown
        self.done = done
        self.directory = node.store.directory
        DATA_DIRS[node.url] = self.directory

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def token(self) -> str:
        """The node's default account's token (account "local")."""
        return accounts.read(self.directory)

    @property
    def admin(self) -> dict[str, str]:
        """Headers that make a request the node's operator (for /evict, /leave)."""
        return admin_headers(self.directory)

    async def stop(self) -> None:
        self.shutdown.set()
        with trio.fail_after(10):
            await self.done.wait()


async def start(nursery: trio.Nursery, *peers: str, wait: bool = True, **settings) -> Running:
    """A node on 127.0.0.1, port 0; by default, once it founded or was admitted
    and caught up (``wait=False``: as soon as it serves)."""
    settings.setdefault("join_token", JOIN_TOKEN)
    settings.setdefault("pull_interval_s", 0.2)
    settings.setdefault("request_timeout_s", 1.0)
    settings.setdefault("compact_interval_s", None)  # tests count held events
    config = NodeConfig(host="127.0.0.1", port=0, peers=list(peers), **settings)
    shutdown, done = trio.Event(), trio.Event()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        try:
            await serve_node(config, shutdown=shutdown, task_status=task_status)
        finally:
            done.set()

    node = await nursery.start(run)
    if wait:
        await eventually(lambda: node.joined and node.caught_up)  # founded or admitted
    return Running(node, shutdown, done)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_headers(data_dir: str) -> dict[str, str]:
    """The Authorization header with the admin token kept in ``data_dir``."""
    return {"Authorization": f"Bearer {admintoken.read(data_dir)}"}


async def eventually(check, timeout: float = 15.0, interval: float = 0.05):
    """Poll ``check`` (sync or async) until it returns a truthy value, or fail."""
    deadline = trio.current_time() + timeout
    last = None
    while trio.current_time() < deadline:
        last = check()
        if hasattr(last, "__await__"):
            last = await last
        if last:
            return last
        await trio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value {last!r})")


def views(node: Node):
    replica = node.replica
    return replica.digest(), replica.book(), replica.fills()


def trading_events(node: Node) -> int:
    """Orders and cancels held (membership events, such as joins, left out)."""
    return sum(1 for e in node.replica.events() if e.kind != "member")


def converged(*running: Running, events: int | None = None) -> bool:
    """Same digest everywhere (and, if given, exactly ``events`` orders and cancels)."""
    digests = {r.node.replica.digest() for r in running}
    counts = {trading_events(r.node) for r in running}
    return len(digests) == 1 and (events is None or counts == {events})


# node URL -> its data directory, for the default account's token
DATA_DIRS: dict[str, str] = {}


class LocalTokens(httpx.Auth):
    """Adds the default account's token of the node a request goes to."""

    def auth_flow(self, request: httpx.Request):
        if "authorization" not in request.headers:
            directory = DATA_DIRS.get(f"{request.url.scheme}://{request.url.host}:"
                                      f"{request.url.port}")
            if directory is not None:
                # (its directory may be gone: an ephemeral node that stopped)
                with contextlib.suppress(FileNotFoundError):
                    request.headers["Authorization"] = f"Bearer {accounts.read(directory)}"
        yield request


# A node closes a connection idle for asgi.HEADER_TIMEOUT_S (timed from its answer; a
# client times idleness from reading it, later). httpx's default keep-alive expiry is
# that same 5 s: a request on a connection idle about that long raced the close
# ("server disconnected without sending a response", or a reset, on a busy machine).
KEEPALIVE_S = asgi.HEADER_TIMEOUT_S / 5
# "the node still answers while it is attacked": generous for a loaded 2-core CI
# machine, far below any attack's own length (tens of seconds)
LIVENESS_S = 3.0


def client(local_token: bool = True, **settings) -> httpx.AsyncClient:
    settings.setdefault("timeout", 10.0)
    settings.setdefault("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                               keepalive_expiry=KEEPALIVE_S))
    return httpx.AsyncClient(auth=LocalTokens() if local_token else None, **settings)
