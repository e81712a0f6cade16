"""Admission: signed join requests, join tokens, and what a refused request changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cbor2
import pytest

from crdtbook import keys
from node.cluster import admission
from node.store import jointoken

from .nodes import JOIN_TOKEN, client, eventually, start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "node"]
HEADERS = {"content-type": "application/cbor", "x-crdtbook-book": "default",
           "x-crdtbook-url": "http://127.0.0.1:9"}


def now_ms() -> int:
    return int(time.time() * 1000)


def signed(signer: keys.Signer, token: str | None = JOIN_TOKEN, **override) -> bytes:
    """A join request as an honest joiner makes it, then ``override``n (re-signed
    by ``signer`` over what it then says, unless ``sig`` is overridden too)."""
    fields = cbor2.loads(admission.request(signer, "default", token, now_ms()))
    fields.update(override)
    if "proof" not in override and token is not None:  # the token's proof of what it says
        fields["proof"] = admission.token_proof(token, fields["book"], fields["replica"],
                                                fields["key"], fields["time"])
    if "sig" not in override:
        fields["sig"] = signer.sign(admission.message(
            fields["book"], fields["replica"], fields["key"], fields["proof"], fields["time"]))
    return cbor2.dumps(fields)


async def cluster_state(http, *running) -> list:
    """What every node says of the cluster (GET /status), and what it holds."""
    states = []
    for r in running:
        status = (await http.get(r.url + "/status")).json()
        states.append((status["members"], status["events_total"], status["digest"],
                       sorted(p["url"] for p in status["peers"])))
    return states


async def test_a_malicious_joiner_is_refused_and_changes_nothing(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url)
    await eventually(lambda: len(a.node.replica.members()) == 2)
    mallory = keys.Signer.from_name("mallory")
    victim = keys.Signer.from_name("victim")
    attempts = {
        "wrong token": (signed(mallory, token="crdtbook-join-" + "f" * 32), "bad_join_token"),
        "no token": (signed(mallory, token=None), "bad_join_token"),
        # someone else's id, with the attacker's own key (signed by the attacker)
        "another's id": (signed(mallory, replica=victim.id), "bad_key"),
        # the victim's id and key, but the attacker cannot sign for it
        "another's key": (signed(mallory, replica=victim.id, key=victim.public), "bad_signature"),
        "bad signature": (signed(mallory, sig=b"\x00" * 64), "bad_signature"),
        "replayed": (signed(mallory, time=now_ms() - 6 * 60_000), "stale_join"),
        "from the future": (signed(mallory, time=now_ms() + 6 * 60_000), "stale_join"),
    }
    async with client() as http:
        before = await cluster_state(http, a, b)
        for what, (body, error) in attempts.items():
            for target in (a, b):
                r = await http.post(target.url + "/peer/join", content=body, headers=HEADERS)
                assert r.status_code == 403, (what, r.text)
                assert r.json()["error"] == error, what
        r = await http.post(a.url + "/peer/join", content=signed(mallory, token=None),
                            headers=HEADERS)
        assert "crdtbook join-token" in r.json()["detail"]
        for body, status in [(b"\xff\x00", 400), (cbor2.dumps({"v": 1}), 400),
                             (b"\xa0" * 5000, 413)]:
            r = await http.post(a.url + "/peer/join", content=body, headers=HEADERS)
            assert r.status_code == status, r.text
        assert await cluster_state(http, a, b) == before
        for r in (a, b):
            assert mallory.id not in r.node.replica.members()
            assert "http://127.0.0.1:9" not in r.node.peers

        # the same request, honest, is admitted: the refusals above were for cause
        r = await http.post(a.url + "/peer/join", content=signed(mallory), headers=HEADERS)
        assert r.status_code == 200, r.text
        await eventually(lambda: mallory.id in b.node.replica.members())
        assert a.node.replica.membership.keys[mallory.id] == mallory.public


async def test_a_retired_id_cannot_join_again(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url)
    async with client() as http:
        r = await http.post(a.url + "/evict", json={"replica": b.node.id, "force": True},
                            headers=a.admin, timeout=30)
        assert r.status_code == 200, r.text
        fake = keys.Signer(b.node.signer.seed())  # b's own key: a valid request
        events = a.node.replica.events_total()
        r = await http.post(a.url + "/peer/join", content=signed(fake), headers=HEADERS)
        assert r.status_code == 409 and r.json()["error"] == "retired"
        assert a.node.replica.events_total() == events


async def test_tokens_are_kept_by_founder_and_joiners_and_rotate_per_member(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"), join_token=None)
    token = jointoken.read(str(tmp_path / "a"))
    assert token.startswith(jointoken.PREFIX) and len(token) == len(jointoken.PREFIX) + 32
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"), join_token=token)
    assert jointoken.read(str(tmp_path / "b")) == token  # it can sponsor others now
    async with client() as http:
        new = jointoken.rotate(str(tmp_path / "a"))
        assert new != token
        first, second = keys.Signer.from_name("first"), keys.Signer.from_name("second")
        r = await http.post(a.url + "/peer/join", content=signed(first, token=token),
                            headers=HEADERS)
        assert r.status_code == 403 and r.json()["error"] == "bad_join_token"
        r = await http.post(b.url + "/peer/join", content=signed(first, token=token),
                            headers=HEADERS)
        assert r.status_code == 200  # b was not rotated: the old token still works there
        r = await http.post(a.url + "/peer/join", content=signed(second, token=new),
                            headers=HEADERS)
        assert r.status_code == 200


async def test_an_open_cluster_admits_without_a_token(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"), join_token=None,
                    open_admission=True)
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"), join_token=None)
    assert jointoken.read(str(tmp_path / "a")) == jointoken.OPEN
    assert jointoken.read(str(tmp_path / "b")) == jointoken.OPEN  # b sponsors openly too
    async with client() as http:
        r = await http.post(b.url + "/peer/join", content=signed(keys.Signer.from_name("c"),
                                                                  token=None), headers=HEADERS)
        assert r.status_code == 200


def run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CRDTBOOK_")}, **env}
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def founder(tmp_path):
    data = str(tmp_path / "founder")
    proc = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0", "--data-dir", data,
                             "--log-level", "warning"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert " listening on " in line
        yield proc, line.split()[-1], data
    finally:
        proc.kill()
        proc.wait()


def test_the_founder_prints_its_token_and_a_wrong_one_stops_a_joiner(founder, tmp_path):
    proc, url, data = founder
    said = ""
    deadline = time.monotonic() + 20
    while "to add a node" not in said and time.monotonic() < deadline:
        said += proc.stderr.readline()
    token = jointoken.read(data)
    assert f"join token: {token}" in said
    assert f"--peer {url} --join-token {token}" in said
    printed = run("join-token", "--data-dir", data)
    assert printed.returncode == 0 and printed.stdout.strip() == token
    joiner = run("node", "--listen", "127.0.0.1:0", "--ephemeral", "--peer", url,
                 "--join-token", "crdtbook-join-" + "0" * 32, "--log-level", "error")
    assert joiner.returncode == 3, joiner.stderr
    last = joiner.stderr.strip().splitlines()[-1]
    assert last.startswith("crdtbook node: not admitted") and "bad_join_token" in last
    assert "crdtbook join-token" in last
    assert "node.join_refused" in joiner.stderr  # and one loud log line
    # no token at all: the same answer
    joiner = run("node", "--listen", "127.0.0.1:0", "--ephemeral", "--peer", url,
                 "--log-level", "error")
    assert joiner.returncode == 3 and "bad_join_token" in joiner.stderr
    rotated = run("join-token", "--rotate", "--json", "--data-dir", data)
    assert rotated.returncode == 0
    answer = json.loads(rotated.stdout)
    assert answer["rotated"] and answer["join_token"] == jointoken.read(data) != token


def test_join_token_usage_errors(tmp_path):
    r = run("node", "--listen", "127.0.0.1:0", "--ephemeral", "--join-token", "short")
    assert r.returncode == 2 and "a join token is" in r.stderr
    r = run("node", "--listen", "127.0.0.1:0", "--ephemeral", "--open", "--join-token",
            JOIN_TOKEN)
    assert r.returncode == 2
    r = run("node", "--listen", "127.0.0.1:0", "--ephemeral", "--bootstrap-expect", "2")
    assert r.returncode == 2 and "--join-token" in r.stderr
    r = run("node", "--listen", "127.0.0.1:0", "--ephemeral", CRDTBOOK_JOIN_TOKEN="bad token")
    assert r.returncode == 2 and "$CRDTBOOK_JOIN_TOKEN" in r.stderr
    r = run("join-token", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "no join token" in r.stderr
