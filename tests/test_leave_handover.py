"""A leave hands over what only the leaving node could see: forks of another member's feed.

An equivocating member sends one version of its next block to a and another to
b. Neither pulls on its own here (a long pull interval), so nobody has both
versions. If a then left without a word, its version (and any fill it reported
final on it) would vanish with it, and the member would never be convicted.
``POST /leave`` first pulls from every peer (chasing the fork a's version and
b's point at) and pushes the proof it finds, so b convicts the member too.
"""

from __future__ import annotations

from fuzz.__main__ import check
from fuzz.generate import schedule

from .nodes import client, eventually, start
from .peers import SignedPeer
from .test_attacks import push

QUIET = 60.0  # pull interval: these nodes pull only when the test (or a leave) makes them


async def test_leave_pulls_and_shares_a_fork_only_it_could_see(nursery):
    a = await start(nursery, pull_interval_s=QUIET)
    b = await start(nursery, a.url, pull_interval_s=QUIET)
    await eventually(lambda: len(a.node.replica.members()) == 2 == len(b.node.replica.members()))
    left, right = SignedPeer("two-faced"), SignedPeer("two-faced")
    left.admitted_by(a.node)
    await eventually(lambda: all(n.node.replica.is_member(left.id) for n in (a, b)))
    now = a.node.clock_ms()
    to_a = left.place("sell", "1", "30", now_ms=now)
    to_b = right.place("buy", "2", "31", now_ms=now)
    async with client() as http:
        assert (await push(http, a, left.blocks([to_a]))).status_code == 204
        assert (await push(http, b, right.blocks([to_b]))).status_code == 204
        assert not a.node.door.proofs and not b.node.door.proofs  # nobody saw both
        r = await http.post(a.url + "/leave", headers=a.admin, timeout=30)
        assert r.status_code == 200, r.text
    assert left.id in a.node.door.proofs
    await eventually(lambda: left.id in b.node.door.proofs)
    assert b.node.door.proofs[left.id].cut == 0
    assert left.id not in b.node.replica.members()


def test_fuzz_schedules_where_a_leaver_held_the_only_other_version():
    """Two schedules that failed before the fuzzer's leave (and the node's) handed over:
    a fill reported final on a version only the leaver held changed, unexplained."""
    assert check(schedule(10191, 3, 150)) is None
    assert check(schedule(50031, 3, 600)) is None
