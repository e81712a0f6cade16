"""The web page: static files shipped inside this package, served as they are.

Theory of operation
-------------------
``GET /`` answers ``index.html``; ``GET /static/<name>`` answers the other
files of this package's directory (``app.js``, ``style.css``,
``favicon.svg``). The files are read once, when the node's app is built, so
a request never touches the disk and no path a client sends ever reaches the
file system: a name is looked up in the table of what was loaded, nothing
more (``/static/../x`` is simply not in it).

The page is plain HTML, CSS and JavaScript with no build step and nothing
from elsewhere; it talks to the node over the WebSocket protocol of
docs/streams.md (``/ws``), the same host and port it was loaded from.

Rules this module keeps
-----------------------
* Every answer carries a strict Content-Security-Policy: scripts, styles,
  images and fonts from this origin only (no inline script or style, no
  ``eval``), connections to this origin and its ``ws:``/``wss:`` equivalent,
  no frames, no plugins, no form posts. Plus ``nosniff``, ``no-referrer``
  and a frame ban for older browsers.
* Caching is honest: every file has a strong ETag (a hash of its bytes) and
  ``Cache-Control: no-cache``, so a browser keeps a copy but asks each time
  whether it is current (a 304 costs a few bytes); a node upgraded in place
  is never shown with yesterday's script.
* The ``Host`` header is the client's to send: it enters the policy only
  when it is a plain host[:port], else the policy falls back to ``'self'``.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from ..asgi import BadRequest, Request, Response

STATIC_PREFIX = "/static/"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


class File:
    def __init__(self, name: str, body: bytes) -> None:
        self.body = body
        self.content_type = CONTENT_TYPES[name[name.rindex("."):]]
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'


def load() -> dict[str, File]:
    """Every servable file of this package, by name."""
    files = {}
    for entry in resources.files(__package__).iterdir():
        name = entry.name
        if entry.is_file() and "." in name and name[name.rindex("."):] in CONTENT_TYPES:
            files[name] = File(name, entry.read_bytes())
    if INDEX not in files:
        raise RuntimeError(f"the web page's {INDEX} is missing from the installed package")
    return files


def policy(host: str | None) -> bytes:
    """The Content-Security-Policy: this origin only, and its WebSocket twin."""
    connect = "'self'"
    if host is not None and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"  # older engines do not count ws: as 'self'
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"font-src 'self'; connect-src {connect}; object-src 'none'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'").encode()


class Pages:
    """The handlers of ``GET /`` and ``GET /static/<name>``."""

    def __init__(self) -> None:
        self.files = load()

    def index(self, request: Request) -> Response:
        return self._answer(request, self.files[INDEX])

    def static(self, request: Request) -> Response:
        name = request.path[len(STATIC_PREFIX):]
        found = self.files.get(name)
        if found is None or name == INDEX:
            raise BadRequest(404, "not_found", f"no file {request.path}")
        return self._answer(request, found)

    def _answer(self, request: Request, file: File) -> Response:
        headers = [
            (b"content-security-policy", policy(request.headers.get("host"))),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-cache"),
            (b"etag", file.etag),
        ]
        match = request.headers.get("if-none-match", "")
        if file.etag.decode() in (tag.strip() for tag in match.split(",")):
            return Response(304, b"", file.content_type, headers)
        return Response(200, file.body, file.content_type, headers)
