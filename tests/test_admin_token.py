"""Operator actions (/evict, /leave) need the node's admin token; an account's does not do."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import trio

from node.service import Node, NodeConfig
from node.store import admintoken
from node.store.sqlite import StoreError

from .nodes import client, eventually, start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "node"]

WRONG = {"Authorization": "Bearer " + "x" * 43}
DENIED = [None, WRONG, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
          {"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")}]


def unchanged(*running):
    return [(r.node.replica.digest(), r.node.replica.members(), r.node.stop_requested.is_set())
            for r in running]


def assert_unauthorized(r) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized" and r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("headers", DENIED, ids=["none", "wrong", "basic", "empty", "latin1"])
async def test_evict_and_leave_without_the_token_are_refused(nursery, tmp_path, headers):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    await eventually(lambda: len(a.node.replica.members()) == 2)
    before = unchanged(a, b)
    async with client() as http:
        r = await http.post(a.url + "/evict", json={"replica": b.node.id, "force": True},
                            headers=headers)
        assert_unauthorized(r)
        r = await http.post(b.url + "/leave", headers=headers)
        assert_unauthorized(r)
        r = await http.post(b.url + "/evict", content=b"{not json", headers=headers)
        assert_unauthorized(r)  # the token is checked before the body is looked at
        assert unchanged(a, b) == before
        assert (await http.get(b.url + "/status")).status_code == 200  # still running
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1", "price": "7"})
        assert r.status_code == 201  # an account's token (the helper sends the default's)


async def test_evict_and_leave_with_the_token_work(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    c = await start(nursery, a.url, data_dir=str(tmp_path / "c"))
    await eventually(lambda: len(a.node.replica.members()) == 3)
    async with client() as http:
        # b's token is not a's: each node has its own
        r = await http.post(a.url + "/evict", json={"replica": c.node.id}, headers=b.admin)
        assert_unauthorized(r)
        r = await http.post(a.url + "/leave?timeout=%20", headers=a.admin)
        assert r.status_code == 400 and r.json()["error"] == "bad_timeout"
        r = await http.post(a.url + "/evict", json={"replica": c.node.id}, headers=a.admin,
                            timeout=30)
        assert r.status_code == 200, r.text
        assert c.node.id not in a.node.replica.members()
        r = await http.post(b.url + "/leave", headers=b.admin, timeout=30)
        assert r.status_code == 200, r.text
        with trio.fail_after(15):
            await b.done.wait()  # it stopped by itself
    await eventually(lambda: a.node.replica.members() == [a.node.id])


async def test_the_token_file_is_private_and_made_for_every_directory(nursery, tmp_path):
    data = str(tmp_path / "a")
    a = await start(nursery, data_dir=data)
    e = await start(nursery, a.url)  # ephemeral: the token is in its temporary directory
    for directory in (data, e.node.store.directory):
        mode = os.stat(admintoken.path(directory)).st_mode
        assert stat.S_IMODE(mode) == 0o600
        token = admintoken.read(directory)
        assert len(token) >= 43  # 32 bytes, URL-safe base64
    first = admintoken.read(data)
    temporary = e.node.store.directory
    await e.stop()  # an ephemeral node leaves when it stops, and its directory goes
    assert not os.path.exists(temporary)
    await a.stop()

    def reopen() -> str:  # a restart opens the directory (no need to serve to see that)
        Node(NodeConfig(port=0, data_dir=data, fsync=False)).close()
        return admintoken.read(data)
    assert reopen() == first  # kept across restarts
    os.unlink(admintoken.path(data))  # a data directory from before tokens
    assert reopen() != first
    assert stat.S_IMODE(os.stat(admintoken.path(data)).st_mode) == 0o600


def test_a_token_file_readable_by_others_is_used_with_a_warning(tmp_path, caplog):
    data = str(tmp_path / "a")
    Node(NodeConfig(port=0, data_dir=data, fsync=False)).close()
    os.chmod(admintoken.path(data), 0o644)
    Node(NodeConfig(port=0, data_dir=data, fsync=False)).close()
    assert any("admin_token.readable_by_others" in r.getMessage() for r in caplog.records)


def test_a_garbled_token_file_is_refused_clearly(tmp_path):
    data = tmp_path / "a"
    data.mkdir()
    (data / "admin-token").write_text("")
    with pytest.raises(StoreError, match="does not hold an admin token"):
        Node(NodeConfig(port=0, data_dir=str(data), fsync=False))


def test_a_token_file_that_is_a_link_is_refused(tmp_path):
    planted = tmp_path / "planted"
    planted.write_text("attackerattackerattacker\n")
    for target in (planted, tmp_path / "missing"):  # a chosen token, or a dangling link
        data = tmp_path / f"dir-{target.name}"
        data.mkdir()
        (data / "admin-token").symlink_to(target)
        with pytest.raises(StoreError, match="regular file, not a link"):
            Node(NodeConfig(port=0, data_dir=str(data), fsync=False))
    assert not (tmp_path / "missing").exists()  # nothing written through the link


def crdtbook(*args: str, cwd: str = ROOT, **env: str):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRDTBOOK_")}
    return subprocess.run([*CLI, *args], cwd=cwd, env={**environment, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def node_process(tmp_path):
    data = str(tmp_path / "node")
    proc = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0", "--log-level", "warning",
                             "--data-dir", data],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline()
    assert " listening on " in line
    yield proc, line.split()[-1], data
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_cli_needs_a_token_and_finds_it_in_the_data_directory(node_process, tmp_path):
    proc, url, data = node_process
    # run elsewhere, so the default ./crdtbook-data/default-<port> does not exist
    r = crdtbook("leave", "--node", url, cwd=str(tmp_path))
    assert r.returncode != 0 and proc.poll() is None
    assert "no admin token" in r.stderr and "--admin-token" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = crdtbook("evict", "someone", "--node", url, "--admin-token", "wrong-token-wrong")
    assert r.returncode == 1 and "refused the admin token" in r.stderr
    r = crdtbook("leave", "--node", url, CRDTBOOK_ADMIN_TOKEN="wrong-token-wrong")
    assert r.returncode == 1 and "401" in r.stderr and proc.poll() is None
    token = crdtbook("admin-token", "--data-dir", data)
    assert token.returncode == 0 and token.stdout.strip() == admintoken.read(data)
    r = crdtbook("leave", "--node", url, "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert "left the cluster" in r.stdout
    assert proc.wait(timeout=20) == 0


def test_cli_default_data_directory_follows_the_node_port(node_process, tmp_path):
    proc, url, data = node_process
    port = url.rsplit(":", 1)[1]
    home = tmp_path / "home"
    os.makedirs(home / "crdtbook-data")
    os.symlink(data, home / "crdtbook-data" / f"default-{port}")
    r = crdtbook("admin-token", "--node", url, cwd=str(home))
    assert r.returncode == 0 and r.stdout.strip() == admintoken.read(data)
    r = crdtbook("leave", "--node", url, cwd=str(home))
    assert r.returncode == 0, r.stderr
    assert proc.wait(timeout=20) == 0
