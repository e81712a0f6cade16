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
