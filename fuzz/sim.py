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
    ("restart", slot)                         the slot vanishes; a new id takes its place
    ("compact", slot)                         the slot drops its settled history below F
    ("leave", slot)                           the slot hands over its events, leaves, rejoins anew
    ("evict", slot, k)                        the slot evicts the k-th vanished replica

Membership: slot 0 starts the cluster and admits the others before the first
action; a restarted or rejoining slot is admitted by the lowest live slot
and places no orders until it holds its own join. Every message carries the
sender's claims (finality), so pulls are also heartbeats.

Every local event is pushed to every other slot as an encoded delta; a pull
request carries an encoded context and its answer the encoded missing delta,
or a snapshot when what is missing was compacted.
Messages between slots in different partition groups are lost on delivery.
All payloads go through the real codec.

``quiesce`` heals the network, delivers what is left, evicts the vanished,
lets time pass and runs pull rounds between every pair until nothing
changes; then every replica should hold the same events, and all fills
should be final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from crdtbook.aworset import AWORSet
from crdtbook.codec import (
    decode_context_claims,
    decode_delta_claims,
    decode_snapshot,
    encode_context,
    encode_delta,
    encode_snapshot,
)
from crdtbook.replica import Replica, ReplicaError


class Schedule(NamedTuple):
    replicas: int
    offsets: tuple[int, ...]  # each slot's wall-clock offset, ms
    actions: tuple[tuple, ...]


class Message(NamedTuple):
    src: int
    dst: int
    kind: str  # push | pull | answer | snapshot
    payload: bytes
    sender: str  # the replica id of the source slot when it was sent


@dataclass
class Sim:
    schedule: Schedule
    replicas: list[Replica] = field(default_factory=list)
    generation: list[int] = field(default_factory=list)
    own_orders: list[list[str]] = field(default_factory=list)
    flight: list[list] = field(default_factory=list)  # [Message, wait]
    groups: dict[int, int] = field(default_factory=dict)  # slot -> partition group
    vanished: list[str] = field(default_factory=list)  # ids replaced by a restart or leave
    left: set[str] = field(default_factory=set)  # of those, the ones that left gracefully
    now: int = 1_700_000_000_000
    events_created: int = 0
    created: list = field(default_factory=list)  # every event any replica created
    observers: list = field(default_factory=list)  # called after every change

    def __post_init__(self) -> None:
        n = self.schedule.replicas
        self.generation = [0] * n
        self.replicas = [Replica(self._name(i)) for i in range(n)]
        self.own_orders = [[] for _ in range(n)]
        founder = self.replicas[0]
        genesis = [founder.bootstrap(self._wall(0))]
        genesis += [founder.join(r.id, self._wall(0)) for r in self.replicas[1:]]
        for replica in self.replicas[1:]:
            for delta in genesis:
                replica.merge(delta)
        self.created.extend(e for delta in genesis for _, _, e in delta.entries())

    def _name(self, slot: int) -> str:
        return f"s{slot}g{self.generation[slot]}"

    # -- running -----------------------------------------------------------
    def run(self) -> None:
        for action in self.schedule.actions:
            self.step(action)

    def step(self, action: tuple) -> None:
        getattr(self, "_" + action[0])(*action[1:])

    def _changed(self, slot: int) -> None:
        for observe in self.observers:
            observe(self, slot)

    def _wall(self, slot: int) -> int:
        return self.now + self.schedule.offsets[slot]

    def _claims(self, slot: int):
        replica = self.replicas[slot]
        replica.claim(self._wall(slot))
        return replica.claims()

    def _send(self, src: int, dst: int, kind: str, payload: bytes) -> None:
        self.flight.append([Message(src, dst, kind, payload, self.replicas[src].id), 0])

    def _broadcast(self, src: int, delta: AWORSet) -> None:
        self.created.extend(e for _, _, e in delta.entries())
        payload = encode_delta(delta, self._claims(src))
        for dst in range(self.schedule.replicas):
            if dst != src:
                self._send(src, dst, "push", payload)
        self.events_created += 1
        self._changed(src)

    def _place(self, slot: int, kind: str, side: str, qty: int, price: int) -> None:
        replica = self.replicas[slot]
        if not replica.is_member(replica.id):
            return  # still waiting for its join
        placed = replica.place(side, str(qty), None if kind == "market" else str(price), kind,
                               now_ms=self._wall(slot))
        self.own_orders[slot].append(str(placed.order.dot))
        self._broadcast(slot, placed.delta)

    def _cancel(self, slot: int, k: int) -> None:
        mine = self.own_orders[slot]
        if not mine:
            return
        try:
            cancelled = self.replicas[slot].cancel(mine[k % len(mine)], now_ms=self._wall(slot))
        except ReplicaError:  # settled, final and compacted away: nothing to cancel
            return
        self._broadcast(slot, cancelled.delta)

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
        if message.kind == "pull":
            kind, payload = self._answer(message.dst, message.payload, message.sender)
            self._send(message.dst, message.src, kind, payload)
            return
        self._take(message.dst, message.kind, message.payload)

    def _answer(self, slot: int, request: bytes, requester: str) -> tuple[str, bytes]:
        """Answer a pull: the missing delta, or a snapshot if some of it was compacted."""
        replica = self.replicas[slot]
        context, claims = decode_context_claims(request)
        replica.observe_claims(claims)
        replica.observe_ack(requester, context)
        missing = replica.missing(context)
        if replica.needs_snapshot(missing):
            return "snapshot", encode_snapshot(replica.snapshot_state(), self._claims(slot))
        return "answer", encode_delta(missing, self._claims(slot))

    def _take(self, slot: int, kind: str, payload: bytes) -> None:
        if kind == "snapshot":
            snapshot, claims = decode_snapshot(payload)
            self.replicas[slot].observe_claims(claims)
            try:
                self.replicas[slot].install(snapshot)
            except ReplicaError:
                return  # the sender is behind what this slot compacted: ask another
            self._changed(slot)
            return
        delta, claims = decode_delta_claims(payload)
        self._merge(slot, delta, claims, kind)

    def _merge(self, slot: int, delta: AWORSet, claims, what: str) -> None:
        replica = self.replicas[slot]
        replica.observe_claims(claims)
        try:
            replica.merge(delta)
        except ReplicaError as exc:
            raise AssertionError(f"slot {slot} refused a {what}: {exc}") from None
        self._changed(slot)

    def _pull(self, a: int, b: int) -> None:
        if a != b:
            self._send(a, b, "pull", encode_context(self.replicas[a].context(), self._claims(a)))

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

    def _replicated(self, slot: int) -> bool:
        """Every event the slot holds is also held by another slot.

        Nodes keep no disk yet: a crash of the last holder loses events, and no
        protocol can keep promises about lost data, so the fuzzer only crashes
        or retires a slot whose events survive elsewhere.
        """
        others = [r.state.context for i, r in enumerate(self.replicas) if i != slot]
        return all(any(cc.has(r, s) for cc in others)
                   for r, s, _ in self.replicas[slot].state.entries())

    def _restart(self, slot: int, graceful: bool = False) -> None:
        if not graceful and not self._replicated(slot):
            return
        old = self.replicas[slot]
        # It may have been admitted somewhere, and a leave can be lost like any
        # message: if it is still a member at the end, the operator evicts it.
        self.vanished.append(old.id)
        self.generation[slot] += 1
        self.replicas[slot] = Replica(self._name(slot))
        self.own_orders[slot] = []
        self._changed(slot)
        for sponsor in range(self.schedule.replicas):
            candidate = self.replicas[sponsor]
            if sponsor != slot and candidate.is_member(candidate.id):
                self._broadcast(sponsor, candidate.join(self.replicas[slot].id,
                                                        self._wall(sponsor)))
                return

    def _leave(self, slot: int) -> None:
        """A graceful leave: the slot first hands its events to the slots it can reach
        (so that it usually may go, resting orders and all), then leaves and rejoins,
        catching up at once from the slots it can reach (its join included)."""
        replica = self.replicas[slot]
        reachable = [other for other in range(self.schedule.replicas)
                     if other != slot and self.groups.get(other) == self.groups.get(slot)]
        for other in reachable:
            self._pull_now(other, slot)
        if not self._replicated(slot):
            return
        if replica.is_member(replica.id):
            self._broadcast(slot, replica.leave(self._wall(slot)))
            self.left.add(replica.id)
        self._restart(slot, graceful=True)
        for other in reachable:
            self._pull_now(slot, other)

    def _evict(self, slot: int, k: int) -> None:
        """An operator evicts a vanished replica, as `crdtbook evict` does.

        The evicting node first pulls from every live node, so that the last
        seq it names is the highest any live node holds; eviction is refused
        during a partition (the documented trade-off: events of the evicted
        replica held only by unreachable nodes would be rejected, even if those
        nodes had reported their fills final).
        """
        replica = self.replicas[slot]
        if self.groups or not self.vanished or not replica.is_member(replica.id):
            return
        target = self.vanished[k % len(self.vanished)]
        if target not in replica.members() or target in self.left:
            return
        # An operator evicts a replica that died a while ago: whatever it sent
        # before dying has arrived by then.
        for entry in [e for e in self.flight if e[0].sender == target]:
            self.flight.remove(entry)
            self.receive(entry[0])
        for other in range(self.schedule.replicas):
            if other != slot:
                self._pull_now(slot, other)
        if target in replica.members():
            self._broadcast(slot, replica.evict(target, self._wall(slot)))

    def _pull_now(self, a: int, b: int) -> None:
        """A pull from a to b, answered at once (no network delay)."""
        request = encode_context(self.replicas[a].context(), self._claims(a))
        kind, payload = self._answer(b, request, self.replicas[a].id)
        self._take(a, kind, payload)

    def _compact(self, slot: int) -> None:
        self._changed(slot)  # observers look at what is final before it is dropped
        self.replicas[slot].compact()

    # -- quiescence -----------------------------------------------------------
    def quiesce(self) -> None:
        self._heal()
        while self.flight:
            message, _ = self.flight.pop(0)
            self.receive(message)
        self._sync()
        for target in self.vanished:  # an operator evicts every vanished replica
            for slot, replica in enumerate(self.replicas):
                if replica.is_member(replica.id) and target in replica.members():
                    self._broadcast(slot, replica.evict(target, self._wall(slot)))
                    break
        self.flight.clear()  # the evictions reach everyone through the pulls below
        self.now += 1_000
        self._sync()
        self._sync()  # once more, so that every claim is counted everywhere

    def _sync(self) -> None:
        n = self.schedule.replicas
        for _ in range(n + 2):
            changed = False
            for a in range(n):
                for b in range(n):
                    if a == b:
                        continue
                    before = self.replicas[a].event_count()
                    self._pull_now(a, b)
                    changed |= self.replicas[a].event_count() != before
            if not changed:
                return
        raise AssertionError("anti-entropy did not settle")
