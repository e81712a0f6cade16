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
