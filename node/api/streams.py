"""The stream hub: one publisher per node for the WebSocket channels (docs/streams.md).

Theory of operation
-------------------
Subscriptions live here, grouped so that each channel's difference is
computed once per publish whatever the number of subscribers:

* ``book``: one group per depth; the group keeps the levels it last
  published, and a new subscriber's snapshot is those levels (not the
  replica's current ones), so the next update applies to it exactly;
* ``trades``: one ``Tape`` (diffs.py) for every subscriber;
* ``orders``: one ``OrderWatch`` per account;
* ``status``: the last ``GET /status`` body sent, at most once a second.

``run`` is the publisher: it sleeps until someone subscribes, then waits on
``node.changed`` (set wherever the replica may show something new, see
node/service.py) and calls ``publish``, which is synchronous: it reads the
replica, computes the differences, encodes each message once and hands it
to every subscriber's connection (websocket.py), which queues it without
waiting. Nothing here awaits while it reads the replica, so a publish sees
one consistent state; several changes in one scheduling round make one
publish. A group with no subscriber is dropped, so a node nobody watches
pays one ``Event.set`` per change and nothing else.

Each subscription numbers its own messages (``seq``): the body of a message
is encoded once and the ``seq`` spliced in front of it per subscriber.

Rules this module keeps: a publish never awaits; a subscription's messages
are queued in publish order and start with its snapshot; state kept for a
channel exists only while someone subscribes to it.
"""

from __future__ import annotations

import json

import trio

from .. import logs
from ..asgi import BadRequest
from . import diffs
from .auth import Denied, Principal, may_read, principal, unauthorized

CHANNELS = ("book", "trades", "orders", "status")
DEFAULT_DEPTH = 50
MAX_DEPTH = 1000
STATUS_EVERY_S = 1.0


def encode(payload: dict) -> str:
    """A message body without its opening brace (a ``seq`` goes in front)."""
    return json.dumps(payload, separators=(",", ":"))[1:]


def framed(kind: str, channel: str, seq: int, body: str) -> str:
    return f'{{"type":"{kind}","channel":"{channel}","seq":{seq},{body}'


class Tally:
    """Characters queued for clients over every connection of a node (websocket.py)."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        self.chars = 0


class Subscription:
    __slots__ = ("conn", "channel", "seq", "depth", "account", "live")

    def __init__(self, conn, channel: str, depth: int = 0, account: str | None = None) -> None:
        self.conn = conn
        self.channel = channel
        self.seq = 0
        self.depth = depth
        self.account = account
        self.live = True

    def send(self, kind: str, body: str) -> None:
        if self.live:
            self.seq += 1
            self.conn.deliver(self, framed(kind, self.channel, self.seq, body))


class BookGroup:
    def __init__(self, depth: int, levels: tuple[diffs.Levels, diffs.Levels]) -> None:
        self.depth = depth
        self.bids, self.asks = levels
        self.subs: dict[Subscription, None] = {}


class AccountGroup:
    def __init__(self, watch: diffs.OrderWatch) -> None:
        self.watch = watch
        self.subs: dict[Subscription, None] = {}


class Hub:
    def __init__(self, node) -> None:
        self.node = node
        self.connections = 0  # open WebSocket connections (websocket.py counts them)
        self.outgoing = Tally()  # characters queued for them all (websocket.py's Outbox)
        self.books: dict[int, BookGroup] = {}
        self.tape: diffs.Tape | None = None
        self.trades: dict[Subscription, None] = {}
        self.accounts: dict[str, AccountGroup] = {}
        self.events: list = []  # new events since the last publish, while orders are watched
        self.fill_mark = 0  # fills the order watches have seen (a fill number)
        self.status: dict[Subscription, None] = {}
        self.status_sent: str | None = None
        self.subscribed = trio.Event()  # set while anyone subscribes
        self.publishes = 0

    # -- bookkeeping ---------------------------------------------------------
    def subscription_count(self) -> int:
        return (sum(len(g.subs) for g in self.books.values()) + len(self.trades)
                + sum(len(g.subs) for g in self.accounts.values()) + len(self.status))

    def note_events(self, events) -> None:
        if self.accounts:
            self.events.extend(events)

    def subscribe(self, conn, who: Principal | None, command: dict) -> tuple[Subscription, str]:
        """A new subscription and its snapshot message (BadRequest if refused)."""
        channel = command.get("channel")
        allowed = {"op", "id", "channel"}
        if channel == "book":
            allowed.add("depth")
        elif channel == "orders":
            allowed.add("account")
        elif channel not in CHANNELS:
            raise BadRequest(400, "bad_channel", f"channel must be one of {', '.join(CHANNELS)}")
        unknown = sorted(set(command) - allowed)
        if unknown:
            raise BadRequest(400, "bad_request", f"unknown field(s) for a {channel} "
                             f"subscription: {', '.join(repr(k)[:40] for k in unknown[:5])}")
        if channel == "book":
            sub, snapshot = self._subscribe_book(conn, command.get("depth", DEFAULT_DEPTH))
        elif channel == "trades":
            sub, snapshot = self._subscribe_trades(conn)
        elif channel == "orders":
            sub, snapshot = self._subscribe_orders(conn, who, command)
        else:
            sub, snapshot = self._subscribe_status(conn)
        self.subscribed.set()
        return sub, snapshot

    def unsubscribe(self, sub: Subscription) -> None:
        sub.live = False
        if sub.channel == "book":
            group = self.books.get(sub.depth)
            if group is not None:
                group.subs.pop(sub, None)
                if not group.subs:
                    del self.books[sub.depth]
        elif sub.channel == "trades":
            self.trades.pop(sub, None)
            if not self.trades:
                self.tape = None
        elif sub.channel == "orders":
            group = self.accounts.get(sub.account)
            if group is not None:
                group.subs.pop(sub, None)
                if not group.subs:
                    del self.accounts[sub.account]
                    if not self.accounts:
                        self.events = []
        else:
            self.status.pop(sub, None)
            if not self.status:
                self.status_sent = None
        if not self.subscription_count():
            self.subscribed = trio.Event()

    def recheck(self, conn=None) -> None:
        """End (reset ``unauthorized``) every ``orders`` subscription (of ``conn``, if
        given) whose connection's token may no longer watch its account: a revoked
        token, or the connection authenticated since as another account."""
        for group in list(self.accounts.values()):
            for sub in list(group.subs):
                if conn is not None and sub.conn is not conn:
                    continue
                try:
                    may_read(principal(self.node, sub.conn.token), sub.account)
                except Denied:
                    self._reset(sub, "unauthorized")

    def _subscribe_book(self, conn, depth: object) -> tuple[Subscription, str]:
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 < depth <= MAX_DEPTH:
            raise BadRequest(400, "bad_depth", f"depth must be an integer 1..{MAX_DEPTH}")
        group = self.books.get(depth)
        if group is None:
            group = self.books[depth] = BookGroup(depth, diffs.book_levels(self.node.replica,
                                                                           depth))
        sub = Subscription(conn, "book", depth=depth)
        group.subs[sub] = None
        return sub, self._first(sub, "snapshot", {
            "depth": depth, "bids": diffs.levels_json(group.bids),
            "asks": diffs.levels_json(group.asks), "final_clock": self.node.replica.frontier()})

    def _subscribe_trades(self, conn) -> tuple[Subscription, str]:
        if self.tape is None:
            self.tape = diffs.Tape(self.node.replica)
        sub = Subscription(conn, "trades")
        self.trades[sub] = None
        return sub, self._first(sub, "snapshot", {"trades": self.tape.snapshot()})

    def _subscribe_orders(self, conn, who: Principal | None, command: dict):
        if who is None:
            raise unauthorized("the orders channel needs an account's token: send it in the "
                               "handshake (Authorization: Bearer) or with an auth command")
        account = command.get("account")
        if who.any_account:
            if not isinstance(account, str):
                raise BadRequest(400, "bad_request", "this token acts for any account: name "
                                 "the account to watch (\"account\": \"NAME\")")
        elif account is None:
            account = who.account
        may_read(who, account if isinstance(account, str) else "")
        group = self.accounts.get(account)
        if group is None:
            if not self.accounts:
                self.events = []
                engine = self.node.replica.engine
                self.fill_mark = engine.fills_base + len(engine.fills)
            group = self.accounts[account] = AccountGroup(
                diffs.OrderWatch(self.node.replica, account, self.node.id))
            snapshot = group.watch.snapshot
        else:  # the group's views are those last published: the snapshot is made of them
            snapshot = [view for view in group.watch.sent.values()
                        if view["status"] in ("open", "pending")]
            snapshot.sort(key=lambda o: (o["clock"], o["replica"], o["seq"]))
        sub = Subscription(conn, "orders", account=account)
        group.subs[sub] = None
        return sub, self._first(sub, "snapshot", {"orders": snapshot})

    def _subscribe_status(self, conn) -> tuple[Subscription, str]:
        sub = Subscription(conn, "status")
        self.status[sub] = None
        return sub, self._first(sub, "status", {"status": self.node.status()})

    @staticmethod
    def _first(sub: Subscription, kind: str, payload: dict) -> str:
        sub.seq = 1
        return framed(kind, sub.channel, 1, encode(payload))

    # -- publishing ----------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._status_loop)
            while True:
                if not self.subscription_count():
                    await self.subscribed.wait()
                changed = self.node.changed
                self.publish()
                await changed.wait()

    def publish(self) -> None:
        """Send every subscriber what changed since the last publish (never waits)."""
        if not (self.books or self.tape is not None or self.accounts):
            return
        try:
            if self.books:
                self._publish_books()
            if self.tape is not None:
                self._publish_trades()
            if self.accounts:
                self._publish_orders()
        except Exception as exc:  # a bug here must not take the node down: reset, log
            logs.error("streams.bug", error=repr(exc)[:300])
            for sub in self._all():
                self._reset(sub, "internal")
        self.publishes += 1

    def _all(self) -> list[Subscription]:
        subs = [s for g in self.books.values() for s in g.subs]
        subs += list(self.trades)
        subs += [s for g in self.accounts.values() for s in g.subs]
        return subs + list(self.status)

    def _reset(self, sub: Subscription, reason: str) -> None:
        conn = sub.conn
        self.unsubscribe(sub)
        conn.reset(sub, reason)

    def _publish_books(self) -> None:
        deepest = max(self.books)
        bids, asks = diffs.book_levels(self.node.replica, deepest)
        for depth, group in list(self.books.items()):
            new_bids, new_asks = bids[:depth], asks[:depth]
            changed_bids = diffs.level_changes(group.bids, new_bids, True)
            changed_asks = diffs.level_changes(group.asks, new_asks, False)
            group.bids, group.asks = new_bids, new_asks
            if not changed_bids and not changed_asks:
                continue
            body = encode({"bids": diffs.levels_json(changed_bids),
                           "asks": diffs.levels_json(changed_asks)})
            for sub in list(group.subs):
                sub.send("update", body)

    def _publish_trades(self) -> None:
        change = self.tape.update(self.node.replica)
        if change.lost:
            for sub in list(self.trades):
                self._reset(sub, "history_moved")
            return
        messages = []
        if change.retracted:
            messages.append(("retract", encode({"ids": change.retracted})))
        messages += [("trade", encode({"trade": trade})) for trade in change.trades]
        if change.final:
            messages.append(("final", encode({"ids": change.final,
                                              "final_clock": change.final_clock})))
        for kind, body in messages:
            for sub in list(self.trades):
                sub.send(kind, body)

    def _publish_orders(self) -> None:
        replica = self.node.replica
        engine = replica.engine
        base, end = engine.fills_base, engine.fills_base + len(engine.fills)
        fills = engine.fills[max(0, self.fill_mark - base):]
        self.fill_mark = end
        events, self.events = self.events, []
        for group in list(self.accounts.values()):
            for order in group.watch.update(replica, events, fills):
                body = encode({"order": order})
                for sub in list(group.subs):
                    sub.send("order", body)

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(STATUS_EVERY_S)
            if not self.status:
                continue
            body = encode({"status": self.node.status()})
            if body == self.status_sent:
                continue
            self.status_sent = body
            for sub in list(self.status):
                sub.send("status", body)

