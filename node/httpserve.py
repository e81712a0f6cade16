"""Serving the node's ASGI apps: hypercorn's trio connection handler, a bounded
number of connections, and the process's file limit raised.

Theory of operation
-------------------
``hypercorn.trio.serve`` accepts every connection the kernel hands it: a
flood of slow connections then takes every file descriptor the process may
open (EMFILE), and the node can open nothing else (its store, calls to its
peers) while new clients are refused at random. ``serve`` here runs the same
per-connection handler (hypercorn's ``TCPServer``), but its accept loop
takes a slot of a ``trio.Semaphore`` before each accept and the connection
gives it back when it closes. At the cap, new connections wait in the
kernel's listen backlog, costing this process no descriptor, until one
closes. Slots do come back: every connection is bounded in time (asgi.py:
headers within ``HEADER_TIMEOUT_S``, a body within its deadline, idle
keep-alive connections closed).

Every connection's stream is wrapped (``Guarded``) before hypercorn gets it.
hypercorn writes an HTTP/1 answer's head and body with two sends: asgi.py
asks the guard (``hold_next``) to keep the head until the body comes, so the
client gets one segment and wakes once; the WebSocket sender hands hypercorn
the frames it has queued in one message (asgi.FramesAtOnce: one write for
all, up to ``SEND_CHUNK``).
hypercorn writes to a socket inside a shielded scope, so a client that never
reads would hold its connection, and the task writing to it, for ever (a
graceful stop included): a ``Guarded`` send that makes no progress for
``SEND_STALL_S`` resets the connection instead (an abortive close: the
unsent bytes are dropped, not kept by the kernel for minutes behind a
FIN). A WebSocket connection also asks its guard (found through
``current()``, a context variable the connection's tasks inherit) to close
it when nothing at all arrives for a while (``idle_after``): hypercorn pings
it, and a live client's pongs are bytes that arrive.

hypercorn's per-connection handler runs as ``Connection``, which keeps its
behaviour at a lower cost per request: one keep-alive timer task per
connection whose deadline moves (``KeepAlive``), instead of a task started
and cancelled around every request, and no send lock for an HTTP/1 answer's
writes that need no I/O (``Guarded.absorb``).

``raise_file_limit`` lifts the soft ``RLIMIT_NOFILE`` to the hard one (where
the system allows), and ``connection_cap`` picks a cap below it that leaves
``RESERVED_FDS`` for everything else. One semaphore is shared by every
server of a node (HTTP and PeerRPC), so together they stay under the limit.

Rules this module keeps
-----------------------
* Never more than the cap of connections open at once, across the node's servers.
* A send stalled for ``SEND_STALL_S`` ends its connection (a reset), and its tasks.
* A connection that broke (a reset, or hypercorn closed it) ends its tasks
  at once; one whose peer closed its sending side, within ``GONE_GRACE_S``.
* A connection idle for hypercorn's ``keep_alive_timeout`` is closed (so is an
  idle one when the server stops); a busy one never is by that timer, nor one
  whose next request already waits unread in its socket when the deadline comes
  (the event loop stalled past it): that one gets one more timeout, once.
* Whatever goes wrong in one connection's handling ends that connection
  (logged), never the server: hypercorn lets some protocol errors of a
  connection a client broke escape (an invalid frame right after a
  WebSocket handshake; its first ping racing the close that follows).
* An accept that fails for lack of descriptors or memory is logged and
  retried shortly, never fatal.
* On shutdown: stop accepting, let open connections finish for hypercorn's
  ``graceful_timeout``, then cancel them (and close their sockets).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import math
import socket
import struct

import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.trio import tcp_server
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from . import http1, logs

try:
    import resource
except ImportError:  # not on this platform: nothing to raise
    resource = None  # type: ignore[assignment]

RESERVED_FDS = 256  # descriptors kept for the store, the peer client, logs
MAX_CONNECTIONS = 4_096  # the cap, even where the file limit allows more
MIN_CONNECTIONS = 16
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
SEND_STALL_S = 20.0  # a send to a client that accepts no byte for this long ends the connection
SEND_CHUNK = 64 * 1024  # the stall clock restarts after each chunk the kernel took
GONE_GRACE_S = 5.0  # a connection whose peer closed its side ends this soon after
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection


class Guarded:
    """A connection's stream for hypercorn: sends bounded in stall time, reads in
    idle time once ``idle_after`` was called; a peer that is gone ends the
    connection's tasks (``scope``) soon; everything else is the stream's."""

    def __init__(self, stream: trio.SocketStream, scope: trio.CancelScope | None = None) -> None:
        self._stream = stream
        self._scope = scope  # the connection's: hypercorn's tasks for it run inside
        self._idle: float | None = None
        self._reading: trio.CancelScope | None = None  # the read under way, if any
        self._hold = False  # the next write waits for the one after it
        self._answer = False  # an HTTP/1 answer is being written (hold_answer)
        self._held = b""

    def _gone(self, grace: float) -> None:
        """The peer reset (grace 0) or closed its side: end the connection's tasks by
        then. hypercorn's WebSocket pinger otherwise sleeps on, holding the socket
        and its slot, until its next ping (``WS_PING_EVERY_S`` later)."""
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + grace)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def idle_after(self, seconds: float) -> None:
        self._idle = seconds
        if self._reading is not None:  # the read under way (hypercorn's) counts already
            self._reading.deadline = trio.current_time() + seconds

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = b""
        with trio.CancelScope() as scope:
            self._reading = scope
            if self._idle is not None:
                scope.deadline = trio.current_time() + self._idle
            try:
                data = await self._stream.receive_some(max_bytes)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._gone(0.0)  # a reset, or hypercorn closed it: nobody reads an answer
                raise
        self._reading = None
        if scope.cancelled_caught:  # nothing arrived in time
            raise trio.TooSlowError  # hypercorn ends the connection on it
        if not data:  # the peer's end of sending: its answers still get GONE_GRACE_S
            self._gone(GONE_GRACE_S)
        return data

    def absorb(self, data) -> bool:
        """Take a write of an HTTP/1 answer (``hold_answer``) that needs no I/O now:
        its head, held for its body, and its empty end. False: ``send_all`` it."""
        if not self._answer:
            return False
        if self._hold:
            self._hold = False
            self._held += data
            return True
        if not data and not self._held:
            self._answer = False  # its end: the answer is out
            return True
        return False

    def hold_answer(self) -> None:
        """``hold_next`` for an HTTP/1 answer's head, which its task alone writes on
        this connection (hypercorn writes nothing else meanwhile): its writes that
        need no I/O may skip the connection's send lock (``Connection``)."""
        self._answer = True
        self._hold = True

    def hold_next(self) -> None:
        """Keep the next write until the one after it (an answer's head until its body;
        a WebSocket frame while more are queued): one segment and one wakeup of
        the client instead of several. The caller makes sure a write follows (or
        calls ``flush``, or ``unhold`` when its write did not happen)."""
        self._hold = True

    def unhold(self) -> None:
        """The write ``hold_next`` was for did not happen: hold nothing more (what is
        held goes with the next write)."""
        self._hold = False
        self._answer = False

    @property
    def held(self) -> int:
        return len(self._held)

    async def flush(self) -> None:
        """Send what ``hold_next`` kept, if a write it waited for never came."""
        self._hold = self._answer = False
        if self._held:
            await self.send_all(b"")

    async def send_all(self, data) -> None:
        if self._hold:
            self._hold = False
            self._held += data
            return
        if not data and not self._held:
            # hypercorn writes an answer's end (h11's b"" for a sized body) after it took
            # its send lock, a checkpoint already: nothing to send, nothing to wait for
            return
        if self._held:
            data, self._held = self._held + bytes(data), b""
        view = memoryview(data)
        for start in range(0, max(1, len(view)), SEND_CHUNK):
            with trio.move_on_after(SEND_STALL_S) as stalled:
                try:
                    await self._stream.send_all(view[start:start + SEND_CHUNK])
                except trio.BusyResourceError:  # hypercorn closing it (its send_eof)
                    raise trio.BrokenResourceError("the connection is closing") from None
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._gone(0.0)  # the peer is gone (a reset): so is the connection
                    raise
            if stalled.cancelled_caught:
                # Its tasks end now, not only its socket: hypercorn, told the write
                # failed, hands the app a disconnect through the app's queue, and a
                # WebSocket app that stopped taking frames (its answers unread)
                # never would: that task, and the connection's slot, waited for ever.
                self._gone(0.0)
                self._abort()
                await self._stream.aclose()
                raise trio.BrokenResourceError(f"the client read nothing for {SEND_STALL_S}s")

    def _abort(self) -> None:
        """Make the close that follows a reset (RST), its unsent bytes dropped. A plain
        close queues its FIN behind them: the kernel then keeps the socket, and
        what it holds, for minutes, offering them to a client whose window stays
        shut; a client that still sends is not told either while the socket's
        receive queue is empty at the close (its data only meets a zero window)."""
        with contextlib.suppress(OSError, AttributeError):  # gone, or not a socket (a test's)
            self._stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


class Connection(TCPServer):
    """hypercorn's handler of one connection, less two costs it pays per request.

    * Its keep-alive timer (``TrioSingleTask``) starts a task each time the
      connection goes idle and cancels it when a request comes, each behind a
      lock: two task lives and several trips through the scheduler per request.
      ``KeepAlive`` keeps one task per connection and moves its deadline.
    * Every write takes the connection's send lock, a checkpoint (a trip through
      the scheduler) even when nobody holds it, and a shielded scope. A write the
      guard takes without any I/O (an answer's head it holds for the body,
      hypercorn's empty end of a sized answer) needs neither: ``Guarded.absorb``,
      while no other write holds the lock (a "100 Continue" of the read task).
      Only an HTTP/1 answer's writes (``Guarded.hold_answer``): taking the lock
      without its checkpoint for every uncontended write was tried, and a
      WebSocket handshake refused while an invalid frame arrived then left its
      connection open, its close never sent; skipping the lock for WebSocket
      frames held for the next made a test of clients that never read fail."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.idle_task = KeepAlive(self)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            # hypercorn's objects of one connection refer to each other (its protocol
            # holds this handler's bound send, the keep-alive timer this handler): a
            # cycle of some 28 objects per connection, left to the collector, and
            # once a compaction froze it (gcpolicy.py) to the next thaw. Its tasks
            # are all done here: without this handler's references it is no cycle.
            vars(self).clear()

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            self.idle_task.end()  # nothing more will come: the connection's tasks may end

    async def protocol_send(self, event) -> None:
        if type(event) is not RawData:
            await super().protocol_send(event)
            return
        # Only while no other write is under way: hypercorn's read task writes a
        # "100 Continue" under the lock while the app may answer already, and a head
        # taken meanwhile went out before the 100 (its body after it). Through the
        # lock, the guard keeps them in the order they were written.
        if not self.send_lock.locked() and self.stream.absorb(event.data):
            return
        await super().protocol_send(event)


class KeepAlive:
    """The keep-alive timer of one connection, in hypercorn's ``TrioSingleTask``
    place: ``restart`` (the connection went idle) moves the deadline of one
    watching task to ``keep_alive_timeout`` from now, ``stop`` (a request began)
    to never. Past the deadline while idle, or when the server stops while the
    connection is idle, the watcher closes it as hypercorn's ``_idle_timeout``
    does; a connection busy when the server stops is closed by hypercorn after
    its answer. Once the connection reads no more (``end``), the watcher ends:
    hypercorn's connection waits for its tasks."""

    def __init__(self, server: TCPServer) -> None:
        self._server = server
        self._idle = True
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None
        self._watching = False
        self._ended = False
        self._graced = False  # this idle spell had its one more timeout

    def end(self) -> None:
        self._ended = True
        self._move(-math.inf)

    async def restart(self, task_group, action) -> None:
        if self._ended:
            return
        self._idle = True
        self._move(trio.current_time() + self._server.config.keep_alive_timeout)
        if not self._watching:
            self._watching = True
            task_group.spawn(self._watch)

    async def stop(self) -> None:
        if self._ended:
            return
        self._idle = False
        self._graced = False
        self._move(math.inf)

    def _move(self, deadline: float) -> None:
        self._deadline = deadline
        if self._scope is not None:
            self._scope.deadline = deadline

    async def _watch(self) -> None:
        terminated = self._server.context.terminated
        try:
            while True:
                with trio.CancelScope(deadline=self._deadline) as self._scope:
                    await terminated.wait()
                self._scope = None
                if self._ended:
                    return  # the connection is closing already
                if self._idle:
                    if terminated.is_set() or self._graced or not self._bytes_waiting():
                        break  # idle past the deadline, or the server stops while idle
                    # A stalled loop woke this watcher and the reader together: the
                    # client's next request is already here, unread. One more timeout
                    # (once: a client trickling header bytes gets at most two).
                    self._graced = True
                    self._move(trio.current_time() + self._server.config.keep_alive_timeout)
                    continue
                if terminated.is_set():
                    return  # busy: hypercorn closes it after the answer
                # (the deadline passed as a request began: watch on)
        finally:
            self._scope = None
            self._watching = False
        with trio.CancelScope(shield=True):
            await self._server._initiate_server_close()

    def _bytes_waiting(self) -> bool:
        """Whether the connection's socket holds bytes not read yet (or its end), asked
        without waiting: the read task is the one waiting on it."""
        sock = getattr(self._server.stream, "socket", None)
        if sock is None:
            return False
        try:
            return sock.is_readable()  # a zero-timeout poll
        except (OSError, ValueError):  # closed meanwhile
            return False


class QueuedTaskGroup(TaskGroup):
    """hypercorn's task group of a connection, whose ``app_put`` (how hypercorn hands
    the app a request's body, a WebSocket message) queues without a checkpoint
    while the app's queue (``max_app_queue_size`` messages) has room.

    A channel's ``send`` yields to the scheduler even when it need not wait: for
    a run of WebSocket frames that was a trip through the scheduler for
    hypercorn's read task at each frame, and one for the app's task that woke to
    take it, one frame at a time. Now the read task queues frames until the
    queue is full (then it waits, as before) or the bytes it read are used up
    (its next read of the socket is a checkpoint), and the app takes what is
    queued together. The queue's bound and the order of messages are unchanged."""

    async def spawn_app(self, *args):
        put = await super().spawn_app(*args)
        channel = put.__self__
        send_nowait = channel.send_nowait

        async def put_queued(message: dict) -> None:
            try:
                send_nowait(message)
            except trio.WouldBlock:  # full: wait for room (a checkpoint), as before
                await put(message)
        return put_queued


tcp_server.TaskGroup = QueuedTaskGroup  # what Connection's run (hypercorn's) opens
http1.install()  # HTTP/1.1 only: HTTP/2 would carry many requests per counted connection


_CURRENT: contextvars.ContextVar[Guarded | None] = contextvars.ContextVar(
    "crdtbook_connection", default=None)


def current() -> Guarded | None:
    """The guard of the connection the calling task serves (None outside ``serve``)."""
    return _CURRENT.get()


def raise_file_limit() -> int:
    """Lift the soft limit on open files to the hard one; return the soft limit now."""
    if resource is None:
        return MAX_CONNECTIONS + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft and (hard == resource.RLIM_INFINITY or hard > soft):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logs.warning("node.file_limit", detail=f"cannot raise the open-file limit: {exc}")
    return soft


def connection_cap(file_limit: int) -> int:
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, file_limit - RESERVED_FDS))


async def serve(app, config: Config, slots: trio.Semaphore, *, shutdown_trigger,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``config.bind`` until ``shutdown_trigger()`` returns, with at
    most ``slots``' initial value of connections open (shared with other servers)."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    sockets = config.create_sockets()
    listeners, binds = [], []
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")

    async def connection(stream: trio.SocketStream) -> None:
        try:
            with trio.CancelScope() as scope:
                guarded = Guarded(stream, scope)
                _CURRENT.set(guarded)  # this task's own context: hypercorn's tasks inherit it
                try:
                    await Connection(wrapped, config, context, ConnectionState({}), guarded)
                except* Exception as group:  # (cancellation passes through)
                    # hypercorn's own errors on a connection a client broke (h11's
                    # "Can't send data when our state is ERROR", a ping racing its
                    # EOF): they end that connection, never the node
                    logs.warning("http.connection_failed",
                                 error=repr(group.exceptions[0])[:200])
        finally:
            # (again, if hypercorn closed it: harmless) also when the stop's graceful
            # time is over: hypercorn's own close of a busy connection then gives up
            # at its first checkpoint, and the socket stayed open, its client waiting
            with trio.CancelScope(shield=True):
                await stream.aclose()
            slots.release()

    async def accept_loop(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                slots.release()
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                logs.warning("http.accept_failed", detail=str(exc)[:200])
                await trio.sleep(0.1)
                continue
            except BaseException:
                slots.release()
                raise
            nursery.start_soon(connection, stream)

    try:
        async with trio.open_nursery() as connections:
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(accept_loop, listener, connections)
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
