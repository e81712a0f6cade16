"""How loud a failing peer is in the log: one failure alone is not a warning (a
peer stopping a moment before this node, or closing an idle keep-alive connection
as a request goes out); two in a row are, then one warning every few seconds; a
stopping node logs its peers' failures at debug only."""

from __future__ import annotations

import logging
import types

from node.cluster import gossip
from node.service import Peer


class _Counter:
    def labels(self, *_):
        return self

    def inc(self):
        pass


def _node(stopping=False):
    clock = types.SimpleNamespace(now=100.0)
    node = types.SimpleNamespace(stopping=stopping, monotonic=lambda: clock.now,
                                 metrics=types.SimpleNamespace(peer_failures=_Counter()))
    return node, clock


def _levels(caplog, node, peer, times, clock, quiet=False):
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="crdtbook")
    for at in times:
        clock.now = at
        gossip._failed(node, peer, "pull", ValueError("gone"), quiet)
    return [r.levelname.lower() for r in caplog.records if r.getMessage() == "peer.pull_failed"]


def test_one_failure_is_info_two_in_a_row_warn_then_every_few_seconds(caplog):
    node, clock = _node()
    peer = Peer("http://127.0.0.1:1", sticky=True)
    levels = _levels(caplog, node, peer, [100.0, 100.5, 101.5, 100.5 + gossip.WARN_EVERY_S], clock)
    assert levels == ["info", "warning", "debug", "warning"]


def test_a_peer_that_answers_again_starts_over(caplog):
    node, clock = _node()
    peer = Peer("http://127.0.0.1:1", sticky=True)
    assert _levels(caplog, node, peer, [100.0, 100.5], clock) == ["info", "warning"]
    peer.ok("r", 101.0)
    assert _levels(caplog, node, peer, [102.0], clock) == ["info"]


def test_a_stopping_node_or_a_quiet_call_logs_failures_at_debug_only(caplog):
    node, clock = _node(stopping=True)
    peer = Peer("http://127.0.0.1:1", sticky=True)
    assert _levels(caplog, node, peer, [100.0, 100.5, 200.0], clock) == ["debug"] * 3
    node, clock = _node()
    peer = Peer("http://127.0.0.1:1", sticky=True)
    assert _levels(caplog, node, peer, [100.0, 100.5], clock, quiet=True) == ["debug"] * 2
