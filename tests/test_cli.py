"""End to end through the CLI, in subprocesses: a real `crdtbook node` and client commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.store import accounts

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "node"]


def crdtbook(*args: str, node: str | None = None, check: bool = True):
    env = dict(os.environ)
    if node:
        env["CRDTBOOK_NODE"] = node
    result = subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def node_process(tmp_path, monkeypatch):
    """A node, and $CRDTBOOK_TOKEN set to its default account's token (the CLI runs
    elsewhere than the node's default data directory)."""
    proc = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0", "--log-level", "warning",
                             "--data-dir", str(tmp_path / "node")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert " listening on " in line, proc.stderr.read()
    monkeypatch.setenv("CRDTBOOK_TOKEN", accounts.read(str(tmp_path / "node")))
    yield proc, line.split()[-1]
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_order_book_fills_end_to_end(node_process):
    _, url = node_process
    crdtbook("order", "sell", "3@12", node=url)
    out = crdtbook("order", "buy", "2@13", "--node", url).stdout
    assert "filled" in out
    book = json.loads(crdtbook("book", "--json", node=url).stdout)
    assert book["bids"] == []
    assert book["asks"] == [{"price": "12", "qty": "1", "orders": 1}]
    fills = json.loads(crdtbook("fills", "--json", node=url).stdout)
    assert [(f["qty"], f["price"]) for f in fills] == [("2", "12")]
    table = crdtbook("book", node=url).stdout
    assert "12" in table and "digest" in table
    # a single node is the whole membership: its fills are final at once
    assert "final" in crdtbook("fills", node=url).stdout and fills[0]["final"] is True
    status = json.loads(crdtbook("status", "--json", node=url).stdout)
    assert status["events_total"] == 3  # its founding join, then the two orders
    order_id = fills[0]["maker"]
    cancelled = json.loads(crdtbook("cancel", order_id, "--json", node=url).stdout)
    assert cancelled["cancel"]["status"] == "cancelled"
    market = crdtbook("order", "buy", "5", "--type", "market", "--json", node=url)
    assert json.loads(market.stdout)["order"]["status"] == "cancelled"  # nothing left to buy


def test_graceful_sigterm_exits_zero(node_process):
    proc, url = node_process
    crdtbook("status", node=url)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_graceful_sigint_exits_zero(node_process):
    proc, _ = node_process
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0


def test_sigint_works_when_started_in_the_background_by_a_script():
    # A non-interactive shell starts `cmd &` with SIGINT ignored; the node must still stop.
    proc = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0", "--ephemeral"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert " listening on " in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert "event=node.stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_standalone_registry_command():
    proc = subprocess.Popen([*CLI, "registry", "--listen", "127.0.0.1:0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[-1]
        import httpx

        assert httpx.post(f"{url}/announce", json={"data": ["k", 1234]}).json() == 1
        assert httpx.post(f"{url}/lookup", json={"data": "k"}).json() == ["127.0.0.1:1234"]
        assert httpx.post(f"{url}/lookup", json={"data": 5}).json() == "ERR_GRAPE_LOOKUP"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("order", "sell", "3"), "QTY@PRICE"),
        (("order", "sell", "3@x"), "not a plain decimal"),
        (("order", "buy", "5@1", "--type", "market"), "takes no price"),
        (("cancel", "nonsense"), "REPLICA:SEQ"),
    ],
)
def test_bad_input_one_clear_line(node_process, args, message):
    """A usage error: one line saying what is wrong, then indented hints; status 2,
    and nothing reached the node."""
    _, url = node_process
    result = crdtbook(*args, node=url, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    first, *hints = result.stderr.rstrip("\n").split("\n")
    assert first.startswith(f"crdtbook {args[0]}: ") and "Traceback" not in result.stderr
    assert all(hint.startswith("  ") for hint in hints)
    assert json.loads(crdtbook("status", "--json", node=url).stdout)["events_total"] == 1


def test_unreachable_node_one_clear_line():
    result = crdtbook("book", node="http://127.0.0.1:9", check=False)
    assert result.returncode == 1
    assert "cannot reach a node" in result.stderr and "Traceback" not in result.stderr


def test_node_refuses_a_bad_peer_url():
    result = crdtbook("node", "--listen", "127.0.0.1:0", "--peer", "ftp://x", check=False)
    assert result.returncode == 2 and "http://HOST:PORT" in result.stderr


def test_devnet_demo_agrees_and_stops_on_sigint():
    proc = subprocess.Popen([*CLI, "devnet", "-n", "3", "--demo"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("all 3 nodes agree"):
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert any(line.startswith("all 3 nodes agree") for line in lines), "".join(lines)


def test_text_output_shows_short_replica_ids_and_json_the_whole_ones(node_process):
    _, url = node_process
    crdtbook("order", "sell", "3@12", node=url)
    crdtbook("order", "buy", "1@12", node=url)
    status = json.loads(crdtbook("status", "--json", node=url).stdout)
    replica = status["replica"]
    assert len(replica) == 32  # derived from the node's key
    short = replica[:10]
    for command in ("status", "fills", "orders", "events"):
        text = crdtbook(command, node=url).stdout
        assert short in text and replica not in text, command
    fills = json.loads(crdtbook("fills", "--json", node=url).stdout)
    assert fills[0]["maker"] == f"{replica}:2"  # JSON keeps full ids
    assert f"{short}:2" in crdtbook("fills", node=url).stdout


def test_what_a_newcomer_reads(node_process):
    """Through the real command: the global --node before the command, outcomes that
    say what traded, the account, wall-clock times and never a raw clock."""
    _, url = node_process
    crdtbook("order", "sell", "3@12", node=url)
    crdtbook("order", "sell", "1@12.5", node=url)
    market = crdtbook("--node", url, "order", "buy", "5", "--type", "market").stdout
    assert "account local" in market.splitlines()[0]
    assert "filled 4 of 5; 1 not filled (market orders do not rest)" in market
    status = json.loads(crdtbook("--node", url, "status", "--json").stdout)
    replica, final = status["replica"], status["final_clock"]
    assert final and status["final_time"].endswith("Z")
    text = crdtbook("--node", url, "status").stdout
    assert str(final) not in text and status["final_time"][:10] in text
    assert re.search(rf"^{replica[:10]}\s+self\s", text, re.M)  # one line per member
    events = crdtbook("events", node=url).stdout
    clocks = [e["clock"] for e in json.loads(crdtbook("events", "--json", node=url).stdout)]
    assert not any(str(c) in events for c in clocks)
    assert events.splitlines()[0].split()[:2] == ["TIME", "(UTC)"]
    assert "4 events, digest" in crdtbook("book", node=url).stdout  # join + 3 orders
    shortened = crdtbook("cancel", f"{replica[:10]}:2", node=url, check=False)
    assert shortened.returncode == 2
    assert f"crdtbook cancel {replica}:2" in shortened.stderr
