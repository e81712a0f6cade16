"""Merging: how events enter a replica, and which of them the engine sees.

Theory of operation
-------------------
``Merging`` is the base class of ``Replica`` (replica.py): the methods that
join deltas into the set and admit events to the engine. It owns no state of
its own; it works on the replica's attributes (``state``, ``engine``,
``clock``, ``membership`` and the plain ``_cutoff``/``_final`` the hot path
reads), set up by ``Replica.__init__``.

An event enters the set when merged; it reaches the engine once its origin's
seqs before it are all held (contiguity), after two checks along its
origin's seq chain: clocks strictly increase (the first that does not, and
every later event of that origin, is rejected), and nothing past the
origin's cutoff (a leave or evict) counts. A valid leave or evict lowers its
target's cutoff and rejects the target's later events, replaying from the
earliest of them if they were already matched.

Rules this module keeps
-----------------------
* One event's admission depends only on the set, never on arrival order.
* The in-order path of ``_merge_one`` (and its copy in ``merge_event``) reads
  plain attributes only: it is the throughput of a live node.
* Every event held has been folded into ``clock`` (the hybrid clock), and the
  engine applies only events held: so an event whose clock is past
  ``clock.last`` sorts after everything in the engine's log, and the
  in-order paths append it without comparing it with the log's last event.
* Deltas no honest peer sends (events under this replica's own id that it
  did not make, removals) are refused before anything changes.
* ``_merge_into_empty`` (a replay into a replica that has seen nothing)
  takes only deltas for which the general path could reject, remove or
  defer nothing, and declines the rest having changed nothing.
  ``_merge_proven`` takes a decoded delta's proof of the same only while
  the delta's store still equals what its decode proved it of.
"""

from __future__ import annotations

from itertools import islice
from operator import itemgetter, lt

from .aworset import AWORSet
from .engine import REASON_EQUIVOCATION, member_reason
from .events import JOIN, MEMBER, Cancel, Member, Order

REASON_CLOCK = "clock does not increase along its replica's seq"
REASON_CLOCK_AFTER = "an earlier event of its replica was rejected for its clock"
REASON_RETIRED = "its replica had left or was evicted before this event"


class ReplicaError(ValueError):
    """A local request the replica refuses (unknown order, not ours, bad field)."""


class Merging:
    # -- replication ---------------------------------------------------------
    def merge(self, delta: AWORSet) -> int:
        """Join a delta (or a whole state) from anywhere; update book and fills.

        Returns how many events were new here (0 for a duplicate delivery).
        Raises ReplicaError, changing nothing, if the delta speaks for dots of
        this replica's own id that it never minted (only a forger or a restarted
        node reusing its id could send those; both would mint duplicate dots).
        """
        if len(delta.store) == 1:
            single = _single_event(delta)
            if single is not None:  # its context is exactly its own dot: no removal
                if single[1] == self.id:
                    self._refuse(delta)
                return self._merge_one(single)
        self._refuse(delta)
        # _refuse checked that the delta carries every dot its context covers:
        # it removes nothing, so the join may skip looking for removals.
        if not self.state.context.vv and not self.state.context.cloud:
            added = self._merge_into_empty(delta)
            if added is not None:
                return added
        return self._merge_general(delta, additive=True)

    def merge_blocks(self, blocks) -> int:
        """``merge`` of the delta holding every event of ``blocks`` (the door's
        verified blocks: each ``(replica, first, last, ..., events)``, the
        events of one origin's blocks in seq order), without building it.

        A peer's push is a few blocks of a hundred events that each continue
        their origin's run held here. Building the delta (a dict entry and a
        context call per event) and joining it (a loop per event, then the
        context's compaction, one step per seq) cost a node's peer path about
        a fifth of its merge; here each origin's events are checked to be
        exactly its next seqs, contiguous after what is held (then every one
        is new, none replaces or removes anything), and go into the store in
        one C call. Anything else (an own-id event, an origin with a gap or a
        cloud here, blocks that do not chain, a replica that holds nothing
        yet) builds the delta and takes ``merge``, so the
        result is ``merge``'s in every case, and so are the refusals.
        """
        runs: dict[str, list] = {}
        for block in blocks:
            run = runs.get(block[0])
            if run is None:
                # a list to extend: a quiet origin's run is thousands of one-event
                # blocks, and growing a tuple by concatenation copies it per block
                runs[block[0]] = [block[1], block[2], list(block[5])]
            elif run[1] + 1 == block[1]:
                run[1] = block[2]
                run[2].extend(block[5])
            else:
                return self._merge_blocks_delta(blocks)
        state = self.state
        cc = state.context
        vv, cloud = cc.vv, cc.cloud
        me = self.id
        if not vv or cloud and not cloud.keys().isdisjoint(runs):
            return self._merge_blocks_delta(blocks)
        store = state.store
        total = 0
        for replica, (first, last, events) in runs.items():
            count = last - first + 1
            if (replica == me or vv.get(replica, 0) != first - 1 or len(events) != count
                    or not events):
                return self._merge_blocks_delta(blocks)
            # every event's dot is its place in the run: the replicas all this one,
            # the seqs distinct, first..last (so exactly the run's, in order)
            if (not all(map(replica.__eq__, map(_replica, events)))
                    or list(map(_seq, events)) != list(range(first, last + 1))):
                return self._merge_blocks_delta(blocks)
            total += count
        ordered = sorted(runs)
        added: list = []
        olds = []
        for replica in ordered:  # dot order, as the join reports what it added
            first, last, events = runs[replica]
            seqs = store.get(replica)
            if seqs is None:
                store[replica] = dict(zip(range(first, last + 1), events, strict=True))
            else:
                seqs.update(zip(range(first, last + 1), events, strict=True))
            vv[replica] = last
            olds.append(first - 1)
            added.extend(events)
        self.clock.observe(max(map(_clock, added)))
        self._unhashed.extend(added)
        if self._fresh is not None:
            self._fresh.extend(added)
        self._events_total += total
        ready: list = []
        for replica, old in zip(ordered, olds, strict=True):
            self._check_chain(replica, old, vv[replica], ready)
        self._admit(ready)
        return total

    def _merge_blocks_delta(self, blocks) -> int:
        """``merge_blocks`` the general way: the delta built, then ``merge``."""
        return self.merge(AWORSet.from_entries(
            (e.replica, e.seq, e) for block in blocks for e in block.events))

    def _merge_into_empty(self, delta: AWORSet) -> int | None:
        """``_merge_general`` of an additive delta into a replica that has seen
        nothing (a replay: restart, snapshot, a new node's first pull), in a
        few passes at C speed; None, having changed nothing, for any delta
        it is not sure of, which then takes the general way.

        It takes the delta whose every origin is a run: its seqs exactly
        1..n in ascending order (no gap, no cloud), clocks strictly
        increasing along them, orders and cancels only, every clock past the
        final frontier; and a replica whose engine, chains and cutoffs hold
        nothing either. Then every event is new, nothing is rejected by its
        chain, nothing is removed or replaced, and every event reaches the
        engine: the general path's result, with each event's clock read once
        (for its chain, the hybrid clock and the sort) and no lookups by seq.
        ``tests/test_bulk_paths.py`` holds the two to the same replica.
        """
        state, engine = self.state, self.engine
        if (state.store or engine.log or engine.invalid or self._chain_clock
                or self._poisoned or self._cutoff or delta.context.cloud):
            return None
        vv = delta.context.vv
        store = delta.store
        if len(vv) != len(store):
            return None
        proof = getattr(delta, "proof", None)
        if proof is not None:
            added = self._merge_proven(delta, *proof)
            if added is not None:
                return added
        runs = []
        for replica in sorted(store):
            seqs = store[replica]
            top = vv.get(replica)
            if top is None or len(seqs) != top:
                return None
            # its seqs 1..top, ascending: distinct ints, first 1, last top, equal to
            # their sort (one pass at C speed; a list of the range cost twice that)
            keys = list(seqs)
            if keys and (keys[0] != 1 or keys[-1] != top or keys != sorted(keys)):
                return None
            run = list(seqs.values())
            if not _PLAIN.issuperset(map(type, run)):
                return None  # a membership event (or anything else): the general way
            clocks = list(map(_clock, run))
            if not clocks[0] > self._final or not all(map(lt, clocks, islice(clocks, 1, None))):
                return None
            runs.append((replica, seqs, run, clocks[-1]))
        added: list = []
        for replica, seqs, run, last in runs:
            state.store[replica] = dict(seqs)
            self._chain_clock[replica] = last
            added.extend(run)
        state.context.merge(delta.context)
        if not added:
            return 0
        self.clock.observe(max(last for _, _, _, last in runs))
        self._unhashed.extend(added)
        if self._fresh is not None:
            self._fresh.extend(added)
        self._events_total += len(added)
        # In dot order, so a stable sort by clock puts it in position order (see _admit).
        ready = sorted(added, key=_clock)
        engine.update(ready)
        return len(added)

    def _merge_proven(self, delta: AWORSet, events: tuple, runs: dict) -> int | None:
        """``_merge_into_empty`` of a delta whose decode proved its replay
        (``aworset.InOrderDelta``): ``events`` in position order, each
        origin's seqs 1..n with its clocks rising along them, in ``runs``.
        Declines (None, nothing changed) unless the delta's store still
        equals ``runs``, dict for dict (anyone may have changed it since),
        every origin's run is all its context says and the first clock is
        past F (the decode made orders and cancels only). Then it is the
        checks and the sort of ``_merge_into_empty``, proven once by the
        decode: its result, with ``events`` as the engine's run.
        """
        store, vv = delta.store, delta.context.vv
        if len(runs) != len(store) or not events or not events[0][0] > self._final:
            return None
        ordered = sorted(store)
        for replica in ordered:
            seqs = store[replica]
            run = runs.get(replica)
            if run is None or len(run) != vv.get(replica) or seqs != run:
                return None
        state = self.state
        added: list = []
        for replica in ordered:
            run = runs[replica]
            state.store[replica] = dict(run)
            added.extend(run.values())
            self._chain_clock[replica] = added[-1][0]
        state.context.merge(delta.context)
        self.clock.observe(events[-1][0])
        self._unhashed.extend(added)
        if self._fresh is not None:
            self._fresh.extend(added)
        self._events_total += len(added)
        self.engine.update(list(events))
        return len(added)

    def merge_event(self, event: Order | Cancel | Member) -> int:
        """``merge`` of the delta holding just ``event`` and its dot, without building it.

        The peer path of a live node: ``event`` comes decoded and structurally
        checked (codec.py). Same result, same refusals, same return value.

        The first branch is ``_merge_one``'s in-order branch written out (keep
        the two alike: tests/test_bulk_paths.py holds them to the same state):
        a live node's peer path runs it per event, and the call it saves is a
        tenth of its cost. An order's fields are read by one unpacking, for
        this and for ``Engine.apply_order`` (an event is a tuple subclass,
        which CPython indexes and unpacks the generic way: reading them twice
        cost a tenth more); an origin not yet in the context or the chain
        takes ``_merge_one``'s way.
        """
        if len(event) == 9:  # an order: its fields read once, here and for the engine
            clock, replica, seq, kind, side, type_, price, qty, _ = event
        else:
            clock, replica, seq, kind = event[:4]
            side = None
        if replica == self.id:
            self._refuse(AWORSet.from_entries([(replica, seq, event)]))
        state = self.state
        cc = state.context
        vv = cc.vv
        chain = self._chain_clock
        try:  # subscripts, not get(): an origin new here takes _merge_one's way
            top = vv[replica]
            last = chain[replica]
        except KeyError:
            return self._merge_one(event)
        # the dicts below are most often empty: their truth first, then the lookup
        if seq != top + 1 or kind == MEMBER or (cc.cloud and replica in cc.cloud):
            return self._merge_one(event)
        try:
            state.store[replica][seq] = event
        except KeyError:  # the first event held of its replica
            state.store[replica] = {seq: event}
        vv[replica] = seq
        hybrid = self.clock
        # Past every clock held, so past every event the engine has applied: it
        # goes at the end of the log without comparing it with the log's last.
        newest = clock > hybrid.last
        if newest:
            hybrid.last = clock
        self._unhashed.append(event)
        if self._fresh is not None:
            self._fresh.append(event)
        self._events_total += 1
        engine = self.engine
        if clock <= last or (engine.invalid and replica in engine.invalid) \
                or (self._cutoff and replica in self._cutoff):
            self._check_chain(replica, top, seq, [])
        chain[replica] = clock
        if clock <= self._final:  # see _admit: must never happen
            self.frontier_violations += 1
        if not newest:
            log = engine.log
            if log and event < log[-1]:
                engine.update([event])
                return 1
        if side is None:
            engine.apply_other(event, kind)
        else:
            engine.apply_order(event, replica, seq, side, type_, price, qty)
        return 1

    def _refuse(self, delta: AWORSet) -> None:
        """Raise ReplicaError for the deltas no honest peer sends; check before any change.

        * events under this replica's own id that it never created, or that
          differ from the ones it did (a forger, or a node restarted with a
          reused id: either way duplicate dots);
        * removals: a context covering dots the delta does not carry would
          delete events here. Removal is local compaction below the final
          frontier, never something a peer sends; accepting one would let
          chain checks see different predecessors on different replicas.
        """
        own = self.state.context.vv.get(self.id, 0)
        context = delta.context
        cloud = context.cloud.get(self.id)
        mine = delta.store.get(self.id)
        if (
            context.vv.get(self.id, 0) > own
            or (cloud and max(cloud) > own)
            or (mine and any(self._altered_own(s, e) for s, e in mine.items()))
        ):
            raise ReplicaError(
                f"refusing a delta with events under this replica's own id {self.id!r} "
                "that it did not create"
            )
        carried = sum(len(seqs) for seqs in delta.store.values())
        covered = context.size()
        if covered != carried:
            raise ReplicaError(
                f"refusing a delta whose context covers {covered - carried} dots it does not "
                "carry (a removal); removal is reserved for compaction, not supported yet"
            )

    def _altered_own(self, seq: int, event) -> bool:
        """An event under this replica's id that is not the one it made."""
        held = self.state.get(self.id, seq)
        if held is None:  # never made (seq beyond ours), or compacted away: then fine
            return seq > self.state.context.contiguous(self.id)
        return held != event

    def _merge_general(self, delta: AWORSet, additive: bool = False) -> int:
        """Join any delta; ``additive``: it is known to remove nothing (see AWORSet.merge)."""
        state = self.state
        before = {r: state.context.contiguous(r) for r in delta.context.replicas()}
        if additive and not state.store and not state.context.vv and not state.context.cloud:
            # A replay into a new replica: everything is added, nothing replaced
            # or removed, and no (replica, seq, event) triple is needed.
            added = state.adopt(delta)
            replaced: list = []
            if not added and all(state.context.contiguous(r) == n for r, n in before.items()):
                return 0
        else:
            changes = state.merge(delta, additive)
            if not changes and all(state.context.contiguous(r) == n for r, n in before.items()):
                return 0
            added = list(map(itemgetter(2), changes.added))
            replaced = changes.replaced
        if added:
            self.clock.observe(max(map(_clock, added)))  # the latest clock, at C speed
            self._unhashed.extend(added)
            if self._fresh is not None:
                self._fresh.extend(added)
            self._events_total += len(added)
        if replaced:
            if self._compacted:
                # History is gone, so no rebuild: keep what was held. Only a forger
                # sends two events under one dot.
                for replica, seq, old, _ in replaced:
                    state.store[replica][seq] = old
                self.forged_conflicts += len(replaced)
            else:
                self._digest_sum, self._unhashed = 0, [e for _, _, e in state.entries()]
                self._uncounted = 0
                self._rebuild()
                return len(added)
        ready = []
        for replica, old in before.items():
            new = state.context.contiguous(replica)
            if new > old:
                self._check_chain(replica, old, new, ready)
        self._admit(ready)
        return len(added)

    def _merge_one(self, event: Order | Cancel) -> int:
        """``merge`` for the common delta: one event whose context is its own dot.

        The same join, minus the generality: a fresh dot is stored, its dot
        added to the context, and whatever became contiguous goes to the engine.
        The first branch is the hot path of a live node: the next event of its
        origin, in order.
        """
        if len(event) == 9:  # an order: its fields read once, here and for the engine
            clock, replica, seq, kind, side, type_, price, qty, _ = event
        else:
            clock, replica, seq, kind = event[:4]
            side = None
        state = self.state
        cc = state.context
        vv = cc.vv
        top = vv.get(replica, 0)
        if seq == top + 1 and kind != MEMBER and (not cc.cloud or replica not in cc.cloud):
            try:
                state.store[replica][seq] = event
            except KeyError:  # the first event held of its replica
                state.store[replica] = {seq: event}
            vv[replica] = seq
            hybrid = self.clock
            newest = clock > hybrid.last  # see merge_event
            if newest:
                hybrid.last = clock
            self._unhashed.append(event)
            if self._fresh is not None:
                self._fresh.append(event)
            self._events_total += 1
            engine = self.engine
            chain = self._chain_clock
            if clock <= chain.get(replica, 0) or (engine.invalid and replica in engine.invalid) \
                    or (self._cutoff and replica in self._cutoff):  # as in merge_event
                self._check_chain(replica, top, seq, [])
            chain[replica] = clock
            if clock <= self._final:  # see _admit: must never happen
                self.frontier_violations += 1
            if not newest:
                log = engine.log
                if log and event < log[-1]:
                    engine.update([event])
                    return 1
            if side is None:
                engine.apply_other(event, kind)
            else:
                engine.apply_order(event, replica, seq, side, type_, price, qty)
            return 1
        if cc.has(replica, seq):
            held = state.get(replica, seq)
            if held is None or held == event or held < event:
                return 0
            return self._merge_general(AWORSet.from_entries([(replica, seq, event)]))
        seqs = state.store.get(replica)
        if seqs is None:
            seqs = state.store[replica] = {}
        seqs[seq] = event
        cc.add(replica, seq)
        self.clock.observe(event.clock)
        self._unhashed.append(event)
        if self._fresh is not None:
            self._fresh.append(event)
        self._events_total += 1
        new = cc.contiguous(replica)
        if new > top:
            ready: list = []
            self._check_chain(replica, top, new, ready)
            self._admit(ready)
        return 1

    def _merge_own(self, event: Order | Cancel) -> None:
        """Merge an order or cancel this replica has just made (``place``, ``cancel``).

        Its seq is the next of this replica's own and its clock the hybrid
        clock's latest tick, past every clock held here: the general checks
        cannot fail (nothing to admit but it, no chain to break, nothing
        sorts after it), so it goes straight to the store and the engine.
        If this replica's own chain was ever marked invalid, or a gap of its
        own is somehow open, the general path decides.
        """
        if len(event) == 9:  # an order: its fields read once, here and for the engine
            clock, me, seq, _, side, kind, price, qty, _ = event
        else:
            clock, me, seq = event[:3]
            side = None
        state = self.state
        engine = self.engine
        if me in engine.invalid or me in state.context.cloud or me in self._cutoff:
            self._merge_one(event)
            return
        try:
            state.store[me][seq] = event
        except KeyError:
            state.store[me] = {seq: event}
        state.context.vv[me] = seq
        self._unhashed.append(event)
        if self._fresh is not None:
            self._fresh.append(event)
        self._events_total += 1
        self._chain_clock[me] = clock
        if clock <= self._final:  # as in _merge_one: counted, never trusted away
            self.frontier_violations += 1
        log = engine.log
        if log and event < log[-1]:  # cannot happen (see above); kept exact all the same
            engine.update([event])
        elif side is None:
            engine.apply_other(event, event[3])
        else:
            engine.apply_order(event, me, seq, side, kind, price, qty)

    def _check_chain(self, replica: str, old: int, new: int, ready: list) -> None:
        """Admit seqs old+1..new of ``replica``: check its clock chain and cutoff."""
        seqs = self.state.store.get(replica, {})
        last = self._chain_clock.get(replica, 0)
        poisoned = replica in self._poisoned
        cut = self._cutoff.get(replica)
        invalid = self.engine.invalid
        if not poisoned and cut is None and new - old > 1:
            # The common case of a long run (a pull answer, a replay): every seq held
            # and the clocks increasing, checked at C speed; else the loop below.
            get = seqs.get
            run = list(map(get, range(old + 1, new + 1)))
            if None not in run:
                clocks = [last, *map(_clock, run)]
                if all(map(lt, clocks, islice(clocks, 1, None))):
                    ready.extend(run)
                    self._chain_clock[replica] = clocks[-1]
                    return
        for seq in range(old + 1, new + 1):
            event = seqs.get(seq)
            if event is None:  # seen and removed: it never enters the engine
                continue
            if poisoned:
                invalid.setdefault(replica, {})[seq] = REASON_CLOCK_AFTER
            elif event.clock <= last:
                poisoned = True
                self._poisoned.add(replica)
                invalid.setdefault(replica, {})[seq] = REASON_CLOCK
            elif cut is not None and seq > cut:
                invalid.setdefault(replica, {})[seq] = self._cut_reason(replica, seq)
            ready.append(event)
            last = event.clock
        self._chain_clock[replica] = last

    def _admit(self, ready: list) -> None:
        """Send newly contiguous events to the engine, applying membership changes first.

        ``ready`` comes in dot order: by replica, then seq (see the sort below).

        A valid leave or evict lowers its target's cutoff: the target's events
        after it are rejected, including ones already matched (they are replayed
        as rejected, from the earliest of them).
        """
        engine = self.engine
        replay: list = []
        members = [e for e in ready if e[3] == MEMBER] if MEMBER in map(_kind, ready) else ()
        for event in members:
            if self._member_reason(event) is not None:
                continue
            if event.action != JOIN:
                self.digest()  # hash what is pending under the cutoffs that held until now
            before = self._cutoff.get(event.target)
            cut = self.membership.apply(event)
            if cut is not None:
                self._retire(event.target, cut, before, replay)
        if replay:
            ready = ready + replay
            ready.sort()
        elif len(ready) > 1:
            # Every caller builds ``ready`` in dot order (replicas sorted, each one's
            # seqs ascending), so a stable sort by clock alone leaves it in position
            # order (clock, replica, seq): ints compare at half the cost of tuples.
            ready.sort(key=_clock)
        if ready and ready[0].clock <= self._final:
            invalid = engine.invalid
            self.frontier_violations += sum(
                1 for e in ready
                if e.clock <= self._final and not invalid.get(e.replica, {}).get(e.seq)
                and e not in replay
            )
        engine.update(ready, replay)

    def convict(self, target: str, cut: int) -> bool:
        """Take a proof that ``target`` equivocated (proofs.py): its events after ``cut``
        are rejected, as after an evict at ``cut``, with reason "equivocation".

        Not an event: the door calls it once it holds a verified proof. The
        result depends only on the least cut proven, whatever the order in
        which events and proofs arrived. Returns True if anything changed.
        """
        self.digest()  # hash what is pending under the cutoffs that held until now
        before = self._cutoff.get(target)
        if not self.membership.convict(target, cut):
            return False
        held = self.state.store.get(target, {})
        if any(e.kind == MEMBER for s, e in held.items() if s > cut):
            # a join or evict it made past the cut was applied: membership must be
            # computed again without it (Door.replay_feed)
            self.needs_replay = True
        if before is None or cut <= before:
            replay: list = []
            self._retire(target, cut, before, replay, convicting=True)
            if replay:
                replay.sort()
                self.engine.update(replay, replay)
        return True

    def _cut_reason(self, replica: str, seq: int) -> str:
        """Why an event past its replica's cutoff is rejected: a conviction dominates."""
        convicted = self.membership.convicted.get(replica)
        return REASON_EQUIVOCATION if convicted is not None and seq > convicted \
            else REASON_RETIRED

    def _retire(self, target: str, cut: int, before: int | None, replay: list,
                convicting: bool = False) -> None:
        """``target``'s cutoff went down to ``cut`` (from ``before``): reject its later events.

        They leave the digest (the ones between the two cuts; later ones never
        counted), take the cut's reason (rejections for their clock stay as
        they are), and those already matched are added to ``replay``.
        """
        engine = self.engine
        top = self.state.context.contiguous(target)
        held = self.state.store.get(target, {})
        self.uncount(held[s] for s in sorted(held)
                     if s > cut and (before is None or s <= before))
        if convicting and (
                any(s not in held for s in range(cut + 1, top + 1))
                or any(not engine.in_window(held[s]) for s in held if s > cut)):
            # Compaction dropped history a conviction changes: only a replay of the
            # feed from the start can say what it becomes (Door.replay_feed does).
            self.needs_replay = True
        marks = engine.invalid.setdefault(target, {})
        for seq in sorted(s for s in held if cut < s <= top):
            want = self._cut_reason(target, seq)
            mark = marks.get(seq)
            if mark == want or mark not in (None, REASON_RETIRED, REASON_EQUIVOCATION):
                continue  # already so, or rejected for its clock: nothing changes
            marks[seq] = want
            event = held[seq]
            if mark is None and event.clock <= self._final:
                # A cutoff reaching back below F changes what was reported final:
                # an evict racing the evicted replica's own last messages (the
                # documented trade-off), or a proof of equivocation found late
                # (the equivocator's own doing). Count them apart.
                if convicting:
                    self.conviction_retractions += 1
                else:
                    self.frontier_violations += 1
            if engine.outcome(target, seq) is not None and engine.in_window(event):
                replay.append(event)

    def _member_reason(self, event: Member) -> str | None:
        """Why a membership event has no effect, or None.

        Only its own rules, its replica's clock chain and a conviction count,
        never a leave or evict cutoff: such a cutoff may arrive before or after
        it, and the effect must not depend on which came first. A conviction
        does depend on it, so ``convict`` replays membership when it reaches a
        membership event already applied.
        """
        marks = self.engine.invalid.get(event.replica)
        reason = marks.get(event.seq) if marks else None
        if reason in (REASON_CLOCK, REASON_CLOCK_AFTER):
            return reason
        convicted = self.membership.convicted.get(event.replica)
        if convicted is not None and event.seq > convicted:
            return REASON_EQUIVOCATION
        return member_reason(event)

    def _rebuild(self) -> None:
        """Recompute everything from the set (after a forged duplicate dot)."""
        self._chain_clock.clear()
        self._poisoned.clear()
        self.membership.reset()
        self.engine.invalid.clear()
        self.engine.reset()
        ready: list = []
        for replica in self.state.context.replicas():
            self._check_chain(replica, 0, self.state.context.contiguous(replica), ready)
        self._admit(ready)


_clock, _replica, _seq, _kind = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_PLAIN = frozenset((Order, Cancel))  # the events _merge_into_empty takes


def _single_event(delta: AWORSet) -> Order | Cancel | None:
    """The event of a delta holding one event and exactly its dot, else None."""
    context = delta.context
    vv, cloud = context.vv, context.cloud
    if len(vv) + len(cloud) != 1:
        return None
    store = delta.store
    for replica in store:  # the one replica (the caller checked there is one)
        seqs = store[replica]
        break
    if len(seqs) != 1:
        return None
    for seq in seqs:
        event = seqs[seq]
    if vv:  # the dot (replica, 1)
        return event if seq == 1 and vv.get(replica) == 1 else None
    dots = cloud.get(replica)
    return event if dots is not None and len(dots) == 1 and seq in dots else None
