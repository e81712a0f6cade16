"""The door's own rules, beyond signatures: message order and what it skips."""

from __future__ import annotations

from crdtbook.door import SKIP_STRANGER, Door
from crdtbook.keys import Signer
from crdtbook.replica import Replica


def _member(name: str) -> tuple[Signer, Replica, Door]:
    signer = Signer.from_name(name)
    replica = Replica(signer.id, track_fresh=True)
    return signer, replica, Door(replica, signer.sign)


def _seal(door: Door):
    return door.seal([e for e in door.replica.take_fresh() if e.replica == door.replica.id])


def test_a_joiners_blocks_before_its_sponsors_join_in_one_message_are_taken():
    founder_key, founder, founder_door = _member("founder")
    joiner_key, joiner, joiner_door = _member("joiner")
    founder.bootstrap(1_000, key=founder_key.public)
    founding = _seal(founder_door)
    founder.join(joiner.id, 1_001, key=joiner_key.public)
    admission = _seal(founder_door)
    joiner_door.admit([founding, admission])
    joiner.take_fresh()
    joiner.place("sell", "1", "10", now_ms=1_002)
    own = _seal(joiner_door)

    _, _, observer = _member("observer")
    # the joiner's block first: its key is only learned from the sponsor's block after it
    taken = observer.admit([own, founding, admission])
    assert len(taken.blocks) == 3 and not taken.skipped
    assert observer.replica.digest() == joiner.digest()


def test_a_strangers_blocks_are_skipped_and_counted_once_per_origin():
    founder_key, founder, founder_door = _member("founder")
    founder.bootstrap(1_000, key=founder_key.public)
    founding = _seal(founder_door)
    _, stranger, stranger_door = _member("stranger")
    stranger.place("buy", "1", "10", now_ms=1_001)
    first = _seal(stranger_door)
    stranger.place("buy", "1", "10", now_ms=1_002)
    second = _seal(stranger_door)
    _, _, observer = _member("observer")
    taken = observer.admit([founding, first, second])
    assert [v.block for v in taken.blocks] == [founding]
    assert taken.skipped[SKIP_STRANGER] == 1
    assert observer.replica.events_total() == 1


def test_a_feed_whose_clock_goes_back_is_refused_by_every_replica_alike():
    from crdtbook.door import SKIP_BEFORE_JOIN, SKIP_CLOCK
    from crdtbook.events import make_order

    founder_key, founder, founder_door = _member("founder")
    joiner_key, joiner, joiner_door = _member("joiner")
    founder.bootstrap(1_000 << 16, key=founder_key.public)
    founder.join(joiner.id, 1_001, key=joiner_key.public)
    admitted = _seal(founder_door)
    join_clock = founder.membership.joins[joiner.id]
    early = joiner_door.seal([make_order(join_clock, joiner.id, 1, "buy", "limit", 1, 1, "")])
    observers = [_member(name)[2] for name in ("one", "two")]
    for door in observers:
        door.admit([admitted])
        assert door.admit([early]).skipped[SKIP_BEFORE_JOIN] == 1
    # a well-timed first block, then one whose clock goes back: refused alike
    _, replay, replay_door = _member("joiner")
    good = replay_door.seal([make_order(join_clock + 10, joiner.id, 1, "buy", "limit", 1, 1, "")])
    back = replay_door.seal([make_order(join_clock + 5, joiner.id, 2, "buy", "limit", 1, 1, "")])
    for door in observers:
        taken = door.admit([good, back])
        assert [v.block for v in taken.blocks] == [good]
        assert taken.skipped[SKIP_CLOCK] == 1
    assert observers[0].replica.digest() == observers[1].replica.digest()


def _orders_at(origin: Replica, clocks: list[int]) -> list:
    """Orders of ``origin`` with exactly these clocks (its next seqs), as if made there."""
    from crdtbook.events import make_order

    seq = origin.state.context.contiguous(origin.id)
    made = [make_order(clock, origin.id, seq + i, "buy", "limit", 10**8, 10**8, "")
            for i, clock in enumerate(clocks, start=1)]
    for event in made:
        origin.state.context.vv[origin.id] = event.seq  # so seal chains the next ones
    return made


def _receiver(origin_key: Signer) -> tuple[Replica, Door]:
    _, replica, door = _member("receiver")
    replica.membership.keys[origin_key.id] = origin_key.public
    return replica, door


def test_a_block_whose_clocks_do_not_rise_along_its_feed_is_skipped_whole():
    """Every clock past the one before it, the block's first past the last taken
    (in this message or before): a tie or a fall anywhere skips the block and the
    rest of that origin's feed in the message, and nothing of it enters."""
    from crdtbook.door import SKIP_CLOCK, SKIP_GAP

    for clocks, later in (([5, 6, 6], [9]), ([5, 7, 6], [9]), ([5, 6, 7], [7]),
                          ([5, 6, 7], [3, 8])):
        key, origin, origin_door = _member("origin")
        first = origin_door.seal(_orders_at(origin, clocks))
        second = origin_door.seal(_orders_at(origin, later))
        replica, door = _receiver(key)
        taken = door.admit([first, second])
        rising = clocks == sorted(set(clocks))
        if rising:  # the second block's first clock is not past the first block's last
            assert [v.block for v in taken.blocks] == [first]
            assert taken.skipped == {SKIP_CLOCK: 1}
        else:
            assert not taken.blocks and taken.skipped == {SKIP_CLOCK: 1, SKIP_GAP: 1}
        assert replica.event_count() == (len(clocks) if rising else 0)
    key, origin, origin_door = _member("origin")
    blocks = [origin_door.seal(_orders_at(origin, c)) for c in ([5, 6, 7], [8, 20])]
    replica, door = _receiver(key)
    assert door.admit(blocks[:1]).added == 3
    assert door.admit(blocks[1:]).added == 2 and replica.event_count() == 5


def test_a_block_with_any_event_at_or_below_the_final_frontier_is_skipped(monkeypatch):
    from crdtbook.door import SKIP_BELOW_FINAL

    for final, skipped in ((4, False), (5, True), (6, True), (7, True), (8, True)):
        key, origin, origin_door = _member("origin")
        block = origin_door.seal(_orders_at(origin, [5, 6, 7]))
        replica, door = _receiver(key)
        monkeypatch.setattr(replica, "frontier", lambda final=final: final)
        taken = door.admit([block])
        assert bool(taken.skipped) == skipped
        assert taken.skipped == ({SKIP_BELOW_FINAL: 1} if skipped else {})
        assert replica.event_count() == (0 if skipped else 3)
