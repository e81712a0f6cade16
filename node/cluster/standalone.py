"""``crdtbook registry``: a standalone grape-compatible registry (no replica)."""

from __future__ import annotations

import time

import trio

from .. import httpserve, logs
from ..asgi import Request, Response, _read_body, hypercorn_config, serve_asgi
from ..signals import serve_until_signalled
from . import registry


class RegistryApp:
    def __init__(self, table: registry.Registry) -> None:
        self.table = table

    async def __call__(self, scope, receive, send) -> None:
        await serve_asgi(scope, receive, send, self.respond)

    async def respond(self, scope, receive) -> Response:
        try:
            body = await _read_body(receive, 64 * 1024)
        except Exception:
            body = b""
        answer = registry.handle(self.table, scope["path"], body,
                                 Request(scope, b"").client_host, time.monotonic())
        return Response(200, answer)


async def serve_registry(host: str, port: int, shutdown: trio.Event,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    app = RegistryApp(registry.Registry())
    slots = trio.Semaphore(httpserve.connection_cap(httpserve.raise_file_limit()))
    await httpserve.serve(app, hypercorn_config(host, port), slots,
                          shutdown_trigger=shutdown.wait, task_status=task_status)


async def main_registry(host: str, port: int, announce) -> int:
    """``crdtbook registry``: serve until SIGINT or SIGTERM (see server.main_node)."""
    def started(binds) -> None:
        announce(binds[0])
        logs.info("registry.started", url=binds[0])

    async def serve(shutdown: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await serve_registry(host, port, shutdown, task_status=task_status)

    await serve_until_signalled(serve, started)
    return 0
