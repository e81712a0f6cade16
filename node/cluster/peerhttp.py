"""The HTTP client of peer calls: h11 over trio's TCP streams, connections kept alive.

Theory of operation
-------------------
A node calls its peers all the time (a push per commit and peer, a pull per
interval) and nothing else: small requests to a few addresses. A general
client (httpx) builds URL, header and request objects, runs its auth,
redirect and cookie steps and wraps httpcore's pool for every call: about
1 ms of CPU per push on the development machine, as much as placing 5-10
orders. This client keeps only what a peer call needs: a request is one h11
``Request`` event and its body, written to the socket in one send (so the
receiver reads the head and the body together, in one pass of its loop), and
the answer is h11's events read up to a byte limit. h11 does all of HTTP's
framing and parsing, both ways; nothing here reads HTTP bytes.

Connections: an answered exchange whose connection h11 says may carry another
(keep-alive, nothing left unread) goes back to a list of idle connections of
its address; the next call to that address takes the newest, unless it has
been idle past ``idle_expiry`` (a peer closes a connection idle for its
keep-alive timeout: reusing one near that age races the close) or the socket
is readable (the peer closed it, or sent what nobody asked for). Every
``idle_expiry`` or so, a call also closes such connections of every other
address: a peer never called again (forgotten, gone) must not keep one open
for ever. Anything else (an error, a timeout, a cancellation, a connection
the peer asked to close) closes the connection.

Rules this module keeps
-----------------------
* Every bound of the old client holds: at most ``max_connections`` open at
  once (a call waits for one, within its caller's time bound), at most
  ``max_idle`` idle ones kept (none idle much past ``idle_expiry`` while
  calls go on), an answer's head bounded by h11
  (``MAX_HEAD``), its body by the caller's ``limit``, read as it arrives.
* Every wait is a trio checkpoint inside the caller's timeout scope; a
  cancelled or failed exchange never leaves a connection half-read for the
  next call. A peer that answers before taking the whole request (a 413, a
  503) and closes: its answer is read and returned, the connection closed.
* Only ``http://host:port`` URLs (what ``service.normalize_url`` accepts);
  anything else is a ``ValueError`` before a connection is opened.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import h11
import trio

# bytes of an answer's unfinished head h11 holds: a head that ends within one more
# read (RECEIVE) passes, so at most MAX_HEAD + RECEIVE in all
MAX_HEAD = 64 * 1024
RECEIVE = 64 * 1024  # bytes per socket read


class Answer:
    """A peer's answer: status, headers (lower-case names; repeated ones joined by
    ", "), body, and the bytes of the exchange on the wire each way."""

    __slots__ = ("status_code", "headers", "content", "sent", "received")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes,
                 sent: int, received: int) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.sent = sent
        self.received = received


class AnswerTooLarge(Exception):
    pass


class _AnsweredEarly(Exception):
    """An answer that came before the request was all sent (its connection is spent)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> tuple[tuple[str, int], bytes, bytes]:
    """((host to connect to, port), Host header, request target) of an http URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"not an http://HOST:PORT URL: {url[:100]!r}")
    port = parts.port or 80
    host = parts.hostname
    header = f"[{host}]" if ":" in host else host
    if port != 80:
        header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (host, port), header.encode("ascii"), target.encode("ascii")


class _Connection:
    __slots__ = ("stream", "h11", "idle_since")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.idle_since = 0.0

    def close(self) -> None:
        self.stream.socket.close()  # synchronous: safe in a cancelled scope


class PeerClient:
    """Keep-alive HTTP/1.1 calls to peers (and registries); see the module's docstring."""

    def __init__(self, max_connections: int = 256, max_idle: int = 64,
                 idle_expiry: float = 2.5, user_agent: str = "crdtbook") -> None:
        self._slots = trio.CapacityLimiter(max_connections)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._tokens: dict[_Connection, object] = {}  # each open connection's slot
        self.max_idle = max_idle
        self.idle_expiry = idle_expiry
        self._sweep_at = 0.0  # when a call next closes stale idle connections everywhere
        self._agent = user_agent.encode("ascii")
        self.closed = False

    async def request(self, method: str, url: str, body: bytes, headers: dict[str, str],
                      limit: int) -> Answer:
        """One exchange; raises on anything but a complete answer of at most ``limit``
        bytes of body (ValueError for a bad URL or header, AnswerTooLarge, h11's
        protocol errors, OSError and trio's stream errors)."""
        address, host, target = _target(url)
        head = [(b"host", host), (b"user-agent", self._agent)]
        head += [(k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()]
        if body or method not in ("GET", "HEAD"):
            head.append((b"content-length", b"%d" % len(body)))
        connection = self._reusable(address)
        if connection is None:
            connection = await self._open(address)
        try:
            answer = await self._exchange(connection, method.encode("ascii"), target, head,
                                          body, limit)
        except _AnsweredEarly as early:
            self._drop(connection)  # the request was not all sent: never reused
            return early.answer
        except BaseException:
            self._drop(connection)
            raise
        self._release(address, connection)
        return answer

    async def _exchange(self, connection: _Connection, method: bytes, target: bytes,
                        head: list, body: bytes, limit: int) -> Answer:
        state = connection.h11
        data = state.send(h11.Request(method=method, target=target, headers=head))
        if body:
            data += state.send(h11.Data(data=body))
        data += state.send(h11.EndOfMessage())
        try:
            await connection.stream.send_all(data)
        except trio.BrokenResourceError as broken:
            # The peer stopped reading: it may have answered first (a 413 or a 503 before
            # the whole body came) and closed. That answer says why (httpx read it too).
            try:
                answer = await self._answer(connection, len(data), limit)
            except Exception:
                raise broken from None
            raise _AnsweredEarly(answer) from None
        return await self._answer(connection, len(data), limit)

    async def _answer(self, connection: _Connection, sent: int, limit: int) -> Answer:
        state = connection.h11
        received = 0
        # One growing buffer, not a list of chunks: a peer answering in 1-byte chunks
        # would cost a bytes object per byte (about 50 MB for 8 MB of answer).
        status, named, body = 0, {}, bytearray()
        while True:
            event = state.next_event()
            if event is h11.NEED_DATA:
                data = await connection.stream.receive_some(RECEIVE)
                received += len(data)
                state.receive_data(data)  # b"": the peer closed; h11 says what that means
                continue
            kind = type(event)
            if kind is h11.Data:
                body += event.data
                if len(body) > limit:
                    raise AnswerTooLarge(f"answer larger than {limit} bytes")
            elif kind is h11.Response:
                status = event.status_code
                for name, value in event.headers:
                    # joined at the end: joining as they come is quadratic in a
                    # head of thousands of repeats of one name
                    named.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
            elif kind is h11.EndOfMessage:
                headers = {key: ", ".join(values) for key, values in named.items()}
                return Answer(status, headers, bytes(body), sent, received)
            elif kind is h11.ConnectionClosed:
                raise h11.RemoteProtocolError("the peer closed the connection")
            # an InformationalResponse (100 Continue): the real answer follows

    def _reusable(self, address: tuple[str, int]) -> _Connection | None:
        now = trio.current_time()
        if now >= self._sweep_at:
            self._sweep(now)
        idle = self._idle.get(address)
        found = None
        while idle and found is None:
            connection = idle.pop()
            self._idle_count -= 1
            if self._fresh(connection, now):
                found = connection
            else:
                self._drop(connection)  # old, closed by the peer, or sent something unasked
        if idle is not None and not idle:
            del self._idle[address]
        return found

    def _fresh(self, connection: _Connection, now: float) -> bool:
        return now - connection.idle_since < self.idle_expiry \
            and not connection.stream.socket.is_readable()

    def _sweep(self, now: float) -> None:
        """Close the idle connections of every address that may not be reused."""
        self._sweep_at = now + self.idle_expiry
        for address in list(self._idle):
            idle = self._idle[address]
            kept = [connection for connection in idle if self._fresh(connection, now)]
            if len(kept) == len(idle):
                continue
            for connection in idle:
                if connection not in kept:
                    self._drop(connection)
            self._idle_count -= len(idle) - len(kept)
            if kept:
                self._idle[address] = kept
            else:
                del self._idle[address]

    async def _open(self, address: tuple[str, int]) -> _Connection:
        if self.closed:
            raise RuntimeError("the peer client is closed")
        if self._idle_count and not self._slots.available_tokens:
            self._evict()  # an idle connection elsewhere gives its slot up
        token = object()
        await self._slots.acquire_on_behalf_of(token)
        try:
            stream = await trio.open_tcp_stream(*address)
        except BaseException:
            self._slots.release_on_behalf_of(token)
            raise
        connection = _Connection(stream)
        self._tokens[connection] = token
        return connection

    def _release(self, address: tuple[str, int], connection: _Connection) -> None:
        state = connection.h11
        if self.closed or state.our_state is not h11.DONE or state.their_state is not h11.DONE \
                or state.trailing_data[0] or self._slots.statistics().tasks_waiting:
            # asked to close, HTTP/1.0, bytes past the answer, or its slot is wanted
            self._drop(connection)
            return
        state.start_next_cycle()
        connection.idle_since = trio.current_time()
        self._idle.setdefault(address, []).append(connection)
        self._idle_count += 1
        while self._idle_count > self.max_idle:
            self._evict()

    def _evict(self) -> None:
        """Close one idle connection: the oldest of the address with the most."""
        key, longest = max(self._idle.items(), key=lambda item: len(item[1]))
        self._idle_count -= 1
        self._drop(longest.pop(0))
        if not longest:
            del self._idle[key]

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        token = self._tokens.pop(connection, None)
        if token is not None:
            self._slots.release_on_behalf_of(token)

    async def aclose(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                self._drop(connection)
        self._idle.clear()
        self._idle_count = 0
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
