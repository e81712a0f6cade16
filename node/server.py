"""Running a node: bind, serve, gossip, and shut down cleanly.

``serve_node`` is the whole lifetime of a node inside a trio nursery; tests
start it with ``nursery.start`` (it reports the bound URL) and stop it by
cancelling. ``main_node`` is what ``crdtbook node`` runs: the same plus
SIGINT/SIGTERM handling, so a node started in the background by a script
exits with status 0 when told to stop.
"""

from __future__ import annotations

import trio

from . import httpserve, logs
from .api.app import App
from .api.peerrpc import PeerRPCApp
from .api.streams import Hub
from .asgi import HEADER_TIMEOUT_S, hypercorn_config
from .cluster import gossip
from .cluster.peerhttp import PeerClient
from .service import Node, NodeConfig
from .signals import serve_until_signalled


async def serve_node(
    config: NodeConfig,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
    node: Node | None = None,
) -> None:
    node = node or Node(config)
    if shutdown is None:
        shutdown = trio.Event()
    try:
        await _serve(node, config, shutdown, task_status)
    finally:
        node.close()


async def _serve(node: Node, config: NodeConfig, shutdown: trio.Event, task_status) -> None:
    # A peer closes a connection idle for HEADER_TIMEOUT_S (its keep-alive timeout, timed
    # from its answer; ours from reading it, later): reused near that age, a request raced
    # the close ("server disconnected", or a reset). Ours are dropped well before.
    async with (
        PeerClient(max_connections=256, max_idle=64, idle_expiry=HEADER_TIMEOUT_S / 2,
                   user_agent="crdtbook") as client,
        trio.open_nursery() as nursery,
    ):
        journal_scope = trio.CancelScope()

        async def run_journal() -> None:
            with journal_scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(node.journal.run)
                    inner.start_soon(_lease_loop, node)

        nursery.start_soon(run_journal)
        await _first_lease(node)
        node.client = client
        node.streams = Hub(node)
        streams_scope = trio.CancelScope()

        async def run_streams() -> None:
            with streams_scope:
                await node.streams.run()

        nursery.start_soon(run_streams)
        file_limit = httpserve.raise_file_limit()
        cap = config.max_connections or httpserve.connection_cap(file_limit)
        slots = trio.Semaphore(cap)  # shared by both servers: together under the file limit
        binds = await nursery.start(
            _serve_http, App(node), config.host, config.port, shutdown, slots)
        if config.rpc_host is not None:
            rpc_binds = await nursery.start(
                _serve_http, PeerRPCApp(node), config.rpc_host, config.rpc_port, shutdown,
                slots)
            node.rpc_port = int(rpc_binds[0].rsplit(":", 1)[1])
        bound = binds[0].rsplit(":", 1)
        host = config.host if config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        node.url = f"http://{host}:{bound[1]}"
        for url in config.peers:
            node.add_peer(url, sticky=True)
        logs.info("node.started", replica=node.id, url=node.url, book=config.book,
                  registry=config.registry_url or "embedded", max_connections=cap,
                  file_limit=file_limit)
        gossip_scope = trio.CancelScope()

        async def run_gossip() -> None:
            with gossip_scope:
                await gossip.run(node, client)

        nursery.start_soon(run_gossip)
        task_status.started(node)
        async with trio.open_nursery() as waiting:  # a signal, or `crdtbook leave` done
            async def stop_when(event) -> None:
                await event.wait()
                waiting.cancel_scope.cancel()
            waiting.start_soon(stop_when, shutdown)
            waiting.start_soon(stop_when, node.stop_requested)
        shutdown.set()
        node.stopping = True
        node.stop_begun.set()  # peers' streams end now, not after hypercorn's grace
        logs.info("node.stopping", replica=node.id)
        if node.joined and config.leave_on_stop:
            await gossip.say_goodbye(node, client)
        gossip_scope.cancel()
        streams_scope.cancel()
        with trio.move_on_after(5.0):
            if not node.journal.failed and not node.store.ephemeral:
                if config.compact_interval_s:
                    await gossip.compact_once(node)
                node.snapshot_now()  # so the next start replays (almost) nothing
            await node.journal.flush()  # whatever is still appended (history, lease)
        journal_scope.cancel()
        # hypercorn returns by itself once open requests drain (graceful_timeout)
        nursery.cancel_scope.deadline = trio.current_time() + 5.0


async def _serve_http(app, host: str, port: int, shutdown: trio.Event, slots: trio.Semaphore,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    """hypercorn serving ``app`` until ``shutdown``.

    While it stops, hypercorn can trip over a connection cut in the middle of
    a request (this node's own gossip, cancelled a moment earlier, calls its
    own registry): that is no reason to exit with an error, so once the stop
    has begun such an error is logged, not raised.
    """
    try:
        await httpserve.serve(app, hypercorn_config(host, port), slots,
                              shutdown_trigger=shutdown.wait, task_status=task_status)
    except Exception as exc:
        if not shutdown.is_set():
            raise
        logs.warning("http.stop_error", error=repr(exc)[:300])


LEASE_RENEW_S = 0.5


async def _first_lease(node: Node) -> None:
    """A lease before the first claim: claims never pass a durable lease."""
    lease = node.renew_lease()
    await node.journal.sync()
    node.lease_renewed(lease)


async def _lease_loop(node: Node) -> None:
    while True:
        await trio.sleep(LEASE_RENEW_S)
        lease = node.renew_lease()
        try:
            await node.journal.sync()
        except Exception:  # a failed store: claims stop advancing, nothing more to do
            return
        node.lease_renewed(lease)


async def main_node(config: NodeConfig, announce_url, node: Node | None = None) -> int:
    """``crdtbook node``: serve until SIGINT or SIGTERM (or `crdtbook leave`), then exit 0.

    The signal receiver spans the node's whole life, its stop included: a
    second Ctrl-C while the node stops (an impatient person, a terminal and a
    supervisor both signalling) is logged, never raised in the middle of the
    stop. Call ``signals.ignore_stop_signals()`` first (see node/signals.py).
    """
    async def serve(shutdown: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await serve_node(config, shutdown=shutdown, task_status=task_status, node=node)

    served = await serve_until_signalled(serve, announce_url)  # or `crdtbook leave`
    logs.info("node.stopped", replica=served.id)
    return 0
