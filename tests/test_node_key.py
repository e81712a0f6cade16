"""The node key: made with the data directory, the replica id derived from it."""

from __future__ import annotations

import os
import stat

import pytest

from crdtbook import keys
from node.service import Node, NodeConfig
from node.store import keyfile
from node.store.sqlite import Batch, Store, StoreError

from .nodes import start


def opened(data: str) -> str:
    """The replica id a node opening ``data`` has (no need to serve to see it)."""
    node = Node(NodeConfig(port=0, data_dir=data, fsync=False))
    try:
        assert node.signer.id == node.id
        return node.id
    finally:
        node.close()


def test_a_new_directory_gets_a_private_key_and_the_id_is_derived_from_it(tmp_path):
    data = str(tmp_path / "a")
    first = opened(data)
    where = keyfile.path(data)
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    signer = keyfile.read(data)
    assert first == signer.id == keys.replica_id(signer.public)
    assert keys.owns(first, signer.public) and len(first) == 32
    assert opened(data) == first  # the same replica at every start
    assert opened(str(tmp_path / "b")) != first  # another directory, another key


def test_ephemeral_nodes_get_a_fresh_key_each_start():
    ids = set()
    for _ in range(2):
        node = Node(NodeConfig(port=0, data_dir=None, fsync=False))
        ids.add(node.id)
        assert os.path.exists(keyfile.path(node.store.directory))
        node.close()
    assert len(ids) == 2


async def test_the_join_event_carries_the_key(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url)
    for node in (a.node, b.node):
        assert node.replica.membership.keys == {a.node.id: a.node.signer.public,
                                                b.node.id: b.node.signer.public}


def test_a_key_that_is_not_the_stores_replica_is_refused(tmp_path):
    data, other = str(tmp_path / "a"), str(tmp_path / "b")
    opened(data)
    opened(other)
    with open(keyfile.path(data)) as f:
        mine = f.read()
    os.replace(keyfile.path(other), keyfile.path(data))  # someone else's key
    with pytest.raises(StoreError, match="is the key of replica"):
        opened(data)
    with open(keyfile.path(data), "w") as f:
        f.write(mine)
    opened(data)  # its own key back: fine again


def test_a_missing_key_with_a_store_holding_events_is_refused(tmp_path):
    data = str(tmp_path / "a")
    replica = opened(data)
    store = Store.open(data, "default", fsync=False)
    store.write(Batch(snapshot=(0, 0, b"\xa0")))  # the store now holds state
    store.close()
    os.unlink(keyfile.path(data))
    with pytest.raises(StoreError, match=f"belongs to replica {replica}, but its key .* is "
                                         "missing"):
        opened(data)
    assert not os.path.exists(keyfile.path(data))  # no new key made in its place


def test_a_missing_key_with_a_store_that_never_held_anything_gets_a_new_one(tmp_path):
    data = str(tmp_path / "a")
    first = opened(data)
    os.unlink(keyfile.path(data))
    assert opened(data) != first


def test_a_key_file_that_is_a_link_or_garbled_is_refused(tmp_path):
    planted = tmp_path / "planted"
    planted.write_text(keys.Signer.from_name("attacker").seed().hex() + "\n")
    data = tmp_path / "a"
    data.mkdir()
    (data / "node.key").symlink_to(planted)
    with pytest.raises(StoreError, match="regular file, not a link"):
        opened(str(data))
    (data / "node.key").unlink()
    (data / "node.key").write_text("not a key\n")
    with pytest.raises(StoreError, match="does not hold a node key"):
        opened(str(data))


def test_a_key_readable_by_others_is_used_with_a_warning(tmp_path, caplog):
    data = str(tmp_path / "a")
    opened(data)
    os.chmod(keyfile.path(data), 0o644)
    opened(data)
    assert any("node_key.readable_by_others" in r.getMessage() for r in caplog.records)
