"""Ending commands: a reader that goes away (``| head``) and Ctrl-C, as often as people
press it, end with no traceback and the documented exit status."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from node.store import accounts

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "node"]
SECOND_SIGNAL_AFTER_S = 0.2  # an impatient second Ctrl-C
SETTLE_S = 0.3  # the devnet waiting for Ctrl-C, as a person would let it
HAMMER_EVERY_S = 0.02  # Ctrl-C held down: a signal at every moment of the stop


def start_node(directory: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0", "--log-level", "info",
                             "--data-dir", str(directory)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert " listening on " in line, proc.stderr.read()
    return proc, line.split()[-1]


@pytest.fixture
def busy_node(tmp_path):
    """A node holding enough events that a listing outgrows a pipe's buffer."""
    proc, url = start_node(tmp_path / "node")
    token = accounts.read(str(tmp_path / "node"))
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(300):
            r = http.post(f"{url}/orders", json={"side": "sell", "qty": "1",
                                                 "price": str(100 + i)})
            assert r.status_code == 201, r.text
    yield url
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("command", ["status", "events", "book"])
def test_a_closed_pipe_ends_quietly(busy_node, command):
    proc = subprocess.Popen([*CLI, command, "--node", busy_node, "--limit" if command ==
                             "events" else "--json", *(["1000"] if command == "events" else [])],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first byte
    assert proc.wait(timeout=60) == 141  # as a command killed by SIGPIPE
    assert proc.stderr.read() == b""


def test_head_reads_one_line_and_nothing_complains(busy_node):
    # `crdtbook events | head -1`: head exits after one line, the rest hits a closed pipe
    result = subprocess.run(["bash", "-c", f"{sys.executable} -m node events --limit 1000 "
                             f"--node {busy_node} | head -1; echo \"status ${{PIPESTATUS[0]}}\""],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("TIME (UTC)") and len(lines) == 2
    assert lines[1] in ("status 141", "status 0")  # 0: everything fit in the pipe first
    assert result.stderr == ""


def test_a_node_stopped_by_two_quick_signals_stops_cleanly(tmp_path):
    for i in range(5):
        proc, _ = start_node(tmp_path / f"n{i}")
        proc.send_signal(signal.SIGINT)
        if i % 2:
            time.sleep(SECOND_SIGNAL_AFTER_S / 10)
        proc.send_signal(signal.SIGINT if i < 3 else signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "Exception" not in err, err
        assert "event=node.stopped" in err
    proc, _ = start_node(tmp_path / "held")  # Ctrl-C held down
    while proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        time.sleep(HAMMER_EVERY_S)
    assert proc.wait() == 0
    err = proc.stderr.read()
    assert "Traceback" not in err and "event=node.stopped" in err, err


def devnet(*extra: str) -> tuple[subprocess.Popen, list[str], list[str]]:
    """A devnet in a session of its own (as a terminal runs it), once it waits for
    Ctrl-C: the process, its stdout lines and its node URLs."""
    proc = subprocess.Popen([*CLI, "devnet", "-n", "2", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    err = []
    while not err or "Ctrl-C to stop" not in err[-1]:
        line = proc.stderr.readline()
        assert line, "".join(err)
        err.append(line)
    out = []
    while len(out) < 2 or "node 1:" not in out[1]:
        out.append(proc.stdout.readline())
    urls = [line.split()[-1] for line in out]
    return proc, out, urls


@pytest.mark.parametrize("signals", [
    (signal.SIGINT,), (signal.SIGINT, signal.SIGINT), (signal.SIGTERM,), "hammer",
])
def test_ctrl_c_stops_the_devnet_and_its_nodes_with_one_line(signals):
    proc, _, urls = devnet()
    time.sleep(SETTLE_S)
    if signals == "hammer":
        while proc.poll() is None:  # until it has exited, whatever it is doing
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            time.sleep(HAMMER_EVERY_S)
    for i, signum in enumerate(() if signals == "hammer" else signals):
        if i:
            time.sleep(SECOND_SIGNAL_AFTER_S)
        os.killpg(proc.pid, signum)  # what a terminal does with Ctrl-C: the whole group
    assert proc.wait(timeout=30) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err and "Error" not in err, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"stopping 2 nodes \.\.\. (stopped|killed)", last), err
    for url in urls:  # none left behind
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/status", timeout=5)


def test_devnet_hints_name_a_command_that_works():
    proc, out, _ = devnet()
    try:
        hints = [proc.stdout.readline() for _ in range(4)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    tried = next(line for line in hints if line.startswith("try:"))
    command = tried.split()[2]  # try: CRDTBOOK_NODE=... COMMAND order sell 3@12 ...
    found = shutil.which(command) if command == "crdtbook" else str(ROOT / command)
    assert found and os.access(found, os.X_OK), tried
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("crdtbook ")
