"""--bootstrap-expect: nodes started together found exactly one cluster."""

from __future__ import annotations

import logging

from crdtbook.events import JOIN

from .nodes import Running, eventually, start


def founders(*running: Running) -> set[str]:
    """Replicas that admitted themselves (founded a cluster), as every node sees it."""
    return {e.replica for r in running for e in r.node.replica.events()
            if e.kind == "member" and e.action == JOIN and e.replica == e.target}


def one_cluster(*running: Running) -> bool:
    ids = sorted(r.node.id for r in running)
    return all(r.node.joined and r.node.replica.members() == ids for r in running)


async def test_three_nodes_with_peers_only_wait_for_each_other_then_found_one(nursery, caplog):
    caplog.set_level(logging.INFO, logger="crdtbook")
    expect = {"bootstrap_expect": 3, "wait": False}
    a = await start(nursery, **expect)
    b = await start(nursery, a.url, **expect)

    def waiting_for_two() -> bool:
        return sum(1 for r in caplog.records if r.getMessage() == "node.bootstrap_waiting"
                   and r.fields["found"] == 2) >= 2

    await eventually(waiting_for_two)  # a and b found each other: 2 of 3
    assert not a.node.joined and not b.node.joined  # and neither founded alone
    c = await start(nursery, b.url, **expect)
    await eventually(lambda: one_cluster(a, b, c))
    smallest = min(r.node.id for r in (a, b, c))
    assert founders(a, b, c) == {smallest}
    assert any("waiting for 2 of 3 expected nodes" in str(r.fields.get("detail"))
               for r in caplog.records)


async def test_a_late_node_with_bootstrap_expect_joins_the_existing_cluster(nursery):
    a = await start(nursery)
    b = await start(nursery, a.url, bootstrap_expect=3, wait=False)  # a is a member already
    await eventually(lambda: one_cluster(a, b))
    assert founders(a, b) == {a.node.id}
