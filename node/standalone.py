"""``crdtbook registry``: a standalone grape-compatible registry (no replica)."""

from __future__ import annotations

import signal
import time

import trio
from hypercorn.trio import serve

from . import logs, registry
from .app import _lifespan, _read_body
from .server import hypercorn_config


class RegistryApp:
    def __init__(self, table: registry.Registry) -> None:
        self.table = table

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await _read_body(receive, 64 * 1024)
        except Exception:
            body = b""
        client = scope.get("client")
        answer = registry.handle(self.table, scope["path"], body,
                                 client[0] if client else "127.0.0.1", time.monotonic())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


async def serve_registry(host: str, port: int, shutdown: trio.Event,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    app = RegistryApp(registry.Registry())
    await serve(app, hypercorn_config(host, port), shutdown_trigger=shutdown.wait,
                task_status=task_status)


async def main_registry(host: str, port: int, announce) -> int:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            binds = await nursery.start(serve_registry, host, port, shutdown)
            announce(binds[0])
            logs.info("registry.started", url=binds[0])
            async for _ in signals:
                shutdown.set()
                break
    return 0
