"""The simulated network: replicas of the core exchanging signed feeds, as nodes do.

Theory of operation
-------------------
A ``Schedule`` is the whole of a run: how many replica slots, each slot's
clock offset, which slots are Byzantine (and how), and a list of actions.
Executing it is deterministic (keys come from ``Signer.from_name``), so a
schedule is its own reproducer (and the reducer can cut it down). Actions:

    ("place", slot, type, side, qty, price)   an order at the slot's replica
    ("cancel", slot, k)                       cancel its k-th own order (mod count)
    ("time", ms)                              simulated wall time passes
    ("deliver", k)                            deliver in-flight message k (mod count)
    ("pull", a, b)                            a sends b a pull (tips, claims, skips)
    ("dup", k) / ("drop", k)                  duplicate / lose in-flight message k
    ("hold", k, n)                            message k waits n more deliveries
    ("partition", groups) / ("heal",)         split the slots into groups / rejoin
    ("restart", slot)                         the slot vanishes; a new id (and key) takes its place
    ("compact", slot)                         the slot drops its settled history below F
    ("leave", slot)                           the slot hands over its events, leaves, rejoins anew
    ("evict", slot, k)                        the slot evicts the k-th vanished replica
    ("forge", slot, k)                        a forger sends forgery number k (see below)
    ("lie", slot)                             a liar signs a claim far ahead of its clock
    ("equivocate", slot, k)                   an equivocator forks its feed (k splits the slots)

Every slot is a ``Replica`` behind a ``Door`` (door.py), as a node is. A
local event is sealed into a block and pushed to every other slot as a
blocks message; a pull carries the requester's tips, signed claims, skip
lists for the origins its last answers suspected of a fork, and its
convictions; the answer carries the blocks the requester lacks, the fork
evidence it asked for, the proofs it lacks and new suspects. All payloads go
through the real codec. Messages between slots in different partition
groups are lost on delivery.

Byzantine slots (``Schedule.byzantine``: (slot, kind) pairs; slot 0, the
founder, is always correct) keep a correct replica and door of their own,
and also:

* ``forger``: sends blocks under another member's id with a wrong
  signature or a tampered body, claims signed with its own key under another
  id, and "proofs" with a forged block or claim; receivers must refuse them
  (a DoorError is allowed only for messages of Byzantine senders).
* ``liar``: from its ``lie`` on, signs claims with a clock far ahead, then
  goes on stamping events below it: a broken promise.
* ``equivocator``: at ``equivocate`` seals two versions of its next order
  (same seq, different quantity) and keeps two feeds from then on, one for
  each half of the other slots.

``quiesce`` heals the network, delivers what is left, evicts the vanished
(and the convicted with orders resting), lets time pass and runs pull rounds
between every pair until nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from crdtbook.aworset import AWORSet
from crdtbook.codec import CodecError
from crdtbook.door import Door, DoorError
from crdtbook.events import make_order
from crdtbook.feed import Block, SignedClaim, claim_message, head_message, link
from crdtbook.feedwire import (
    decode_blocks_message,
    decode_pull_message,
    encode_blocks,
    encode_body,
    encode_pull,
)
from crdtbook.keys import Signer
from crdtbook.keys import verify as _verify
from crdtbook.proofs import broken_promise, fork
from crdtbook.replica import Replica, ReplicaError

LIE_AHEAD = 60_000 << 16  # a liar's claims run a minute ahead of its clock
KINDS = ("forger", "liar", "equivocator")


class Schedule(NamedTuple):
    replicas: int
    offsets: tuple[int, ...]  # each slot's wall-clock offset, ms
    actions: tuple[tuple, ...]
    byzantine: tuple[tuple[int, str], ...] = ()  # (slot, kind), slot 0 never


class Message(NamedTuple):
    src: int
    dst: int
    kind: str  # push | pull | answer
    payload: bytes
    sender: str  # the replica id of the source slot when it was sent


class Shadow(NamedTuple):
    """An equivocator's second feed: the slots that get it, and its tip."""

    slots: frozenset
    last: int
    hash: bytes


def _memo_door(memo: dict) -> type:
    """A Door class whose signature checks are memoized for one run (keys.verify is pure:
    every replica still checks every signature, the simulator just pays once)."""

    def verify(public, message, signature):
        key = (public, message, signature)
        known = memo.get(key)
        if known is None:
            known = memo[key] = _verify(public, message, signature)
        return known

    return type("SimDoor", (Door,), {"_verify": staticmethod(verify)})


@dataclass
class Sim:
    schedule: Schedule
    replicas: list[Replica] = field(default_factory=list)
    doors: list[Door] = field(default_factory=list)
    signers: list[Signer] = field(default_factory=list)
    generation: list[int] = field(default_factory=list)
    own_orders: list[list[str]] = field(default_factory=list)
    flight: list[list] = field(default_factory=list)  # [Message, wait]
    groups: dict[int, int] = field(default_factory=dict)  # slot -> partition group
    vanished: list[str] = field(default_factory=list)  # ids replaced by a restart or leave
    left: set[str] = field(default_factory=set)  # of those, the ones that left gracefully
    now: int = 1_700_000_000_000
    events_created: int = 0
    created: list = field(default_factory=list)  # every event any replica created
    forged: list = field(default_factory=list)  # events only a forgery carried
    observers: list = field(default_factory=list)  # called after every change
    kinds: dict[int, str] = field(default_factory=dict)  # byzantine slot -> kind
    suspects: list[set] = field(default_factory=list)  # per slot: origins to send skips for
    lies: dict[int, SignedClaim] = field(default_factory=dict)  # liar slot -> its lie
    shadows: dict[int, Shadow] = field(default_factory=dict)  # equivocator slot -> feed B
    refused: int = 0  # messages of Byzantine senders refused whole
    evicted_convicted: set = field(default_factory=set)

    def __post_init__(self) -> None:
        n = self.schedule.replicas
        self.kinds = {slot: kind for slot, kind in self.schedule.byzantine if 0 < slot < n}
        self._door = _memo_door({})
        self._decoded: dict[bytes, object] = {}
        self.generation = [0] * n
        self.signers = [Signer.from_name(self._name(i)) for i in range(n)]
        self.replicas = [Replica(s.id) for s in self.signers]
        self.doors = [self._door(r, s.sign)
                      for r, s in zip(self.replicas, self.signers, strict=True)]
        self.suspects = [set() for _ in range(n)]
        self.own_orders = [[] for _ in range(n)]
        founder = self.replicas[0]
        genesis = [founder.bootstrap(self._wall(0), self.signers[0].public)]
        genesis += [founder.join(s.id, self._wall(0), s.public) for s in self.signers[1:]]
        events = sorted(e for delta in genesis for _, _, e in delta.entries())
        block = self.doors[0].seal(events)
        for door in self.doors[1:]:
            door.admit([block])
        self.created.extend(events)

    def _name(self, slot: int) -> str:
        return f"s{slot}g{self.generation[slot]}"

    def correct(self, slot: int) -> bool:
        return slot not in self.kinds

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

    def _claims(self, slot: int) -> list[SignedClaim]:
        replica, door = self.replicas[slot], self.doors[slot]
        claims = door.outgoing_claims(replica.claim(self._wall(slot)))
        lie = self.lies.get(slot)
        if lie is not None:
            claims = [lie, *claims[1:]]
        return claims

    def _send(self, src: int, dst: int, kind: str, payload: bytes) -> None:
        self.flight.append([Message(src, dst, kind, payload, self.replicas[src].id), 0])

    def _broadcast(self, src: int, delta: AWORSet) -> None:
        events = sorted(e for _, _, e in delta.entries())
        self.created.extend(events)
        block = self.doors[src].seal(events)
        claims = self._claims(src)
        payload = encode_blocks([block], claims)
        shadow = self.shadows.get(src)
        if shadow is not None:  # an equivocator seals the same events on its feed B too
            other = self._shadow_seal(src, shadow, block.body, events)
            shadowed = encode_blocks([other], claims)
        for dst in range(self.schedule.replicas):
            if dst != src:
                self._send(src, dst, "push",
                           shadowed if shadow is not None and dst in shadow.slots else payload)
        self.events_created += 1
        self._changed(src)

    def _shadow_seal(self, src: int, shadow: Shadow, body: bytes, events: list) -> Block:
        signer = self.signers[src]
        hash_ = link(shadow.hash, body)
        last = events[-1].seq
        sig = signer.sign(head_message(signer.id, last, hash_))
        self.shadows[src] = shadow._replace(last=last, hash=hash_)
        return Block(signer.id, events[0].seq, last, body, sig, tuple(events))

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
            payload = self._answer(message.dst, message.payload, message.sender)
            self._send(message.dst, message.src, "answer", payload)
            return
        self._take(message.dst, message.payload, message.src)

    def _pull_request(self, slot: int) -> bytes:
        door = self.doors[slot]
        return encode_pull(self.replicas[slot].context(), door.pull_tips().items(),
                           self._claims(slot), skips=door.skips(self.suspects[slot]),
                           convicted=door.convictions())

    def _answer(self, slot: int, request: bytes, requester: str) -> bytes:
        """Answer a pull: the blocks the requester lacks, fork evidence, proofs."""
        replica, door = self.replicas[slot], self.doors[slot]
        pull = decode_pull_message(request)
        self._admit(slot, [], pull.claims, sender=None)
        replica.observe_ack(requester, pull.context)
        answer = door.answer(pull.tips)
        return encode_blocks(answer.blocks, self._claims(slot),
                             proofs=door.proofs_for(pull.convicted),
                             forks=door.fork_answer(pull.skips), suspects=answer.suspects)

    def _decode(self, payload: bytes):
        """decode_blocks_message, once per distinct payload (a push goes to every slot;
        decoding is pure and the door never changes what it is given)."""
        message = self._decoded.get(payload)
        if message is None:
            message = self._decoded[payload] = decode_blocks_message(payload)
        return message

    def _take(self, slot: int, payload: bytes, src: int) -> None:
        try:
            message = self._decode(payload)
        except CodecError:
            assert not self.correct(src), f"slot {slot} could not decode a message of {src}"
            self.refused += 1
            return
        self._admit(slot, message.blocks, message.claims, src, message.proofs, message.forks)
        convicted = self.replicas[slot].membership.convicted
        me = self.replicas[slot].id
        self.suspects[slot] = {r for r in message.suspects if r not in convicted and r != me}

    def _admit(self, slot: int, blocks, claims, sender: int | None, proofs=(), forks=()) -> None:
        try:
            self.doors[slot].admit(blocks, claims, proofs=proofs, forks=forks)
        except DoorError as exc:
            # Only a Byzantine sender's message may fail verification; a Byzantine
            # slot's own replica may also learn that it is proven to equivocate.
            assert (sender is not None and not self.correct(sender)) \
                or not self.correct(slot), f"slot {slot} refused a message of {sender}: {exc}"
            self.refused += 1
            return
        self._changed(slot)

    def _pull(self, a: int, b: int) -> None:
        if a != b:
            self._send(a, b, "pull", self._pull_request(a))

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
        """Every event the slot holds is also held by another slot (the same version),
        and every proof it holds too.

        The simulated nodes keep no disk: a crash of the last holder loses
        events, and no protocol can keep promises about lost data, so the
        fuzzer only crashes or retires a slot whose events survive elsewhere.
        """
        others = [r.state for i, r in enumerate(self.replicas) if i != slot]
        if not all(any(state.get(r, s) == event for state in others)  # that very version
                   for r, s, event in self.replicas[slot].state.entries()):
            return False
        # and every proof it holds: a proof only it held would leave with it, and an
        # equivocator would never be convicted for fills it reported final
        doors = [d for i, d in enumerate(self.doors) if i != slot]
        return all(any(origin in d.proofs and d.proofs[origin].fault <= proof.fault
                       for d in doors)
                   for origin, proof in self.doors[slot].proofs.items())

    def _sponsor(self, slot: int) -> int | None:
        """The lowest correct member but ``slot``: who admits the slot's next replica.

        Only a correct one: membership events past a conviction cut are not
        handled yet (see detection.py, "Not handled yet")."""
        for sponsor in range(self.schedule.replicas):
            candidate = self.replicas[sponsor]
            if sponsor != slot and self.correct(sponsor) and candidate.is_member(candidate.id):
                return sponsor
        return None

    def _restart(self, slot: int, graceful: bool = False) -> None:
        if not graceful and not self._replicated(slot) or self._sponsor(slot) is None:
            return
        old = self.replicas[slot]
        # It may have been admitted somewhere, and a leave can be lost like any
        # message: if it is still a member at the end, the operator evicts it.
        self.vanished.append(old.id)
        self.generation[slot] += 1
        signer = self.signers[slot] = Signer.from_name(self._name(slot))
        self.replicas[slot] = Replica(signer.id)
        self.doors[slot] = self._door(self.replicas[slot], signer.sign)
        self.own_orders[slot] = []
        self.suspects[slot] = set()
        self.lies.pop(slot, None)
        self.shadows.pop(slot, None)
        self._changed(slot)
        sponsor = self._sponsor(slot)
        self._broadcast(sponsor, self.replicas[sponsor].join(signer.id, self._wall(sponsor),
                                                             signer.public))

    def _leave(self, slot: int) -> None:
        """A graceful leave: the slot first hands its events to the slots it can reach
        (so that it usually may go, resting orders and all), then leaves and rejoins,
        catching up at once from the slots it can reach (its join included)."""
        replica = self.replicas[slot]
        reachable = [other for other in range(self.schedule.replicas)
                     if other != slot and self.groups.get(other) == self.groups.get(slot)]
        if self._sponsor(slot) is None:
            return  # nobody correct to admit its next replica: it stays
        # It first pulls from them (as `crdtbook leave` does): where its version of a
        # feed differs from theirs, it finds the fork and holds the proof; their pulls
        # then bring them its events and proofs. Without it, a version only the leaver
        # held (fills it reported final on it) would vanish with no conviction.
        for other in reachable:
            self._pull_now(slot, other)
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
        """A pull from a to b, answered at once (no network delay); a suspected fork is
        chased at once too (the skip list, then the evidence: two more exchanges)."""
        for _ in range(3):
            payload = self._answer(b, self._pull_request(a), self.replicas[a].id)
            self._take(a, payload, b)
            if not self.suspects[a]:
                return

    def _compact(self, slot: int) -> None:
        self._changed(slot)  # observers look at what is final before it is dropped
        self.replicas[slot].compact()

    # -- Byzantine slots ---------------------------------------------------------
    def _forge(self, slot: int, k: int) -> None:
        """A forger sends one forgery (k picks the victim and the kind) to every slot."""
        if self.kinds.get(slot) != "forger":
            return
        door, me = self.doors[slot], self.replicas[slot]
        victims = [r for r in me.members() if r != me.id and door.tip(r).last]
        if not victims:
            return
        victim = victims[k % len(victims)]
        tip = door.tip(victim)
        real = door.block_ending(victim, tip.last).block
        fake = make_order(me.clock.tick(self._wall(slot)), victim, tip.last + 1, "sell",
                          "limit", 95 * 10**8, 10**8, "forged")
        blocks, claims, proofs = [], self._claims(slot), []
        flavour = (k // 7) % 5
        if flavour == 0:  # the victim's next block, signed with the forger's key
            body = encode_body([fake])
            sig = self.signers[slot].sign(head_message(victim, fake.seq, link(tip.hash, body)))
            blocks.append(Block(victim, fake.seq, fake.seq, body, sig, (fake,)))
            self.forged.append(fake)
        elif flavour == 1:  # a real block with a tampered body, its signature kept
            events = tuple(e._replace(clock=e.clock + 1) for e in real.events)
            blocks.append(real._replace(body=encode_body(events), events=events))
            self.forged.extend(events)
        elif flavour == 2:  # a claim under the victim's id, far ahead
            fake_claim = SignedClaim(victim, tip.last, fake.clock + LIE_AHEAD, self.signers[
                slot].sign(claim_message(victim, tip.last, fake.clock + LIE_AHEAD)))
            claims = [*claims, fake_claim]
        elif flavour == 3:  # a "fork" whose second block is a forgery
            twin = fake._replace(seq=real.first)
            other = Block(victim, real.first, real.first, encode_body([twin]), real.sig, (twin,))
            proofs.append(fork(door.block_ending(victim, tip.last).prev, real, other))
        else:  # a "broken promise" with a forged claim
            entry = door.block_ending(victim, tip.last)
            lie = SignedClaim(victim, real.first - 1, real.events[-1].clock + 1,
                              self.signers[slot].sign(claim_message(
                                  victim, real.first - 1, real.events[-1].clock + 1)))
            proofs.append(broken_promise(lie, entry.prev, real))
        payload = encode_blocks(blocks, claims, proofs=proofs)
        for dst in range(self.schedule.replicas):
            if dst != slot:
                self._send(slot, dst, "push", payload)

    def _lie(self, slot: int) -> None:
        """A liar promises no new event for a minute ahead, and keeps trading."""
        if self.kinds.get(slot) != "liar" or slot in self.lies:
            return
        replica, signer = self.replicas[slot], self.signers[slot]
        claim = replica.claim(self._wall(slot))
        clock = claim.clock + LIE_AHEAD
        self.lies[slot] = SignedClaim(signer.id, claim.seq, clock,
                                      signer.sign(claim_message(signer.id, claim.seq, clock)))

    def _equivocate(self, slot: int, k: int) -> None:
        """An equivocator places an order and seals two versions of it: one for the
        slots of one half, one (twice the quantity) for the rest; then keeps two feeds."""
        if self.kinds.get(slot) != "equivocator" or slot in self.shadows:
            return
        replica, door = self.replicas[slot], self.doors[slot]
        if not replica.is_member(replica.id):
            return
        others = [d for d in range(self.schedule.replicas) if d != slot]
        half = frozenset(d for i, d in enumerate(others) if (i + k) % 2)
        tip = door.tip(replica.id)
        self.shadows[slot] = Shadow(half, tip.last, tip.hash)
        placed = replica.place("buy" if k % 2 else "sell", "3", str(98 + k % 5), "limit",
                               now_ms=self._wall(slot))
        self.own_orders[slot].append(str(placed.order.dot))
        (event,) = [e for _, _, e in placed.delta.entries()]
        twin = event._replace(qty=event.qty * 2)
        self.created.append(twin)
        shadow = self.shadows[slot]
        block_b = self._shadow_seal(slot, shadow, encode_body([twin]), [twin])
        self.created.append(event)
        block_a = door.seal([event])
        claims = self._claims(slot)
        for dst in others:
            self._send(slot, dst, "push",
                       encode_blocks([block_b if dst in half else block_a], claims))
        self.events_created += 1
        self._changed(slot)

    # -- quiescence -----------------------------------------------------------
    def quiesce(self) -> None:
        self._heal()
        while self.flight:
            message, _ = self.flight.pop(0)
            self.receive(message)
        self._sync()
        for target in self.vanished:  # an operator evicts every vanished replica
            for slot, replica in enumerate(self.replicas):
                if self.correct(slot) and replica.is_member(replica.id) \
                        and target in replica.members():
                    self._broadcast(slot, replica.evict(target, self._wall(slot)))
                    break
        self.flight.clear()  # the evictions reach everyone through the pulls below
        self._sync()
        self._evict_convicted()
        self.flight.clear()
        self.now += 1_000
        self._sync()
        self._sync()  # once more, so that every claim is counted everywhere

    def _evict_convicted(self) -> None:
        """The lowest correct member evicts each convicted replica with orders resting
        (a conviction has no position; the evict cancels them at its own)."""
        for slot, replica in enumerate(self.replicas):
            if self.correct(slot) and replica.is_member(replica.id):
                for target in replica.convicted_resting():
                    if target not in self.evicted_convicted:
                        self.evicted_convicted.add(target)
                        self._broadcast(slot, replica.evict_convicted(target, self._wall(slot)))
                return

    def _state(self, slot: int) -> tuple:
        door = self.doors[slot]
        return (self.replicas[slot].event_count(), door.convictions(), sorted(door.tips.items()),
                sorted(self.suspects[slot]))

    def _sync(self) -> None:
        n = self.schedule.replicas
        for _ in range(n + 3):
            changed = False
            for a in range(n):
                for b in range(n):
                    if a == b:
                        continue
                    before = self._state(a)
                    self._pull_now(a, b)
                    # a Byzantine slot's own state may never settle: it is not checked
                    changed |= self.correct(a) and self._state(a) != before
            if not changed:
                return
        raise AssertionError("anti-entropy did not settle")
