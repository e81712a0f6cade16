"""Prometheus metrics of one node, served as text by ``GET /metrics``.

Theory of operation
-------------------
Every ``Node`` owns a ``Metrics`` with its own ``CollectorRegistry`` (tests
run several nodes in one process: the library's global default registry is
never used). Two kinds of figures live in it:

* **Counted where things happen.** Orders and cancels the node placed
  (``Node.place_many``, ``Node.cancel``: every entry point, HTTP, PeerRPC or
  WebSocket, goes through them) and the fills they made are plain integers
  (the node is one trio thread: an increment needs no lock), exported when
  scraped. Refusals of order entry by error code (the entry points call
  ``refused``), peer push and pull latencies, bytes on the peer wire and
  store commit latencies are prometheus_client counters and histograms,
  updated once per request, batch or exchange, never once per event.
* **Read at scrape time.** What the node already keeps as plain integers
  (events held and ever held, the final frontier's lag, the engine's
  rewinds and replayed events, what the door refused, each peer's health,
  open WebSocket subscriptions) is read by ``_Snapshot.collect`` when
  ``/metrics`` is asked for, so the hot paths pay nothing for it. The core
  (crdtbook/) never imports prometheus_client: the node reads its integers.

Rules this module keeps
-----------------------
* Label values come from bounded sets: error codes and door reasons are the
  node's own constants (anything else is counted as ``other``); peers are
  labelled by URL, and a node keeps at most ``MAX_PEERS`` discovered peers
  plus the ``--peer`` ones, with a forgotten peer's series removed
  (``forget_peer``), so churn cannot grow the registry.
* Amounts are exported in whole units (a float, as Prometheus needs), from
  an exact integer sum of units.
* Nothing here raises into a request: a scrape reads, it changes nothing.
"""

from __future__ import annotations

import contextlib
import re

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from crdtbook.amount import SCALE
from crdtbook.clock import LOGICAL_BITS

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
# The _created series double every counter for a figure nobody here reads.
prometheus_client.disable_created_metrics()

# few buckets: a scrape renders every bucket of every peer (up to 64 peers, two each)
PEER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
# the age of a push's oldest event at each step of its way (see node/cluster/pushage.py)
AGE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def reason(code: object) -> str:
    """A label value for an error code or door reason: the code, else ``other``."""
    if isinstance(code, str):
        code = code.replace(" ", "_").replace("'", "").lower()
        if _CODE.fullmatch(code):
            return code
    return "other"


class Metrics:
    def __init__(self, node) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=False)
        # plain integers, exported by _Snapshot (see the theory of operation)
        self.orders_accepted = self.cancels_accepted = self.fills = self.fill_units = 0
        self.orders_refused = Counter(
            "crdtbook_orders_refused", "Order requests refused, by error code (a refused "
            "batch counts once).", ["reason"], registry=registry)
        self.orders_rejected = Counter(
            "crdtbook_orders_rejected", "Orders placed here that matching rejected on arrival "
            "(post_only that would trade, fok that cannot fill).", ["reason"], registry=registry)
        self.cancels_refused = Counter(
            "crdtbook_cancels_refused", "Cancel requests refused, by error code.", ["reason"],
            registry=registry)
        self.push_seconds = Histogram(
            "crdtbook_peer_push_seconds", "Pushes this node made that a peer took, by peer.",
            ["peer"], buckets=PEER_BUCKETS, registry=registry)
        self.pull_seconds = Histogram(
            "crdtbook_peer_pull_seconds", "Pulls this node made that a peer answered, by peer.",
            ["peer"], buckets=PEER_BUCKETS, registry=registry)
        self.peer_failures = Counter(
            "crdtbook_peer_calls_failed", "Calls to a peer that failed, by peer and call.",
            ["peer", "call"], registry=registry)
        self.wire_bytes = Counter(
            "crdtbook_peer_wire_bytes", "HTTP bytes of peer exchanges (push, pull, join), "
            "those this node made and those it served, by direction.", ["direction"],
            registry=registry)
        self.sent = self.wire_bytes.labels("sent")
        self.received = self.wire_bytes.labels("received")
        self.commit_seconds = Histogram(
            "crdtbook_store_commit_seconds", "Group commits of the store (one transaction and "
            "fsync), thread hop included.", buckets=COMMIT_BUCKETS, registry=registry)
        self.push_age = Histogram(
            "crdtbook_push_age_seconds", "Age of a push's oldest event (now minus its stamp), "
            "by step: durable at its origin (sealed), sent by it (sent), received here "
            "(received), merged here (merged).", ["step"], buckets=AGE_BUCKETS,
            registry=registry)
        registry.register(_Snapshot(node, self))

    # -- counted where things happen ------------------------------------------
    def placed(self, placed: list) -> None:
        """Orders placed in one request (``Placed`` list): accepted, rejected, fills."""
        fills = units = 0
        for p in placed:
            if p.fills:
                fills += len(p.fills)
                units += sum(f.qty for f in p.fills)
            elif p.order.status == "rejected":
                self.orders_rejected.labels(_rejection(p.order.reason)).inc()
        self.orders_accepted += len(placed)
        self.fills += fills
        self.fill_units += units

    def cancelled(self) -> None:
        self.cancels_accepted += 1

    def refused(self, kind: str, code: object) -> None:
        """An order (``kind`` "order") or cancel request refused with error ``code``."""
        family = self.orders_refused if kind == "order" else self.cancels_refused
        family.labels(reason(code)).inc()

    def forget_peer(self, url: str) -> None:
        """Drop a forgotten peer's series (its URL may never come back)."""
        for family in (self.push_seconds, self.pull_seconds):
            with contextlib.suppress(KeyError):
                family.remove(url)
        for call in ("push", "pull", "join"):
            with contextlib.suppress(KeyError):
                self.peer_failures.remove(url, call)

    def served(self, scope: dict, response) -> None:
        """Bytes of a peer request this node answered (the body as declared)."""
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        declared = 0
        for key, value in scope.get("headers", []):
            head += len(key) + len(value) + 4
            if key == b"content-length" and value.isdigit():
                declared = int(value)
        self.received.inc(head + len(scope.get("method", "")) + 13 + declared)
        self.sent.inc(17 + sum(len(k) + len(v) + 4 for k, v in response.headers)
                      + 2 + len(response.body))

    def exchanged(self, sent: int, received: int) -> None:
        self.sent.inc(sent)
        self.received.inc(received)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def _rejection(text: str | None) -> str:
    if text is None:
        return "other"
    if text.startswith("post_only"):
        return "post_only"
    if text.startswith("fok"):
        return "fok"
    return "other"


class _Snapshot:
    """What the node keeps as plain integers, read when scraped."""

    def __init__(self, node, metrics: Metrics) -> None:
        self.node = node
        self.metrics = metrics

    def collect(self):
        node, metrics = self.node, self.metrics
        replica = node.replica
        yield CounterMetricFamily("crdtbook_orders_accepted", "Orders this node placed (made "
                                  "events of).", value=metrics.orders_accepted)
        yield CounterMetricFamily("crdtbook_cancels_accepted", "Cancels this node placed.",
                                  value=metrics.cancels_accepted)
        yield CounterMetricFamily("crdtbook_fills", "Fills made on arrival by orders placed "
                                  "here (provisional).", value=metrics.fills)
        yield _gauge("crdtbook_events_held", "Events held in memory now.", replica.event_count())
        yield CounterMetricFamily("crdtbook_events", "Events this replica ever held, "
                                  "compacted ones included.", value=replica.events_total())
        yield _gauge("crdtbook_members", "Current members of the cluster.",
                     len(replica.members()))
        final = replica.frontier()
        if final:
            lag = max(0, (replica.newest_clock() - final) >> LOGICAL_BITS) / 1000
            yield _gauge("crdtbook_final_lag_seconds", "How far F is behind the newest event "
                         "held (absent while F is 0).", lag)
        holder = replica.frontier_holder()
        if holder is not None and final:
            behind = max(0, node.clock_ms() - (holder[1] >> LOGICAL_BITS)) / 1000
            yield _gauge("crdtbook_final_behind_seconds", "How far the member holding F back "
                         "is behind this node's wall clock (absent while F is 0).", behind)
        yield _gauge("crdtbook_fills_final", "Final fills, counted from the first (the same on "
                     "every node).", replica.final_fill_count())
        yield CounterMetricFamily("crdtbook_fill_quantity", "Quantity of the fills counted by "
                                  "crdtbook_fills_total, in whole units.",
                                  value=metrics.fill_units / SCALE)
        engine = replica.engine
        yield CounterMetricFamily("crdtbook_rewinds", "Times the engine rewound to apply a "
                                  "late event.", value=engine.rewinds)
        yield CounterMetricFamily("crdtbook_replayed_events", "Events undone by rewinds (and "
                                  "applied again unless withdrawn).", value=engine.replayed)
        refused = CounterMetricFamily("crdtbook_door_refused", "What the door turned away: "
                                      "whole peer messages (reason message), blocks and claims "
                                      "by reason.", labels=["reason"])
        refused.add_metric(["message"], node.refused_messages)
        counts: dict[str, int] = {}
        for why, count in node.door.refused.items():
            label = reason(why)
            counts[label] = counts.get(label, 0) + count
        for label in sorted(counts):
            refused.add_metric([label], counts[label])
        yield refused
        yield _gauge("crdtbook_store_failed", "1 once the store failed (the node acknowledges "
                     "nothing more), else 0.", 1 if node.journal.failed else 0)
        streams = getattr(node, "streams", None)
        yield _gauge("crdtbook_ws_subscriptions", "Open WebSocket subscriptions.",
                     streams.subscription_count() if streams is not None else 0)
        yield from self._peers()

    def _peers(self):
        node = self.node
        now = node.monotonic()
        up = GaugeMetricFamily("crdtbook_peer_up", "1 if this node's last call to the peer "
                               "succeeded, else 0.", labels=["peer"])
        failures = GaugeMetricFamily("crdtbook_peer_failures", "Calls to the peer failed in "
                                     "a row.", labels=["peer"])
        seen = GaugeMetricFamily("crdtbook_peer_last_seen_seconds", "Seconds since this "
                                 "node's last successful call to the peer (absent: never).",
                                 labels=["peer"])
        dropped = CounterMetricFamily("crdtbook_peer_dropped_pushes", "Pushes to the peer "
                                      "dropped (it was slow or down; pulls repair).",
                                      labels=["peer"])
        info = GaugeMetricFamily("crdtbook_peer_info", "The replica id each peer answered as.",
                                 labels=["peer", "replica"])
        for url, peer in sorted(node.peers.items()):
            ok = peer.last_seen is not None and not peer.failures
            up.add_metric([url], 1 if ok else 0)
            failures.add_metric([url], peer.failures)
            if peer.last_seen is not None:
                seen.add_metric([url], max(0.0, now - peer.last_seen))
            dropped.add_metric([url], peer.dropped)
            if peer.replica:
                info.add_metric([url, peer.replica[:64]], 1)
        yield _gauge("crdtbook_peers", "Peers this node knows.", len(node.peers))
        yield from (up, failures, seen, dropped, info)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
