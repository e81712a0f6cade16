"""Benchmark of a 3-node loopback cluster: throughput, ack and convergence latency, wire bytes.

Usage: python bench/cluster.py [--ephemeral | --data-dir [ROOT]] [--duration S] [--repeat N]
                               [--ack-rate R] [--ack-duration S] [--rate R]
                               [--latency-duration S] [--batch N] [--workers W]
                               [--seed S] [--throughput-only] [--baseline REV]
                               [--no-auth-compare] [--baseline-after] [--profile PREFIX]
                               [--httpx-client] [--json]

By default two fresh clusters run one after the other: first 3 ``--ephemeral``
nodes (a throwaway store without fsync, the in-memory figure), phase 1 only;
then 3 durable nodes, each with its own data directory (fsync on) under a new
temporary folder, all phases. Both throughputs are printed with their ratio
(durable / ephemeral). ``--ephemeral`` runs only the first cluster (all
phases), ``--data-dir`` only the second (under ROOT if given; kept afterwards).

1. Throughput: W concurrent clients post batches of N orders (seeded prices
   around a mid, so a share cross) round-robin to the 3 nodes for --duration
   seconds (default 10); prints orders/s accepted (a 201 answers once the
   order is durable), then waits until all three nodes hold the same events
   and digest. The bodies (500, used in turn) are made and JSON-encoded
   before the clock starts, so the bench's own CPU goes to HTTP only. The
   clients post through the node's own keep-alive h11 client
   (node/cluster/peerhttp.py, what peers push with): about 3 ms of the
   bench's CPU per 1,000 orders where httpx took 9-11, and the bench shares
   the two cores with the nodes. ``--httpx-client`` posts with httpx as
   before (figures before that change were taken so).
2. Ack latency: one order per request (POST /orders), at a fixed --ack-rate
   (default 500/s) for --ack-duration seconds (default 8), round-robin over
   the nodes, open loop (each request starts on schedule in its own task, so
   a slow answer does not hold the next back); client-side latency from the
   start of the request to its 201.
3. Convergence latency: orders at a fixed --rate (default 1,000/s) in batches
   of 10, spread over the nodes, for --latency-duration seconds (default 10).
   Every 5 ms the bench
   reads each node's version vector (GET /context); an order's convergence
   latency runs from the moment it was submitted to the first read that
   shows it on all three nodes (so figures carry up to ~5 ms of read lag).
   Meanwhile it samples every node's frontier lag every 50 ms (GET /status
   final_lag_ms: newest event's clock minus the final frontier F, in ms).
4. Wire: bytes of peer traffic (push and pull exchanges, HTTP headers and
   bodies, both directions, as counted by each node) per order per peer,
   against the CBOR size of one order event.

5. Authentication: the durable cluster authenticates its clients (each
   request carries the node's default account token; rate limits on but too
   high to bite), and a second durable cluster started with
   ``--insecure-no-auth`` runs phase 1 first, in the same run: the ratio
   ``auth_to_no_auth`` is what checking tokens costs. ``--no-auth-compare``
   skips it. The ephemeral cluster runs ``--insecure-no-auth`` (its
   throwaway directory, and so its token, is out of reach).

6. ``--baseline REV`` (default: the last revision before signed feeds) also
   runs a durable cluster of that revision's code (exported with ``git
   archive`` into a temporary folder), phase 1 only, first: the throughput
   without signatures, in the same run, and the ratio signed / unsigned.
   ``--baseline none`` skips it; ``--baseline-after`` runs it last instead
   (the cluster that runs second has measured slower, with the same code
   too: on a shared machine, compare both orders). A revision that knows client accounts
   (e.g. 2073425, before issue 12) runs authenticated like this checkout's.

7. Replays: around phase 1 the bench reads each node's engine counters
   (``crdtbook_rewinds``, ``crdtbook_replayed_events`` in GET /metrics) and
   prints, per node and in all, the orders it accepted, the events that
   arrived from peers (events held minus its own orders), the rewinds, and
   the replay ratio: events undone and re-applied per arriving event
   (0 if every remote event sorts after everything applied), and
   ``applies_per_event``: engine applies per event taken in, local or
   remote, replays included (1.0 if nothing was ever undone). Also the
   nodes' CPU time (from /proc, all three, and each) and the bench's own
   per 1,000 orders accepted; store commits, pushes, pulls and events pulled
   per 1,000 orders (all nodes); and the client's wait for each batch's
   answer (p50, p99). Why events are undone: the events undone per rewind,
   and the age of a push's oldest event (mean and p90, ms) at each step of
   its way, all pushes of all nodes (``crdtbook_push_age_seconds``, see
   node/cluster/pushage.py): durable at its origin (``sealed``), sent
   (``sent``: the wait for the push in flight), read by the receiver
   (``received``: transit and the receiver's HTTP queue), merged
   (``merged``: the receiver's decoding and merge queue); ``_step_ms`` is
   each step's share of the mean.

``--profile PREFIX`` runs the nodes under cProfile (``CRDTBOOK_PROFILE``,
see node/__main__.py): each writes ``PREFIX.<pid>.prof`` when it stops.

``--throughput-only`` runs phase 1 alone (quick iterations); ``--repeat N``
runs phase 1 N times on each cluster (baseline's too) and keeps the best.

Figures, not assertions. Nodes run with the same settings as `crdtbook node`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import print_figures  # noqa: E402
from revision import export  # noqa: E402
from workload import order_stream  # noqa: E402

from crdtbook.codec import encode_event  # noqa: E402
from crdtbook.events import make_order  # noqa: E402
from node.cli.devnet import start_node, stop  # noqa: E402
from node.cluster.peerhttp import PeerClient  # noqa: E402
from node.store import accounts, jointoken  # noqa: E402

UNSIGNED = "8133cb8"  # the last revision whose nodes exchanged unsigned deltas
ROOT = Path(__file__).resolve().parent.parent




_last_status = [0.0]


def status_line(text: str) -> None:
    """A progress line: redrawn in place on a terminal, one line a few seconds otherwise."""
    now = time.monotonic()
    if sys.stderr.isatty():
        if now - _last_status[0] >= 0.2:
            _last_status[0] = now
            print(f"\r{text:<78}", end="", file=sys.stderr, flush=True)
    elif now - _last_status[0] >= 5.0:
        _last_status[0] = now
        print(text, file=sys.stderr, flush=True)


TOKENS: dict[str, str] = {}  # node URL -> its default account's token (auth clusters)
NO_LIMIT = ["--rate-limit", "1000000000", "--rate-burst", "1000000000"]


class NodeTokens(httpx.Auth):
    """Sends the default account's token of the node a request goes to, if it has one."""

    def auth_flow(self, request: httpx.Request):
        token = TOKENS.get(f"{request.url.scheme}://{request.url.host}:{request.url.port}")
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def client(**settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=NodeTokens(), **settings)


COUNTERS = {"crdtbook_orders_accepted_total": "orders", "crdtbook_events_total": "events",
            "crdtbook_rewinds_total": "rewinds", "crdtbook_replayed_events_total": "replayed"}


AGE = "crdtbook_push_age_seconds"
AGE_STEPS = ("sealed", "sent", "received", "merged")


async def counters(urls) -> list[dict]:
    """Per node, the engine and order counters of its GET /metrics, and the push-age
    histogram's series (``(name, step, le)`` -> value; see node/cluster/pushage.py)."""
    out = []
    async with client(timeout=30) as http:
        for url in urls:
            values: dict = dict.fromkeys((*COUNTERS.values(), "gaps"), 0)
            for line in (await http.get(f"{url}/metrics")).text.splitlines():
                name, _, value = line.rpartition(" ")
                if name in COUNTERS:
                    values[COUNTERS[name]] = int(float(value))
                elif name == 'crdtbook_door_refused_total{reason="gap"}':
                    values["gaps"] = int(float(value))  # blocks skipped past a gap
                elif name.startswith(AGE):
                    series, _, labels = name.partition("{")
                    fields = dict(item.split("=", 1) for item in labels.rstrip("}").split(","))
                    key = (series[len(AGE):], fields["step"].strip('"'),
                           fields.get("le", "").strip('"'))
                    values[key] = float(value)
            out.append(values)
    return out


def push_ages(before: list[dict], after: list[dict]) -> dict:
    """Mean and p90 (from the buckets, interpolated) in ms of the push-age steps, all
    nodes' pushes together, between two ``counters``; and each step's share of the
    way (the mean's rise since the step before)."""
    figures: dict = {}
    previous = 0.0
    for step in AGE_STEPS:
        buckets: dict[float, float] = {}
        total = count = 0.0
        for b, a in zip(before, after, strict=True):
            for key, value in a.items():
                if isinstance(key, tuple) and key[1] == step:
                    delta = value - b.get(key, 0.0)
                    if key[0] == "_sum":
                        total += delta
                    elif key[0] == "_count":
                        count += delta
                    elif key[0] == "_bucket":
                        le = float(key[2])
                        buckets[le] = buckets.get(le, 0.0) + delta
        if not count:
            continue
        mean = total / count * 1000
        figures[f"push_age_{step}_mean_ms"] = round(mean, 1)
        figures[f"push_age_{step}_p90_ms"] = round(_quantile(buckets, count, 0.9) * 1000, 1)
        figures[f"push_age_{step}_pushes"] = int(count)
        figures[f"push_age_{step}_step_ms"] = round(mean - previous, 1)
        previous = mean
    return figures


def _quantile(buckets: dict[float, float], count: float, q: float) -> float:
    """The q-quantile of a cumulative histogram, linear within its bucket."""
    wanted, low, below = q * count, 0.0, 0.0
    for le in sorted(buckets):
        if buckets[le] >= wanted:
            if le == float("inf"):
                return low
            inside = buckets[le] - below
            return low + (le - low) * ((wanted - below) / inside if inside else 1.0)
        low, below = le, buckets[le]
    return low


def replays(before: list[dict], after: list[dict]) -> dict:
    """Per node and in all: orders accepted, events arrived from peers, rewinds,
    replayed events, and replayed per arrived event, between two ``counters``."""
    figures: dict = {}
    total = dict.fromkeys(("orders", "arrived", "rewinds", "replayed"), 0)
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        d = {k: a[k] - b[k] for k in COUNTERS.values()}
        node = {"orders": d["orders"], "arrived": d["events"] - d["orders"],
                "rewinds": d["rewinds"], "replayed": d["replayed"]}
        for k, v in node.items():
            total[k] += v
        figures[f"node{i}"] = dict(node, ratio=round(node["replayed"] / max(node["arrived"], 1),
                                                     3))
    figures["replay_ratio"] = round(total["replayed"] / max(total["arrived"], 1), 3)
    # issue 12's figure: engine applies per event taken in (local or remote), the
    # first apply of each plus every replay (1.0: nothing was ever undone)
    events = total["orders"] + total["arrived"]
    figures["applies_per_event"] = round((events + total["replayed"]) / max(events, 1), 3)
    figures["rewinds"] = total["rewinds"]
    figures["undone_per_rewind"] = round(total["replayed"] / max(total["rewinds"], 1), 1)
    # blocks a receiver skipped past a gap (a push overtaken by the next): pulls repair
    figures["gap_skips"] = sum(a["gaps"] - b["gaps"] for b, a in zip(before, after,
                                                                         strict=True))
    return figures


BODIES = 500  # distinct request bodies of phase 1, made before it starts and used in turn
ANSWER_LIMIT = 16 * 1024 * 1024  # bytes of one batch's answer the lean client reads


async def throughput(urls, duration, batch, workers, rng, waits: list[float] | None = None,
                     own_cpu: list[float] | None = None, lean: bool = True) -> tuple[int, float]:
    orders = order_stream(rng)
    # The bodies are made and encoded before the clock starts: the bench shares the
    # cores with the nodes, and its own work per order is not what is measured.
    bodies = [json.dumps([next(orders) for _ in range(batch)]).encode()
              for _ in range(BODIES)]
    json_headers = {"content-type": "application/json"}
    waits = [] if waits is None else waits  # seconds from each request to its answer
    accepted = 0
    errors = 0
    cpu = time.process_time()
    start = trio.current_time()
    deadline = start + duration

    async def worker(i: int, http) -> None:
        nonlocal accepted, errors
        n = i
        while trio.current_time() < deadline:
            url = urls[n % len(urls)]
            body = bodies[(n * workers + i) % BODIES]  # each worker its own share
            n += 1
            sent = trio.current_time()
            if lean:
                response = await http.request("POST", f"{url}/orders", body,
                                              headers_of[url], ANSWER_LIMIT)
            else:
                response = await http.post(f"{url}/orders", content=body, headers=json_headers)
            waits.append(trio.current_time() - sent)
            if response.status_code == 201:
                accepted += batch
            else:
                errors += 1

    async def report() -> None:
        while trio.current_time() < deadline:
            elapsed = trio.current_time() - start
            status_line(f"throughput: {accepted:,} orders in {elapsed:.0f}s "
                        f"({accepted / max(elapsed, 1e-9):,.0f}/s), {errors} errors")
            await trio.sleep(1)

    # The same headers httpx sends with NodeTokens, made once per node.
    headers_of = {url: dict(json_headers, **({"authorization": f"Bearer {TOKENS[url]}"}
                                             if url in TOKENS else {}))
                  for url in urls}
    async with contextlib.AsyncExitStack() as stack:
        if lean:
            http = PeerClient(max_connections=workers * len(urls), max_idle=workers * len(urls),
                              idle_expiry=30.0, user_agent="crdtbook-bench")
            stack.push_async_callback(http.aclose)
        else:
            http = await stack.enter_async_context(client(timeout=30))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            for i in range(workers):
                nursery.start_soon(worker, i, http)
    elapsed = trio.current_time() - start
    if own_cpu is not None:
        own_cpu.append(time.process_time() - cpu)
    print(file=sys.stderr)
    return accepted, elapsed


async def wait_converged(urls, timeout=120.0) -> float:
    start = trio.current_time()
    async with client(timeout=60) as http:
        while True:
            statuses = [(await http.get(f"{u}/status")).json() for u in urls]
            counts = [s["events_total"] for s in statuses]
            if len({s["digest"] for s in statuses}) == 1:
                print(file=sys.stderr)
                return trio.current_time() - start
            if trio.current_time() - start > timeout:
                raise SystemExit(f"cluster did not converge in {timeout}s: {counts}")
            status_line(f"waiting for convergence: events held {counts}")
            await trio.sleep(0.2)


async def latency(urls, rate, duration, rng, lags: list[int]) -> list[float]:
    orders = order_stream(rng)
    batch = 10
    pending: dict[tuple[str, int], float] = {}  # (origin replica, seq) -> submit time
    latencies: list[float] = []
    done = trio.Event()

    async def submit(http: httpx.AsyncClient) -> None:
        interval = batch / rate
        start = trio.current_time()
        n = 0
        while trio.current_time() - start < duration:
            url = urls[n % len(urls)]
            sent_at = trio.current_time()
            response = await http.post(f"{url}/orders", json=[next(orders) for _ in range(batch)])
            for item in response.json():
                order = item["order"]
                pending[(order["replica"], order["seq"])] = sent_at
            n += 1
            await trio.sleep_until(start + n * interval)
        done.set()

    async def watch(http: httpx.AsyncClient) -> None:
        while not (done.is_set() and not pending):
            contexts = []
            for url in urls:
                contexts.append((await http.get(f"{url}/context")).json()["context"])
            now = trio.current_time()
            for key in sorted(pending):
                replica, seq = key
                if all(c.get(replica, 0) >= seq for c in contexts):
                    latencies.append(now - pending.pop(key))
            status_line(f"latency: {len(latencies):,} orders measured, {len(pending)} in flight")
            await trio.sleep(0.005)

    async def lag(http: httpx.AsyncClient) -> None:
        while not done.is_set():
            for url in urls:
                status = (await http.get(f"{url}/status")).json()
                if status["final_lag_ms"] is not None:
                    lags.append(status["final_lag_ms"])
            await trio.sleep(0.05)

    async with client(timeout=30) as http, trio.open_nursery() as nursery:
        nursery.start_soon(submit, http)
        nursery.start_soon(watch, http)
        nursery.start_soon(lag, http)
    print(file=sys.stderr)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def gossip_totals(urls) -> dict:
    async with client(timeout=30) as http:
        totals: dict[str, int] = {}
        for url in urls:
            for key, value in (await http.get(f"{url}/status")).json()["gossip"].items():
                totals[key] = totals.get(key, 0) + value
    return totals


async def ack_latency(urls, rate, duration, rng) -> tuple[list[float], int, int]:
    """Client-side latency of single-order POSTs at a fixed rate (open loop)."""
    orders = order_stream(rng)
    latencies: list[float] = []
    errors = 0
    late = 0  # requests started more than 1 ms behind schedule (the bench itself lagging)
    interval = 1 / rate
    total = int(rate * duration)

    async def one(http: httpx.AsyncClient, url: str, body: dict) -> None:
        nonlocal errors
        sent_at = trio.current_time()
        try:
            response = await http.post(f"{url}/orders", json=body)
        except httpx.TransportError:  # a connection reset under overload: counted, not fatal
            errors += 1
            return
        if response.status_code == 201:
            latencies.append(trio.current_time() - sent_at)
        else:
            errors += 1

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with client(timeout=30, limits=limits) as http:
        # warm up: one connection per node before the clock starts
        for url in urls:
            await http.get(f"{url}/status")
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for n in range(total):
                await trio.sleep_until(start + n * interval)
                if trio.current_time() - (start + n * interval) > 0.001:
                    late += 1
                nursery.start_soon(one, http, urls[n % len(urls)], next(orders))
                status_line(f"ack latency: {n + 1:,} of {total:,} sent, "
                            f"{len(latencies):,} acknowledged, {errors} errors")
    print(file=sys.stderr)
    return latencies, errors, late


async def discovered(urls) -> None:
    async with client() as http:
        while True:
            statuses = [(await http.get(f"{u}/status")).json() for u in urls]
            if all(len(s["peers"]) == len(urls) - 1 and s["joined"] for s in statuses):
                return
            await trio.sleep(0.1)


def start_cluster(args, data_root: str | None, code: str | None = None,
                  auth: bool = True) -> tuple[list, list[str]]:
    """3 nodes: ephemeral if ``data_root`` is None, else durable under it; the code
    in ``code`` if given (a baseline revision), else this checkout's; clients
    authenticate unless ``auth`` is off (or the cluster is ephemeral)."""
    auth = auth and data_root is not None
    # a baseline from before client accounts knows no tokens nor their options
    modern = code is None or os.path.exists(os.path.join(code, "node/store/accounts.py"))
    procs: list = []
    urls: list[str] = []
    token = jointoken.new()  # the founder makes it the cluster's, the others join with it
    try:
        for i in range(3):
            extra = ["--pull-interval", str(args.pull_interval)]
            if modern:  # a baseline from before join tokens knows no such option
                extra += ["--join-token", token]
                extra += NO_LIMIT if auth else ["--insecure-no-auth"]
            extra += (["--ephemeral"] if data_root is None
                      else ["--data-dir", os.path.join(data_root, f"node{i}")])
            if getattr(args, "peer_stream", False) and code is None:
                extra += ["--peer-stream"]  # pushes over one WebSocket per peer
            proc, url = start_node(extra + (["--peer", urls[0]] if urls else []), cwd=code)
            procs.append(proc)
            urls.append(url)
            if auth and modern:
                TOKENS[url] = accounts.read(os.path.join(data_root, f"node{i}"))
        print(f"nodes ({'ephemeral' if data_root is None else 'data under ' + data_root}): "
              f"{' '.join(urls)}", file=sys.stderr)
        trio.run(discovered, urls)
    except BaseException:
        stop(procs)
        raise
    return procs, urls


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def activity(urls) -> dict[str, int]:
    """All nodes together: store commits, pushes and pulls made, events pulled."""
    totals = dict.fromkeys(("commits", "push_requests", "pull_requests", "pulled_events"), 0)
    async with client(timeout=30) as http:
        for url in urls:
            status = (await http.get(f"{url}/status")).json()
            totals["commits"] += status["store"]["commits"]
            for key in ("push_requests", "pull_requests", "pulled_events"):
                totals[key] += status["gossip"][key]
    return totals


async def run_throughput(args, urls, rng, pids=()) -> dict:
    """Phase 1, ``--repeat`` times on the same cluster: the best run's figures
    (by orders/s), with every run's orders/s and replay ratio."""
    runs = [await throughput_once(args, urls, rng, pids) for _ in range(args.repeat)]
    best = max(runs, key=lambda run: run["orders_per_s"])
    if len(runs) > 1:
        best["runs_orders_per_s"] = " ".join(f"{run['orders_per_s']:,}" for run in runs)
        best["runs_replay_ratio"] = " ".join(str(run["replay_ratio"]) for run in runs)
        best["runs_applies_per_event"] = " ".join(str(run["applies_per_event"])
                                                  for run in runs)
        best["runs_push_age_merged_mean_ms"] = " ".join(
            str(run.get("push_age_merged_mean_ms")) for run in runs)
    return best


async def throughput_once(args, urls, rng, pids=()) -> dict:
    before = await counters(urls)
    acts = await activity(urls)
    cpu = [cpu_seconds(pid) for pid in pids]
    waits: list[float] = []
    own_cpu: list[float] = []  # the bench's CPU while it sent the orders
    accepted, elapsed = await throughput(urls, args.duration, args.batch, args.workers, rng,
                                         waits, own_cpu, lean=not args.httpx_client)
    own = own_cpu[0]
    each = [cpu_seconds(pid) - c for pid, c in zip(pids, cpu, strict=True)]
    cpu = sum(each)
    acts = {k: v - acts[k] for k, v in (await activity(urls)).items()}
    converge_s = await wait_converged(urls)
    after = await counters(urls)
    replayed = replays(before, after)
    ages = push_ages(before, after)
    nodes = {f"node{i}_orders_per_s": round(replayed[f"node{i}"]["orders"] / elapsed)
             for i in range(len(urls))}
    per_node = {f"node{i}_replays": " ".join(f"{k}={v:,}" for k, v in
                                             replayed.pop(f"node{i}").items())
                for i in range(len(urls))}
    return {"orders_accepted": accepted, "orders_per_s": round(accepted / elapsed),
            "converged_after_load_s": round(converge_s, 3),
            "request_p50_ms": round(percentile(waits, 0.5) * 1000, 1) if waits else None,
            "request_p99_ms": round(percentile(waits, 0.99) * 1000, 1) if waits else None,
            # the nodes' CPU (all three, threads included) per 1,000 orders accepted
            "node_cpu_ms_per_1k_orders": round(cpu * 1e6 / max(accepted, 1), 1),
            "nodes_cpu_ms_per_1k_orders": " ".join(f"{c * 1e6 / max(accepted, 1):.1f}"
                                                   for c in each),
            # the bench's own CPU (its clients share the cores with the nodes)
            "client_cpu_ms_per_1k_orders": round(own * 1e6 / max(accepted, 1), 1),
            # per 1,000 orders, all nodes: store commits, pushes, pulls, events pulled
            # (pulled events mostly duplicate pushes still on their way)
            **{f"{k}_per_1k_orders": round(v * 1000 / max(accepted, 1), 1)
               for k, v in acts.items()},
            **nodes, **replayed, **ages, **per_node}


async def run(args, urls, rng, pids=()) -> dict:
    before = await gossip_totals(urls)
    result = await run_throughput(args, urls, rng, pids)
    acks, ack_errors, late = await ack_latency(urls, args.ack_rate, args.ack_duration, rng)
    await wait_converged(urls)
    mid = await gossip_totals(urls)
    lags: list[int] = []
    lat = await latency(urls, args.rate, args.latency_duration, rng, lags)
    await wait_converged(urls)
    after = await gossip_totals(urls)
    orders_total = result["orders_accepted"] + len(acks) + len(lat)
    peers = len(urls) - 1
    sample = make_order(1_764_000_000_000 << 16, "n0123abcd", 12345, "buy", "limit",
                        99_87 * 10**6, 12 * 10**8, "")
    order_cbor = len(encode_event(sample)) - len(b'\xa3aveventekindbv\x01')  # payload only
    wire = (after["wire_bytes"] - before["wire_bytes"]) / (orders_total * peers)
    wire_latency_phase = (after["wire_bytes"] - mid["wire_bytes"]) / (len(lat) * peers)
    return {
        **result,
        "ack_rate_per_s": args.ack_rate,
        "ack_orders": len(acks),
        "ack_errors": ack_errors,
        "ack_late_starts": late,
        "ack_p50_ms": round(percentile(acks, 0.50) * 1000, 2),
        "ack_p99_ms": round(percentile(acks, 0.99) * 1000, 2),
        "ack_max_ms": round(max(acks) * 1000, 2),
        "latency_rate_per_s": args.rate,
        "latency_orders": len(lat),
        "convergence_p50_ms": round(percentile(lat, 0.50) * 1000, 1),
        "convergence_p99_ms": round(percentile(lat, 0.99) * 1000, 1),
        "convergence_max_ms": round(max(lat) * 1000, 1),
        "pull_interval_s": args.pull_interval,
        "frontier_lag_samples": len(lags),
        "frontier_lag_p50_ms": round(percentile(lags, 0.50)) if lags else None,
        "frontier_lag_p99_ms": round(percentile(lags, 0.99)) if lags else None,
        "order_cbor_bytes": order_cbor,
        "wire_bytes_per_order_per_peer": round(wire, 1),
        "wire_bytes_per_order_per_peer_at_rate": round(wire_latency_phase, 1),
        "wire_ratio_to_cbor": round(wire / order_cbor, 2),
        "wire_ratio_to_cbor_at_rate": round(wire_latency_phase / order_cbor, 2),
        "push_requests": after["push_requests"] - before["push_requests"],
        "pull_requests": after["pull_requests"] - before["pull_requests"],
        "dropped_pushes": after["dropped_pushes"],
    }


def measure(args, data_root: str | None, full: bool, code: str | None = None,
            auth: bool = True) -> dict:
    """Start a fresh cluster, run the phases (throughput only unless ``full``), stop it."""
    rng = random.Random(args.seed)
    procs, urls = start_cluster(args, data_root, code, auth)
    try:
        pids = [proc.pid for proc in procs]
        if full:
            return trio.run(run, args, urls, rng, pids)
        return trio.run(run_throughput, args, urls, rng, pids)
    finally:
        stop(procs)


SETTLE_S = 5.0


def settle() -> None:
    """Let the disk catch up with a removed cluster (its files' blocks freed, discarded)
    before the next one starts: the cluster that ran second was otherwise the slower
    one, with the same code (same-code pairs, shared machine)."""
    os.sync()
    time.sleep(SETTLE_S)


def baseline(args) -> dict:
    """Phase 1 on a durable cluster of ``args.baseline``'s code (exported, then removed)."""
    print(f"== baseline: durable cluster of revision {args.baseline}", file=sys.stderr)
    code = tempfile.mkdtemp(prefix="crdtbook-baseline-")
    data = tempfile.mkdtemp(prefix="crdtbook-bench-")
    try:
        export(args.baseline, into=code)
        figures = measure(args, data, full=False, code=code)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"baseline skipped: revision {args.baseline} could not be exported ({exc})",
              file=sys.stderr)
        return {}
    finally:
        shutil.rmtree(code, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        settle()
    return {"baseline_revision": args.baseline,
            "baseline_durable_orders_per_s": figures["orders_per_s"],
            "baseline_replay_ratio": figures["replay_ratio"],
            "baseline_applies_per_event": figures["applies_per_event"],
            "baseline_request_p50_ms": figures["request_p50_ms"],
            "baseline_node_cpu_ms_per_1k_orders": figures["node_cpu_ms_per_1k_orders"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ephemeral", action="store_true",
                       help="only the ephemeral cluster (no fsync), all phases")
    which.add_argument("--data-dir", nargs="?", const="", metavar="ROOT",
                       help="only the durable cluster, data under ROOT (default: a temp folder)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--ack-rate", type=float, default=500.0)
    parser.add_argument("--ack-duration", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--latency-duration", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pull-interval", type=float, default=1.0,
                        help="the nodes' pull (heartbeat) interval, seconds (default 1)")
    parser.add_argument("--baseline", default=UNSIGNED, metavar="REV",
                        help=f"also measure a durable cluster of revision REV (default "
                             f"{UNSIGNED}, before signed feeds); 'none' to skip")
    parser.add_argument("--baseline-after", action="store_true",
                        help="run the baseline's cluster after this checkout's, not before "
                             "(the cluster that runs second has measured slower, same code "
                             "or not: run both orders and compare)")
    parser.add_argument("--no-auth-compare", action="store_true",
                        help="skip the durable --insecure-no-auth cluster (phase 1)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run phase 1 N times per cluster and keep the best (a shared "
                             "machine is noisy)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="phase 1 only (the baseline is phase 1 only anyway)")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="run the nodes under cProfile: each writes PREFIX.<pid>.prof "
                             "when it stops (read with python -m pstats)")
    parser.add_argument("--peer-stream", action="store_true",
                        help="this checkout's nodes push over one WebSocket per peer "
                             "(node --peer-stream); a baseline's never do")
    parser.add_argument("--httpx-client", action="store_true",
                        help="phase 1's clients post with httpx (as before the lean "
                             "client: about 6 ms more of the bench's CPU per 1,000 orders, "
                             "taken from the same two cores as the nodes')")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ["CRDTBOOK_PROFILE"] = os.path.abspath(args.profile)
    result: dict = {"nodes": 3, "duration_s": args.duration, "batch": args.batch,
                    "workers": args.workers,
                    "client": "httpx" if args.httpx_client else "lean (h11)"}
    if args.baseline != "none" and not args.ephemeral and not args.baseline_after:
        result.update(baseline(args))
    if args.data_dir is None:
        print("== ephemeral cluster (--ephemeral: no fsync)", file=sys.stderr)
        eph = measure(args, None, full=args.ephemeral and not args.throughput_only)
        if args.ephemeral:
            result.update({"mode": "ephemeral", **eph})
        else:
            result["ephemeral_orders_per_s"] = eph["orders_per_s"]
    if not args.ephemeral and not args.no_auth_compare:
        print("== durable cluster without authentication (--insecure-no-auth)",
              file=sys.stderr)
        root = tempfile.mkdtemp(prefix="crdtbook-bench-")
        try:
            result["no_auth_durable_orders_per_s"] = measure(
                args, root, full=False, auth=False)["orders_per_s"]
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if not args.ephemeral:
        print("== durable cluster (--data-dir, fsync on, clients authenticated)",
              file=sys.stderr)
        root = args.data_dir or tempfile.mkdtemp(prefix="crdtbook-bench-")
        try:
            dur = measure(args, root, full=not args.throughput_only)
        finally:
            if not args.data_dir:
                shutil.rmtree(root, ignore_errors=True)
        if args.data_dir is not None:
            result.update({"mode": "durable", **dur})
        else:
            result["mode"] = "ephemeral+durable"
            result["durable_orders_per_s"] = dur.pop("orders_per_s")
            result["durable_to_ephemeral"] = round(
                result["durable_orders_per_s"] / result["ephemeral_orders_per_s"], 3)
            result.update(dur)
        if "no_auth_durable_orders_per_s" in result:
            result["auth_to_no_auth"] = round(
                (result.get("durable_orders_per_s") or dur["orders_per_s"])
                / result["no_auth_durable_orders_per_s"], 3)
        if args.baseline != "none" and args.baseline_after:
            settle()
            result.update(baseline(args))
        if "baseline_durable_orders_per_s" in result:
            result["durable_signed_to_baseline"] = round(
                (result.get("durable_orders_per_s") or dur["orders_per_s"])
                / result["baseline_durable_orders_per_s"], 3)
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
