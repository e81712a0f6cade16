"""A fake peer for attack tests: an HTTP server that says whatever a test wants.

It answers at the level of raw HTTP/1.1 on purpose: a malicious peer is
not bound to send well-formed answers, and the node must cope with any.
"""

from __future__ import annotations

import trio


class Fake:
    """Routes ``path -> handler(headers, body) -> (status, payload, extra headers)``;
    records every request it got."""

    def __init__(self, routes: dict) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict, bytes]] = []
        self.url = ""
        self.port = 0

    async def serve(self, nursery) -> str:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, self._handle, listeners)
        self.port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def _handle(self, stream) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            while len(body) < int(headers.get("content-length", 0)):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                body += chunk
            self.requests.append((path, headers, body))
            handler = self.routes.get(path)
            status, payload, extra = (handler(headers, body) if handler
                                      else (404, b"not here", {}))
            more = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            await stream.send_all(
                (f"HTTP/1.1 {status} X\r\ncontent-type: application/cbor\r\n"
                 f"content-length: {len(payload)}\r\nconnection: close\r\n{more}\r\n"
                 ).encode() + payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError, IndexError):
            pass
        finally:
            await stream.aclose()
