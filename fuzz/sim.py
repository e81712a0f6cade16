"""The simulated network: replicas of the core exchanging encoded messages.

Theory of operation
-------------------
A ``Schedule`` is the whole of a run: how many replica slots, each slot's
clock offset, and a list of actions. Executing it is deterministic, so a
schedule is its own reproducer (and the reducer can cut it down). Actions:

    ("place", slot, type, side, qty, price)   an order at the slot's replica
    ("cancel", slot, k)                       cancel its k-th own order (mod count)
    ("time", ms)                              simulated wall time passes
    ("deliver", k)                            deliver in-flight message k (mod count)
    ("pull", a, b)                            a sends b its causal context
    ("dup", k) / ("drop", k)                  duplicate / lose in-flight message k
    ("hold", k, n)                            message k waits n more deliveries
    ("partition", groups) / ("heal",)         split the slots into groups / rejoin
    ("restart", slot)                         the slot loses its state, takes a new id

Every local event is pushed to every other slot as an encoded delta; a pull
request carries an encoded context and its answer the encoded missing delta.
Messages between slots in different partition groups are lost on delivery.
All payloads go through the real codec.

``quiesce`` heals the network, delivers what is left, then runs pull rounds
between every pair until nothing changes: afterwards every replica should
hold the same events, and the checks in checks.py run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from crdtbook.codec import decode_context, decode_delta, encode_context, encode_delta
from crdtbook.replica import Replica, ReplicaError


class Schedule(NamedTuple):
    replicas: int
    offsets: tuple[int, ...]  # each slot's wall-clock offset, ms
    actions: tuple[tuple, ...]


class Message(NamedTuple):
    src: int
    dst: int
    kind: str  # push | pull | answer
    payload: bytes


@dataclass
class Sim:
    schedule: Schedule
    replicas: list[Replica] = field(default_factory=list)
    generation: list[int] = field(default_factory=list)
    own_orders: list[list[str]] = field(default_factory=list)
    flight: list[list] = field(default_factory=list)  # [Message, wait]
    groups: dict[int, int] = field(default_factory=dict)  # slot -> partition group
    now: int = 1_700_000_000_000
    events_created: int = 0
    observers: list = field(default_factory=list)  # called after every change

    def __post_init__(self) -> None:
        n = self.schedule.replicas
        self.generation = [0] * n
        self.replicas = [Replica(self._name(i)) for i in range(n)]
        self.own_orders = [[] for _ in range(n)]

    def _name(self, slot: int) -> str:
        return f"s{slot}g{self.generation[slot]}"

    # -- running -----------------------------------------------------------
    def run(self) -> None:
        for action in self.schedule.actions:
            self.step(action)

    def step(self, action: tuple) -> None:
        kind = action[0]
        getattr(self, "_" + kind)(*action[1:])

    def _changed(self, slot: int) -> None:
        for observe in self.observers:
            observe(self, slot)

    def _wall(self, slot: int) -> int:
        return self.now + self.schedule.offsets[slot]

    def _send(self, src: int, dst: int, kind: str, payload: bytes) -> None:
        self.flight.append([Message(src, dst, kind, payload), 0])

    def _broadcast(self, src: int, payload: bytes) -> None:
        for dst in range(self.schedule.replicas):
            if dst != src:
                self._send(src, dst, "push", payload)

    def _place(self, slot: int, kind: str, side: str, qty: int, price: int) -> None:
        replica = self.replicas[slot]
        placed = replica.place(side, str(qty), None if kind == "market" else str(price), kind,
                               now_ms=self._wall(slot))
        self.own_orders[slot].append(str(placed.order.dot))
        self.events_created += 1
        self._broadcast(slot, encode_delta(placed.delta))
        self._changed(slot)

    def _cancel(self, slot: int, k: int) -> None:
        mine = self.own_orders[slot]
        if not mine:
            return
        cancelled = self.replicas[slot].cancel(mine[k % len(mine)], now_ms=self._wall(slot))
        self.events_created += 1
        self._broadcast(slot, encode_delta(cancelled.delta))
        self._changed(slot)

    def _time(self, ms: int) -> None:
        self.now += ms

    def _pick(self, k: int) -> int | None:
        ready = [i for i, (_, wait) in enumerate(self.flight) if wait <= 0]
        return ready[k % len(ready)] if ready else None

    def _deliver(self, k: int) -> None:
        index = self._pick(k)
        for entry in self.flight:
            entry[1] -= 1
        if index is None:
            return
        message, _ = self.flight.pop(index)
        self.receive(message)

    def receive(self, message: Message) -> None:
        if self.groups and self.groups.get(message.src) != self.groups.get(message.dst):
            return  # partitioned: lost
        replica = self.replicas[message.dst]
        if message.kind == "pull":
            missing = replica.missing(decode_context(message.payload))
            self._send(message.dst, message.src, "answer", encode_delta(missing))
            return
        try:
            added = replica.merge(decode_delta(message.payload))
        except ReplicaError as exc:
            raise AssertionError(f"slot {message.dst} refused a {message.kind}: {exc}") from None
        if added:
            self._changed(message.dst)

    def _pull(self, a: int, b: int) -> None:
        if a != b:
            self._send(a, b, "pull", encode_context(self.replicas[a].context()))

    def _dup(self, k: int) -> None:
        if self.flight:
            message, wait = self.flight[k % len(self.flight)]
            self.flight.append([message, wait])

    def _drop(self, k: int) -> None:
        if self.flight:
            self.flight.pop(k % len(self.flight))

    def _hold(self, k: int, n: int) -> None:
        if self.flight:
            self.flight[k % len(self.flight)][1] += n

    def _partition(self, groups: tuple[tuple[int, ...], ...]) -> None:
        self.groups = {slot: g for g, members in enumerate(groups) for slot in members}

    def _heal(self) -> None:
        self.groups = {}

    def _restart(self, slot: int) -> None:
        self.generation[slot] += 1
        self.replicas[slot] = Replica(self._name(slot))
        self.own_orders[slot] = []
        self._changed(slot)

    # -- quiescence -----------------------------------------------------------
    def quiesce(self) -> None:
        self._heal()
        while self.flight:
            message, _ = self.flight.pop(0)
            self.receive(message)
        n = self.schedule.replicas
        for _ in range(n + 2):
            changed = False
            for a in range(n):
                for b in range(n):
                    if a == b:
                        continue
                    missing = self.replicas[b].missing(self.replicas[a].context())
                    if len(missing):
                        try:
                            self.replicas[a].merge(decode_delta(encode_delta(missing)))
                        except ReplicaError as exc:
                            raise AssertionError(f"slot {a} refused a pull answer: {exc}") \
                                from None
                        self._changed(a)
                        changed = True
            if not changed:
                return
        raise AssertionError("anti-entropy did not settle")
