"""Attacks on the door's order of judging: proofs and claims before blocks."""

from __future__ import annotations

from crdtbook.door import SKIP_RETIRED, Door
from crdtbook.feed import SignedClaim, claim_message
from crdtbook.keys import Signer
from crdtbook.proofs import PROMISE
from crdtbook.replica import Replica


def _member(name: str) -> tuple[Signer, Replica, Door]:
    signer = Signer.from_name(name)
    replica = Replica(signer.id, track_fresh=True)
    return signer, replica, Door(replica, signer.sign)


def _seal(door: Door):
    return door.seal([e for e in door.replica.take_fresh() if e.replica == door.replica.id])


def _claim(signer: Signer, seq: int, clock: int) -> SignedClaim:
    return SignedClaim(signer.id, seq, clock, signer.sign(claim_message(signer.id, seq, clock)))


def _cluster_with_liar():
    founder_key, founder, founder_door = _member("founder")
    liar_key, liar, liar_door = _member("liar")
    founder.bootstrap(1_000, key=founder_key.public)
    founding = _seal(founder_door)
    founder.join(liar.id, 1_001, key=liar_key.public)
    admission = _seal(founder_door)
    liar_door.admit([founding, admission])
    liar.take_fresh()
    liar.place("sell", "1", "10", now_ms=1_002)
    first = _seal(liar_door)
    liar.place("sell", "1", "11", now_ms=1_003)
    broken = _seal(liar_door)
    return liar_key, [founding, admission, first], broken


def test_a_block_breaking_a_lower_claim_is_refused_though_a_higher_claim_rides_with_it():
    # Two claims of the liar in one message: an old one (seq below the block, clock at
    # its event: the block breaks it) and a later one the block keeps. The door must
    # judge the block against both, not only the one with the highest clock: else one
    # message takes the block that the same claims sent one by one would refuse.
    liar_key, history, broken = _cluster_with_liar()
    event = broken.events[0]
    kept = _claim(liar_key, event.seq, event.clock + 100)
    lied = _claim(liar_key, event.seq - 1, event.clock)

    outcomes = []
    for claims in ([lied], [lied, kept], [kept, lied]):
        _, _, observer = _member("observer")
        observer.admit(history)
        admission = observer.admit([broken], claims)
        outcomes.append((len(admission.blocks), admission.skipped[SKIP_RETIRED],
                         [p.kind for p in admission.proofs]))
    assert outcomes == [(0, 1, [PROMISE])] * 3


def test_the_claim_held_is_the_latest_whatever_the_grouping():
    # A member's two claims in one message, newer first, must leave the door holding
    # the newer one (what it relays, what later blocks are judged by), as when the two
    # come in two messages: else two nodes hold different claims for the same events.
    liar_key, history, broken = _cluster_with_liar()
    older = _claim(liar_key, broken.first - 1, broken.events[0].clock - 1)
    newer = _claim(liar_key, broken.first - 1, broken.events[0].clock - 1 + 100)
    held = []
    for messages in ([[newer, older]], [[newer], [older]], [[older], [newer]]):
        _, _, observer = _member("observer")
        observer.admit(history)
        for claims in messages:
            observer.admit([], claims)
        held.append(observer.claims[liar_key.id])
    assert held == [newer] * 3
