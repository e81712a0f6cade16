"""Bounds that need no running node: the CBOR scan, the registry under a flood, the
peer table's preference for peers that answered, pull rate limits, echoed values."""

from __future__ import annotations

import re

import cbor2
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.cborscan import ScanError, scan
from crdtbook.codec import CodecError, loads
from crdtbook.dot import DotError, parse_dot, shown
from node.cluster.registry import MAX_PER_KEY, MAX_PER_SOURCE, Registry
from node.ratelimit import RateLimit
from node.service import MAX_PEERS, Node, NodeConfig


@pytest.mark.parametrize(("data", "why"), [
    (cbor2.dumps(re.compile("a+")), "a tag"),
    (cbor2.dumps({1, 2}), "a tag"),
    (b"\xd8\x1c\x80", "a tag"),  # shareable
    (cbor2.dumps(2**72), "a tag"),  # a bignum of more than 9 bytes
    (cbor2.dumps(-(2**70)), "a tag"),  # a negative one
    (b"\xc2\x49\x00" + b"\xff" * 8, "a tag"),  # 9 bytes for what fits 8
    (b"\xc2\x49\x01", "truncated"),
    (b"\x9f\x01\xff", "indefinite"),
    (b"\x5f\x41a\xff", "indefinite"),
    (b"\xff", "indefinite"),
    (b"\x1c", "reserved"),
    (b"\x81" * 17 + b"\x80", "nested deeper than 16"),
    (b"\x9a\x00\x0f\x42\x41" + b"\x80" * 1_000_001, "more than 1000000 items"),
    (b"\x9b" + b"\xff" * 8, "more than the bytes left"),
    (b"\x83\x01", "more than the bytes left"),
    (b"\x7a\xff\xff\xff\xff", "runs past the end"),
    (b"\x19\x01", "truncated"),
    (b"\x01\x02", "trailing"),
    (b"", "truncated"),
])
def test_scan_refuses(data, why):
    with pytest.raises(ScanError, match=why):
        scan(data)
    with pytest.raises(CodecError):
        loads(data, "x")


@settings(max_examples=300)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**64 + 1, 2**64 - 1)
                    | st.text(max_size=30) | st.binary(max_size=300) | st.floats(allow_nan=False),
                    lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=5), max_leaves=30))
def test_scan_passes_what_cbor2_writes_without_tags(value):
    data = cbor2.dumps(value, canonical=True)
    assert scan(data) >= 1
    assert loads(data, "x") == value


@pytest.mark.parametrize("value", [2**64, 10**20, 2**72 - 1, [2**64, 1, "a"]])
def test_scan_passes_a_bignum_of_9_bytes_an_amount_past_2_to_64_units(value):
    data = cbor2.dumps(value, canonical=True)
    assert scan(data) == scan(data, plain=True) >= 1
    assert loads(data, "x") == value


def test_a_refused_message_costs_little():
    data = b"\x9a\x03\x93\x87\x00" + b"\x80" * 60_000_000  # 60 MB of empty arrays
    with pytest.raises(ScanError, match="more than"):
        scan(data)  # refused at the array's header: nothing is built


def test_echoed_values_are_cut():
    assert len(shown("x" * 4_000_000)) < 120
    assert "truncated" in shown(b"y" * 1000)
    assert shown(10**5000) == "a 16610-bit integer"
    with pytest.raises(DotError) as refused:
        parse_dot("a:" + "9" * 5000)
    assert len(str(refused.value)) < 200


def test_a_registry_flood_from_one_host_keeps_real_nodes_in():
    registry = Registry(ttl_s=60)
    for i in range(10_000):
        registry.announce("crdtbook:default", f"10.0.0.66:{i + 1}", 0.0, source="10.0.0.66")
    assert registry.size() == MAX_PER_SOURCE
    for port in (8700, 8701, 8702):
        registry.announce("crdtbook:default", f"10.0.0.1:{port}", 1.0, source="10.0.0.1")
    live = set(registry.lookup("crdtbook:default", 2.0))
    assert len(live) == 100 and registry.size() == MAX_PER_SOURCE + 3
    seen = set()
    for _ in range(30):
        seen |= set(registry.lookup("crdtbook:default", 2.0))
    assert {"10.0.0.1:8700", "10.0.0.1:8701", "10.0.0.1:8702"} <= seen


def test_a_flood_from_many_hosts_evicts_the_largest_and_stale_first():
    registry = Registry(ttl_s=10)
    registry.announce("k", "10.0.0.1:1", 0.0, source="10.0.0.1")
    for h in range(20):
        for i in range(MAX_PER_SOURCE):
            registry.announce("k", f"10.1.{h}.1:{i + 1}", 0.0, source=f"10.1.{h}.1")
    assert len(registry._entries["k"]) <= MAX_PER_KEY
    assert "10.0.0.1:1" in registry._entries["k"]  # the small source kept its entry
    registry.announce("k", "10.0.0.2:1", 20.0, source="10.0.0.2")  # all else is stale
    assert registry.size() == 1 and registry.lookup("k", 21.0) == ["10.0.0.2:1"]


def test_rate_limit_refills_and_is_bounded():
    limit = RateLimit(rate=2.0, burst=3.0, max_keys=10)
    assert [limit.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow("a", 0.5)  # one token back after half a second
    for i in range(100):
        limit.allow(f"k{i}", 1.0)
    assert len(limit._buckets) == 10


async def test_peers_that_answered_are_kept_over_fresh_unknown_ones():
    node = Node(NodeConfig(host="127.0.0.1", port=0))
    try:
        node.url = "http://127.0.0.1:1"
        real = node.add_peer("http://127.0.0.1:2")
        real.ok("r", node.monotonic())
        for i in range(MAX_PEERS - 1):
            node.add_peer(f"http://10.9.0.{i}:9").failed(node.monotonic())
        assert len(node.peers) == MAX_PEERS
        assert node.add_peer("http://10.9.9.9:9") is not None  # an unproven one made room
        assert "http://127.0.0.1:2" in node.peers and len(node.peers) == MAX_PEERS
        for peer in node.peers.values():
            peer.ok(None, node.monotonic())
        assert node.add_peer("http://10.9.9.10:9") is None  # all answered: none given up
    finally:
        node.close()
        await trio.lowlevel.checkpoint()
