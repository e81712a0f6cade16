"""One WebSocket connection on ``/ws`` (docs/streams.md), over hypercorn's ASGI events.

Theory of operation
-------------------
``serve`` takes the handshake: it refuses (plain HTTP, before the upgrade)
a path other than ``/ws`` (404), a bad ``Authorization`` (401) and a
connection past ``MAX_CONNECTIONS`` (503); otherwise it accepts and runs a
``Connection``, four tasks in one nursery:

* the reader takes frames from hypercorn (which bounds a message at
  ``MAX_FRAME`` and closes with 1009 beyond it) and queues them as they
  came, unparsed (``Inbox``: at most ``READ_AHEAD`` characters, so a client
  that sends faster than the node answers waits in TCP; a frame counts at
  least ``FRAME_COST``, so empty and binary frames, which the inbox keeps as
  nothing, are bounded in number too). Parsed JSON takes
  up to ~25 times its text (a frame of nested empty arrays), so nothing
  parsed is ever held ahead of the processor;
* the processor takes frames in order and parses each when it gets to it.
  Consecutive ``order`` commands already waiting are taken together (at
  most ``MAX_BATCH``), each reduced at once to its order (a few short
  strings) or its refusal: each is checked alone (parse, account, rate
  limit), the valid ones are placed in one ``place_many``, then the batch
  goes to the answerer and the processor takes the next one at once (at
  most ``IN_COMMIT`` orders wait so). A command other than an order waits
  until every batch before it was answered;
* the answerer takes the batches in order: ``journal.sync`` up to the batch
  makes it durable (one commit, one fsync, serves every batch placed while
  the one before was being written), then each order gets its answer.
  That is how one connection places thousands of single orders a second;
* the sender writes the outgoing queue to the socket: what is queued when it
  looks (up to ``SEND_CHUNK`` characters, or one larger message) goes to
  hypercorn in one node-private ``SEND_MANY`` message (asgi.FramesAtOnce:
  each text its own frame, one pass through the connection's send lock, one
  write), not one ``websocket.send`` each; under a server without it, each
  frame waits for the next in the guard (``Guarded.hold_next``) instead.
  A connection that opted in (``{"op": "options", "batch_answers": true}``)
  gets the answers queued together in one ``answers`` frame (at most
  ``MAX_ANSWERS_FRAME`` characters, or one answer): each frame costs hypercorn
  and wsproto a pass and the connection's send lock a checkpoint, about a
  fifth of the node's work per order when every answer has its own.

The outgoing queue (``Outbox``) holds answers and channel messages in the
order they were made, bounded in characters: ``MAX_QUEUED`` for one
connection, and past ``FAIR_SHARE`` only while every connection of the node
together holds less than ``MAX_QUEUED_TOTAL`` (the hub's ``Tally``), so a
thousand clients that stop reading hold tens of MB, not a GB. What the sender
took and is writing counts too until written (``Outbox.writing``): a batch
stalled on a client that reads nothing is held whole until the stall cut. A snapshot
asked for while nothing was queued is taken whatever its size (an account's
``orders`` snapshot may be larger than the queue), so is a message that
finds the queue empty. Answers wait for
room (so a client that does not read stops being read). A channel message
that finds the queue full is not queued: every subscription of the
connection ends with a ``reset`` (``slow_consumer``) and their queued
messages are dropped; if the queue is still full when the next message
comes and the resets have not even been sent, the connection is closed
with 1013. Sends that the client does not read are cut by httpserve.py's
stall timeout, so a stuck connection always ends.

Rules this module keeps: every command gets exactly one answer, in command
order; an order is answered only once durable; nothing a client sends
raises out of here (a bug is logged and answered 500); the hub never waits
on a connection.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import deque

import trio

from crdtbook.replica import ReplicaError

from .. import httpserve, logs
from ..asgi import (
    MAX_DETAIL,
    SEND_MANY,
    WS_MAX_MESSAGE,
    WS_PING_EVERY_S,
    BadRequest,
    dumps,
    queued_first,
)
from . import auth, history, orderentry, views
from .requests import parse_json, parse_order, parse_order_id
from .streams import Hub, Subscription, Tally

MAX_CONNECTIONS = 1_000
MAX_FRAME = WS_MAX_MESSAGE  # bytes of one message from the client (hypercorn closes with 1009)
MAX_QUEUED = 1024 * 1024  # characters of outgoing messages queued per connection
FAIR_SHARE = 64 * 1024  # ... of which this much whatever the other connections hold
MAX_QUEUED_TOTAL = 16 * 1024 * 1024  # beyond its fair share, while all together hold less
MAX_ID = 64
MAX_INT_ID = 2**53  # integer ids a JavaScript client reads back exactly
MAX_BATCH = 1_000  # pipelined orders placed together
IN_COMMIT = 4 * MAX_BATCH  # orders placed and waiting to be durable (and answered), at most
READ_AHEAD = 2 * MAX_FRAME  # characters of frames read ahead of the processor, unparsed
FRAME_COST = 16  # ... counted for a frame of fewer (an empty or binary one: still a deque slot)
IDLE_S = 60.0  # nothing received (not even a pong) for this long: closed
PING_EVERY_S = WS_PING_EVERY_S  # hypercorn pings every connection this often
OPS = ("auth", "subscribe", "unsubscribe", "order", "cancel", "ping", "options")
RESET = object()  # the outbox tag of a reset message
BATCHABLE = object()  # the outbox tag of an answer that may share an ``answers`` frame
MAX_ANSWERS_FRAME = 64 * 1024  # characters of answers in one ``answers`` frame (one more if alone)


class Command:
    __slots__ = ("op", "id", "data", "refused", "order")

    def __init__(self, op: str | None, id: object, data: dict | None,
                 refused: BadRequest | None = None) -> None:
        self.op = op
        self.id = id
        self.data = data
        self.refused = refused
        self.order = None  # an order command's OrderRequest or refusal (not its JSON)


def parse_command(text: str | None) -> Command:
    """A command, or a refused one (its ``id`` echoed when it had a usable one)."""
    if text is None:
        return Command(None, None, None, BadRequest(400, "bad_frame", "send JSON commands in "
                                                    "text frames, not binary ones"))
    try:
        data = parse_json(text)
    except BadRequest as exc:
        return Command(None, None, None, exc)
    if not isinstance(data, dict):
        return Command(None, None, None, BadRequest(400, "bad_request",
                                                    "a command is a JSON object"))
    ident = data.get("id")
    if isinstance(ident, bool) or not (
            ident is None or (isinstance(ident, str) and len(ident) <= MAX_ID)
            or (isinstance(ident, int) and -MAX_INT_ID <= ident <= MAX_INT_ID)):
        return Command(None, None, None, BadRequest(
            400, "bad_id", f"id must be a string of at most {MAX_ID} characters or an "
            "integer (at most 2^53)"))
    op = data.get("op")
    if op not in OPS:
        shown = json.dumps(op)[:40] if op is not None else "none"
        return Command(None, ident, None, BadRequest(
            400, "bad_op", f"unknown op {shown}; one of {', '.join(OPS)}"))
    command = Command(op, ident, data)
    if op == "order":  # waits in a batch: keep the order, not the JSON it came in
        command.data = None
        try:
            if set(data) - {"op", "id", "order"}:
                raise BadRequest(400, "bad_request", "order takes only \"order\": the "
                                                     "object POST /orders takes")
            command.order = parse_order(data.get("order"), "")
        except BadRequest as exc:  # answered after the token's check (auth comes first)
            command.order = exc
    return command


def answer_ok(ident: object, status: int, result: dict) -> str:
    return dumps({"type": "answer", "id": ident, "ok": True, "status": status,
                  "result": result}).decode()


def refusal(exc: BaseException) -> orderentry.Failure:
    refused = orderentry.failure(exc)
    if refused is None:  # a bug in the node, never the client's input
        logs.error("ws.bug", error=repr(exc)[:300])
        refused = orderentry.Failure(500, "internal", "the node hit a bug; see its log", [])
    return refused


def answer_error(ident: object, exc: BaseException | orderentry.Failure) -> str:
    refused = exc if isinstance(exc, orderentry.Failure) else refusal(exc)
    out = {"type": "answer", "id": ident, "ok": False, "status": refused.status,
           "error": refused.error, "detail": refused.detail[:MAX_DETAIL + 20]}
    wait = orderentry.retry_after(refused)
    if wait is not None:
        out["retry_after_s"] = wait
    return dumps(out).decode()


def _cost(text: str | None) -> int:
    """What a frame counts against ``READ_AHEAD``: its characters, ``FRAME_COST`` at
    least (without it, a client that stops reading could queue empty frames for
    ever: each costs it 6 bytes on the wire and the node a slot in the inbox)."""
    return max(len(text or ""), FRAME_COST)


class Inbox:
    """Frames read ahead of the processor, as they came (text, or None: binary)."""

    def __init__(self) -> None:
        self.items: deque[str | None] = deque()
        self.size = 0
        self.ended = False
        self._filled = trio.Event()
        self._drained = trio.Event()

    async def put(self, text: str | None) -> None:
        cost = _cost(text)
        while self.items and self.size + cost > READ_AHEAD:  # one frame always fits
            self._drained = trio.Event()
            await self._drained.wait()
        self.items.append(text)
        self.size += cost
        self._filled.set()

    def end(self) -> None:
        self.ended = True
        self._filled.set()

    def take_nowait(self) -> Command | None:
        """The next frame, parsed; None if none is waiting."""
        if not self.items:
            return None
        text = self.items.popleft()
        self.size -= _cost(text)
        self._drained.set()
        return parse_command(text)

    async def take(self) -> Command | None:
        """The next frame, parsed; None once the client is gone and all were taken."""
        while not self.items:
            if self.ended:
                return None
            self._filled = trio.Event()
            await self._filled.wait()
        return self.take_nowait()


class Outbox:
    """Outgoing messages in order, tagged with their subscription (None, or
    BATCHABLE when the connection opted into ``answers`` frames: an answer)."""

    def __init__(self, tally: Tally | None = None) -> None:
        self.items: deque[tuple[object, str]] = deque()
        self.size = 0
        self.sending = 0  # characters the sender took and is writing (``writing``)
        self.tally = tally if tally is not None else Tally()
        self._filled = trio.Event()
        self._drained = trio.Event()

    def full(self, more: int = 0) -> bool:
        size = self.size + self.sending + more
        return size > MAX_QUEUED or (size > FAIR_SHARE
                                     and self.tally.chars + more > MAX_QUEUED_TOTAL)

    def push(self, tag: object, text: str) -> None:
        self.items.append((tag, text))
        self.size += len(text)
        self.tally.chars += len(text)
        self._filled.set()

    def drop(self, keep) -> None:
        self.items = deque(item for item in self.items if keep(item[0]))
        size = sum(len(text) for _, text in self.items)
        self.tally.chars += size - self.size
        self.size = size

    @contextlib.contextmanager
    def writing(self, chars: int):
        """The sender writes ``chars`` characters it took: they count against the
        queue's bounds (this connection's and the node's) until written. A batch
        written at once (``SEND_MANY``: up to ``SEND_CHUNK`` and one message) is
        held whole, as text and as frames, while a client that reads nothing
        stalls it: uncounted, each stuck connection held that on top of its queue."""
        self.sending += chars
        self.tally.chars += chars
        try:
            yield
        finally:
            self.sending -= chars
            self.tally.chars -= chars
            if not self.full():
                self._drained.set()

    def release(self) -> None:
        """The connection ended: what it still held counts no more."""
        self.drop(lambda tag: False)

    async def room(self) -> None:
        while self.full():
            self._drained = trio.Event()
            await self._drained.wait()

    async def take(self) -> tuple[object, str]:
        while not self.items:
            self._filled = trio.Event()
            await self._filled.wait()
        return self.take_nowait()

    def take_nowait(self) -> tuple[object, str] | None:
        if not self.items:
            return None
        tag, text = self.items.popleft()
        self._taken(len(text))
        return tag, text

    def take_answers(self, first: str) -> str:
        """``first`` (a batchable answer just taken) and the batchable answers queued
        right after it, as one ``answers`` message (at most ``MAX_ANSWERS_FRAME``
        characters of answers, or ``first`` alone)."""
        items, answers, size = self.items, [first], len(first)
        while items and items[0][0] is BATCHABLE \
                and size + len(items[0][1]) <= MAX_ANSWERS_FRAME:
            text = items.popleft()[1]
            answers.append(text)
            size += len(text)
        if len(answers) > 1:
            self._taken(size - len(first))
        return '{"type":"answers","answers":[' + ",".join(answers) + "]}"

    def _taken(self, chars: int) -> None:
        self.size -= chars
        self.tally.chars -= chars
        if not self.full():
            self._drained.set()


class Connection:
    def __init__(self, node, hub: Hub, token: str | None, send,
                 send_many: bool = False) -> None:
        self.node = node
        self.send_many = send_many  # the server takes SEND_MANY (asgi.FramesAtOnce)
        self.hub = hub
        self.token = token  # checked again at each use: a revoked token stops at once
        self._send = send
        self.outbox = Outbox(getattr(hub, "outgoing", None))
        self.subs: dict[str, Subscription] = {}
        self.resets_unsent = 0
        self.batch_answers = False  # opted in: answers may share a frame (options)
        self.close_code: int | None = None
        self.close_reason = ""
        self._closing = trio.Event()
        self.inbox = Inbox()
        # order batches placed, waiting to be durable, then answered (by _answerer)
        # (bounded by IN_COMMIT orders: a batch holds one at least)
        self._placed_send, self._placed_receive = trio.open_memory_channel(math.inf)
        self._unanswered = 0  # batches sent to _answerer and not yet answered
        self._in_commit = 0  # commands of those batches
        self._answered = trio.Event()

    # -- what the hub calls (never waits) ----------------------------------
    def deliver(self, sub: Subscription, text: str, alone: bool = False) -> None:
        """Queue a channel message (``alone``: a snapshot that came with nothing queued
        before its answer, taken whatever its size)."""
        if self.close_code is not None:
            return
        if not alone and self.outbox.items and self.outbox.full(len(text)):
            self._overflow()
            return
        self.outbox.push(sub, text)

    def reset(self, sub: Subscription, reason: str) -> None:
        """The hub ended ``sub``: drop its queued messages, tell the client."""
        if self.subs.get(sub.channel) is sub:
            del self.subs[sub.channel]
        if self.close_code is not None:
            return
        self.outbox.drop(lambda tag: tag is not sub)
        self.outbox.push(RESET, json.dumps({"type": "reset", "channel": sub.channel,
                                            "reason": reason}, separators=(",", ":")))
        self.resets_unsent += 1

    def _overflow(self) -> None:
        if self.resets_unsent:
            self.close(1013, "slow consumer: the outgoing queue stayed full")
            return
        subs = list(self.subs.values())
        self.subs.clear()
        for sub in subs:
            self.hub.unsubscribe(sub)
        self.outbox.drop(lambda tag: not isinstance(tag, Subscription))
        for sub in subs:
            self.outbox.push(RESET, json.dumps({"type": "reset", "channel": sub.channel,
                                                "reason": "slow_consumer"},
                                               separators=(",", ":")))
            self.resets_unsent += 1
        logs.info("ws.slow_consumer", channels=",".join(s.channel for s in subs))

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self.outbox.drop(lambda tag: False)
            self.outbox.push(None, "")  # wakes the sender
            self._closing.set()

    # -- the tasks ---------------------------------------------------------
    async def run(self, receive) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender, nursery.cancel_scope)
                nursery.start_soon(self._processor)
                nursery.start_soon(self._answerer)
                await self._reader(receive)
                nursery.cancel_scope.cancel()
        finally:
            for sub in list(self.subs.values()):
                self.hub.unsubscribe(sub)
            self.subs.clear()
            self.outbox.release()

    async def _reader(self, receive) -> None:
        receive = queued_first(receive)  # a run of frames: no scheduler trip for each
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    return
                if kind == "websocket.receive":
                    await self.inbox.put(message.get("text"))
        finally:
            self.inbox.end()

    async def _sender(self, cancel_scope: trio.CancelScope) -> None:
        guard = httpserve.current()
        while True:
            tag, text = await self.outbox.take()
            if self.close_code is not None:
                await self._send({"type": "websocket.close", "code": self.close_code,
                                  "reason": self.close_reason})
                cancel_scope.cancel()
                return
            text = self._framed(tag, text)
            if self.send_many:
                # Every message queued now, each its own frame, in one hypercorn call:
                # one pass through the connection's send lock and one write for all.
                texts, size = [text], len(text)
                while size < httpserve.SEND_CHUNK:
                    item = self.outbox.take_nowait()
                    if item is None:
                        break
                    text = self._framed(*item)
                    texts.append(text)
                    size += len(text)
                with self.outbox.writing(size):
                    await self._send({"type": SEND_MANY, "texts": texts})
                continue
            # More queued: this frame waits for the next one (httpserve.Guarded), so
            # the answers of a batch leave in one write, not one syscall each.
            holding = guard is not None and bool(self.outbox.items) \
                and guard.held < httpserve.SEND_CHUNK
            if holding:
                guard.hold_next()
            await self._send({"type": "websocket.send", "text": text})
            if holding:
                guard.unhold()  # (a no-op once the frame was written)

    def _framed(self, tag: object, text: str) -> str:
        """The text of the frame that takes outgoing message ``text`` (and, for an
        answer of a connection that opted in, the answers queued after it)."""
        if tag is RESET:
            self.resets_unsent -= 1
        elif tag is BATCHABLE:
            return self.outbox.take_answers(text)
        return text

    async def _processor(self) -> None:
        pending: Command | None = None  # parsed, not yet processed: at most one
        while self.close_code is None:
            command = pending or await self.inbox.take()
            pending = None
            if command is None:
                return
            if command.op != "order":
                await self._settled()  # its answer comes after those of the orders before
                await self._one(command)
                continue
            await self._room_to_place()  # (meanwhile more orders come: a larger batch)
            batch = [command]
            room = min(MAX_BATCH, IN_COMMIT - self._in_commit)
            while len(batch) < room:  # the orders that already came: one batch
                following = self.inbox.take_nowait()
                if following is None:
                    break
                if following.op != "order":
                    pending = following
                    break
                batch.append(following)
            await self._orders(batch)

    async def _room_to_place(self) -> None:
        """Wait until fewer than ``IN_COMMIT`` orders wait to be durable and answered."""
        while self._in_commit >= IN_COMMIT:
            self._answered = trio.Event()
            await self._answered.wait()

    async def _settled(self) -> None:
        """Wait until every order batch placed so far was answered."""
        while self._unanswered:
            self._answered = trio.Event()
            await self._answered.wait()

    async def _answerer(self) -> None:
        """Answer placed batches in order, each once its orders are durable."""
        async for batch, answers, placed, target in self._placed_receive:
            if placed:
                try:
                    await self.node.journal.sync(target)
                except Exception as exc:  # nothing was promised: each order gets this answer
                    answers = self._refused(batch, answers, exc)
                    placed = []
            replica = self.node.replica
            results = iter(placed)
            for command, text in zip(batch, answers, strict=True):
                if text is None:
                    text = answer_ok(command.id, 201,
                                     orderentry.placed_json(replica, next(results)))
                await self._answer(text)
            self._unanswered -= 1
            self._in_commit -= len(batch)
            self._answered.set()

    def _refused(self, batch: list[Command], answers: list, exc: Exception) -> list:
        """The answers of a batch whose accepted orders all failed with ``exc``."""
        refused = refusal(exc)
        pending = [c for c, a in zip(batch, answers, strict=True) if a is None]
        for _ in pending:
            self.node.metrics.refused("order", refused.error)
        return [answer_error(c.id, refused) if a is None else a
                for c, a in zip(batch, answers, strict=True)]

    async def _answer(self, text: str) -> None:
        await self.outbox.room()
        if self.close_code is None:
            self.outbox.push(BATCHABLE if self.batch_answers else None, text)

    # -- commands ----------------------------------------------------------
    async def _one(self, command: Command) -> None:
        if command.refused is not None:
            await self._answer(answer_error(command.id, command.refused))
            return
        try:
            if command.op == "ping":
                await self._answer(json.dumps({"type": "pong", "id": command.id},
                                              separators=(",", ":")))
            elif command.op == "subscribe":
                await self._subscribe(command)
            elif command.op == "unsubscribe":
                await self._unsubscribe(command)
            elif command.op == "auth":
                await self._auth(command)
            elif command.op == "cancel":
                await self._cancel(command)
            elif command.op == "options":
                await self._options(command)
        except Exception as exc:
            refused = refusal(exc)
            if command.op == "cancel":  # counted as over HTTP (node/metrics.py)
                self.node.metrics.refused("cancel", refused.error)
            await self._answer(answer_error(command.id, refused))

    async def _subscribe(self, command: Command) -> None:
        await self.outbox.room()
        if self.close_code is not None:
            return
        channel = command.data.get("channel")
        if not isinstance(channel, str):
            raise BadRequest(400, "bad_channel", "channel must be a string: one of "
                                                 "book, trades, orders, status")
        who = None
        if channel == "orders":
            who = self._principal()
        old = self.subs.get(channel)
        sub, snapshot = self.hub.subscribe(self, who, command.data)
        if old is not None:  # subscribing again replaces it (how a client resubscribes)
            self.hub.unsubscribe(old)
        self.subs[sub.channel] = sub
        # no await from the subscription to its snapshot: nothing of it can come first
        alone = not self.outbox.items
        self.outbox.push(None, answer_ok(command.id, 200, {"channel": sub.channel}))
        self.deliver(sub, snapshot, alone)

    async def _unsubscribe(self, command: Command) -> None:
        channel = command.data.get("channel")
        unknown = sorted(set(command.data) - {"op", "id", "channel"})
        if unknown:
            raise BadRequest(400, "bad_request", "unsubscribe takes only a channel")
        sub = self.subs.pop(channel, None) if isinstance(channel, str) else None
        if sub is None:
            raise BadRequest(404, "not_subscribed", "no subscription to that channel here")
        self.hub.unsubscribe(sub)
        self.outbox.drop(lambda tag: tag is not sub)
        await self._answer(answer_ok(command.id, 200, {"channel": channel}))

    async def _auth(self, command: Command) -> None:
        token = command.data.get("token")
        if set(command.data) - {"op", "id", "token"}:
            raise BadRequest(400, "bad_request", "auth takes only a token")
        if not isinstance(token, str):
            raise auth.unauthorized("auth needs a token: {\"op\": \"auth\", \"token\": ...}")
        who = auth.principal(self.node, token)
        self.token = token
        await self._answer(answer_ok(command.id, 200, {"account": who.account}))
        self.hub.recheck(self)  # a watch of an account the new token may not read ends

    async def _options(self, command: Command) -> None:
        """How the answers to the next commands are framed (this one's answer is
        framed as those before it)."""
        if set(command.data) - {"op", "id", "batch_answers"}:
            raise BadRequest(400, "bad_request", "options takes only batch_answers")
        batch = command.data.get("batch_answers", self.batch_answers)
        if not isinstance(batch, bool):
            raise BadRequest(400, "bad_request", "batch_answers must be true or false")
        await self._answer(answer_ok(command.id, 200, {"batch_answers": batch}))
        self.batch_answers = batch

    def _principal(self) -> auth.Principal:
        return auth.principal(self.node, self.token)

    async def _cancel(self, command: Command) -> None:
        if set(command.data) - {"op", "id", "order"}:
            raise BadRequest(400, "bad_request", "cancel takes only an order id")
        target = command.data.get("order")
        if not isinstance(target, str):
            raise BadRequest(400, "bad_id", "cancel needs \"order\": an order id "
                                            "\"replica:seq\"")
        who = self._principal()
        dot = parse_order_id(target)
        try:
            result = await history.cancel(self.node, dot, who)
        except ReplicaError as exc:
            raise BadRequest(409, "cannot_cancel", str(exc)) from None
        await self._answer(answer_ok(command.id, 200,
                                     {"cancel": views.cancel_json(result.cancel)}))

    async def _orders(self, batch: list[Command]) -> None:
        """Check each order alone, place the good ones together; the answerer answers
        each once they are durable."""
        answers: list[str | None] = []
        accepted = []
        who: auth.Principal | Exception
        try:
            who = self._principal()
        except auth.Denied as exc:
            who = exc
        for command in batch:
            if command.refused is not None:
                self.node.metrics.refused("order", command.refused.error)
                answers.append(answer_error(command.id, command.refused))
                continue
            try:
                if isinstance(who, Exception):
                    raise who
                if isinstance(command.order, BadRequest):
                    raise command.order
                accepted.append(auth.entitled(self.node, who, [command.order])[0])
                answers.append(None)
            except Exception as exc:
                refused = refusal(exc)
                self.node.metrics.refused("order", refused.error)  # as over HTTP
                answers.append(answer_error(command.id, refused))
        placed = []
        if accepted:
            try:
                placed = self.node.place_many(accepted)
            except Exception as exc:  # nothing was placed (or promised): each gets this answer
                answers = self._refused(batch, answers, exc)
                placed = []
        # Durable, then answered, by _answerer: meanwhile the next batches are placed
        # (the commit under way, an fsync on a durable node, serves them all), up to
        # IN_COMMIT orders. Counted in orders, not batches: hypercorn hands frames
        # over a few at a time, so the processor's batches are small while a commit
        # runs; a cap of a few batches made each commit (and each push to the
        # peers) carry a few dozen orders.
        self._unanswered += 1
        self._in_commit += len(batch)
        self._placed_send.send_nowait((batch, answers, placed, self.node.journal.mark()))


async def serve(node, scope: dict, receive, send) -> None:
    """The ASGI websocket scope: refuse before the upgrade, or run one connection."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    hub: Hub | None = node.streams
    if scope.get("path") != "/ws":
        await _refuse(send, 404, "not_found", f"no WebSocket endpoint {scope.get('path')!r:.60}"
                                              "; streams are at /ws")
        return
    if hub is None:
        await _refuse(send, 503, "not_ready", "the node is starting; retry shortly")
        return
    if hub.connections >= MAX_CONNECTIONS:
        await _refuse(send, 503, "busy", f"this node serves at most {MAX_CONNECTIONS} "
                                         "WebSocket connections; retry later")
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
               for k, v in scope.get("headers", [])}
    try:
        token = auth.bearer(headers)
        if token is not None:
            auth.principal(node, token)
    except auth.Denied as exc:
        await _refuse(send, exc.status, exc.error, exc.detail, exc.headers)
        return
    hub.connections += 1
    try:
        guard = httpserve.current()
        if guard is not None:
            guard.idle_after(IDLE_S)
        await send({"type": "websocket.accept"})
        send_many = SEND_MANY in (scope.get("extensions") or {})
        try:
            await Connection(node, hub, token, send, send_many).run(receive)
        except BaseExceptionGroup as group:
            if _only_cancelled(group):
                # The connection was cancelled from outside (it closed, the node
                # stops). Handed on as a group, hypercorn's ``_handle`` splits it
                # and keeps the cancelled half in its frame, which that half's
                # tracebacks hold: a cycle of ~100 objects per connection, left to
                # the collector (and, frozen, to a thaw: node/gcpolicy.py). A
                # checkpoint raises the same cancellation as one ``Cancelled``.
                await trio.lowlevel.checkpoint()
            raise
    finally:
        hub.connections -= 1


def _only_cancelled(group: BaseExceptionGroup) -> bool:
    return group.split(trio.Cancelled)[1] is None


async def _refuse(send, status: int, error: str, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "websocket.http.response.body",
                "body": json.dumps({"error": error, "detail": detail}).encode()})
