"""Status per member, and peers of members that are out for good leaving the peer list."""

from __future__ import annotations

from .nodes import client, eventually, start


async def status(url: str) -> dict:
    async with client() as http:
        response = await http.get(f"{url}/status")
    assert response.status_code == 200, response.text
    return response.json()


def health(status: dict) -> dict[str, dict]:
    return {m["replica"]: m for m in status["member_health"]}


async def test_member_health_names_the_silent_member_holding_finality_back(nursery):
    a = await start(nursery)
    b = await start(nursery, a.url)
    c = await start(nursery, a.url, leave_on_stop=False)

    async def all_ok():
        members = health(await status(a.url))
        return len(members) == 3 and members if all(
            m["health"] in ("ok", "self") for m in members.values()) else None

    members = await eventually(all_ok)
    assert members[a.node.id]["self"] and members[a.node.id]["url"] == a.url
    assert members[b.node.id]["url"] == b.url and members[b.node.id]["last_heard"]
    assert members[b.node.id]["last_heard_clock"] > 0
    assert members[b.node.id]["last_heard_s"] < 5
    await c.stop()  # vanished without a word: nothing heard from it any more

    async def c_is_down():
        s = await status(a.url)
        m = health(s)[c.node.id]
        return (s, m) if m["health"] in ("unreachable", "silent") and m[
            "holds_back_final"] else None

    s, m = await eventually(c_is_down)
    assert m["url"] == c.url and m["last_heard"] is not None
    assert s["held_back_by"]["replica"] == c.node.id  # the same member, said twice
    assert s["final_time"] and s["final_time"].endswith("Z")
    assert not health(s)[b.node.id]["holds_back_final"]


async def test_a_left_member_leaves_the_peer_list_even_if_given_with_peer(nursery):
    a = await start(nursery)
    c = await start(nursery, a.url)
    b = await start(nursery, a.url, c.url)  # c is one of b's --peer: never forgotten before
    await eventually(lambda: c.url in b.node.peers and b.node.peers[c.url].replica)
    async with client() as http:
        response = await http.post(f"{c.url}/leave", headers=c.admin)
    assert response.status_code == 200, response.text
    await eventually(lambda: c.node.id not in b.node.replica.members())
    await eventually(lambda: c.url not in b.node.peers and c.url not in a.node.peers)
    assert c.node.id not in {m["replica"] for m in (await status(b.url))["member_health"]}


async def test_an_evicted_member_still_running_is_not_taken_back(nursery):
    fast = {"announce_interval_s": 0.3}
    a = await start(nursery, **fast)
    b = await start(nursery, a.url, **fast)
    c = await start(nursery, a.url, **fast)
    await eventually(lambda: c.url in a.node.peers and c.url in b.node.peers)
    async with client() as http:
        response = await http.post(f"{a.url}/evict", json={"replica": c.node.id},
                                   headers=a.admin)
    assert response.status_code == 200, response.text
    await eventually(lambda: c.url not in a.node.peers and c.url not in b.node.peers)
    # c still runs: it pulls from a and announces itself in the registries a reads
    pulls = c.node.stats["pull_requests"]
    await eventually(lambda: c.node.stats["pull_requests"] >= pulls + 3)
    assert c.url not in a.node.peers and c.url not in b.node.peers
    assert c.url not in {p["url"] for p in (await status(a.url))["peers"]}


def test_a_convicted_members_peer_is_forgotten_and_not_taken_back():
    from node.service import Node, NodeConfig

    node = Node(NodeConfig(data_dir=None, fsync=False))
    try:
        liar, url = "liar" + "x" * 28, "http://127.0.0.1:9999"
        node.seen(url, liar)
        assert node.peers[url].replica == liar
        node.door.proofs[liar] = object()  # what a proof of equivocation leaves here
        node.forget_retired()
        assert url not in node.peers
        node.seen(url, liar)  # it calls again, or a registry still lists its address
        node.add_peer(url)
        assert url not in node.peers
        node.seen(url, "new" + "y" * 29)  # a new replica at that address is a new peer
        assert url in node.peers
    finally:
        node.close()
