"""Stopping a long-running command (a node, a registry) on SIGINT or SIGTERM.

Theory of operation
-------------------
trio turns SIGINT into KeyboardInterrupt wherever the code happens to be,
which can cut a clean stop in half, and a signal receiver that closes
redelivers the signals still queued to the handler it found. So a
long-running command calls ``ignore_stop_signals()`` once it is about to
serve, then holds ``trio.open_signal_receiver(SIGINT, SIGTERM)`` for its
whole life, its stop included, with ``stop_on_signals`` reading it: the first
signal starts the stop, later ones are logged. A signal that comes in the
last instant is redelivered to SIG_IGN and dropped: the process is stopping
anyway.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import trio

from . import logs


async def stop_on_signals(signals, shutdown: trio.Event) -> None:
    """Set ``shutdown`` at the first SIGINT or SIGTERM; log any later one."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if shutdown.is_set():
            logs.info("signal.again", signal=name, detail="already stopping")
        else:
            logs.info("node.signal", signal=name)
            shutdown.set()


def ignore_stop_signals() -> None:
    """SIGINT and SIGTERM ignored until a trio signal receiver takes them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


async def serve_until_signalled(serve: Callable[..., Awaitable[None]],
                                started: Callable[[object], None]) -> object:
    """Run ``serve(shutdown, task_status=...)`` until it returns: the first SIGINT or
    SIGTERM sets ``shutdown`` (later ones are logged), and serve may also end by
    itself. ``started`` gets what serve passed to ``task_status.started``, which is
    also returned. The signal receiver spans the whole run, the stop included."""
    shutdown, stopped = trio.Event(), trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, signals, shutdown)

            async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
                try:
                    await serve(shutdown, task_status=task_status)
                finally:
                    stopped.set()

            value = await nursery.start(run)
            started(value)
            await stopped.wait()  # a signal, or serve ending by itself
            nursery.cancel_scope.cancel()
    return value
