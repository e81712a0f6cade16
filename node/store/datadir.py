"""The data directory: open it for a node, refuse a retired one, set one aside.

Theory of operation
-------------------
A node's identity lives in its data directory's store. Opening it answers
two questions before anything else runs: which replica this is (a new id
for a new store), and whether that replica may still trade. A replica that
left or was evicted never trades again under its id (its seq and its
cancel-on-leave are history on every node), so its directory is refused,
unless ``--rejoin-as-new`` asks to move the old store aside, into
``retired-<replica>-<unix time>/``, and start a new replica in its place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from .. import logs
from .recover import identity
from .sqlite import Store, StoreError


class Retired(Exception):
    """The store's replica has left the cluster or was evicted: it cannot trade again."""


def phrase(how: str) -> str:
    return "was evicted from the cluster" if how == "evicted" else "left the cluster"


def open_store(data_dir: str | None, book: str, *, fsync: bool = True,
               replica_id: str | None = None,
               rejoin_as_new: bool = False) -> tuple[Store, str, bool]:
    """The node's store, its replica id, and whether that id is new here (minted
    now, not given): StoreError or Retired if the directory is unusable.

    ``data_dir`` None: a throwaway store in a new temporary directory, without
    fsync (``--ephemeral``); the node deletes it when it closes.
    """
    if data_dir is None:
        directory = tempfile.mkdtemp(prefix="crdtbook-ephemeral-")
        store = Store.open(directory, book, fsync=False)
        store.ephemeral = True
        return store, identity(store, replica_id), replica_id is None
    store = Store.open(data_dir, book, fsync=fsync)
    try:
        held = store.meta.get("replica")
        if replica_id and held and held != replica_id:
            raise StoreError(f"{store.directory} belongs to replica {held}, not "
                             f"{replica_id}; drop --id or use another --data-dir")
        retired = store.meta.get("retired")
        if retired and rejoin_as_new:
            if replica_id == held:
                raise StoreError(f"--rejoin-as-new joins as a new replica; drop --id {held}, "
                                 "which is the retired one")
            store = _set_aside(store, book, fsync)
        elif retired:
            raise Retired(f"replica {held} {phrase(retired)}; its data in "
                          f"{store.directory} cannot trade again. Start with --rejoin-as-new "
                          "to keep that data aside and join as a new replica")
        fresh = replica_id is None and "replica" not in store.meta
        return store, identity(store, replica_id), fresh
    except BaseException:
        store.close()
        raise


def _set_aside(store: Store, book: str, fsync: bool) -> Store:
    """Move a retired replica's files into a subdirectory; open a new store."""
    directory, replica = store.directory, store.meta.get("replica")
    store.close()
    aside = os.path.join(directory, f"retired-{replica}-{int(time.time())}")
    os.makedirs(aside)
    for name in sorted(os.listdir(directory)):
        if name.startswith("store.sqlite"):
            shutil.move(os.path.join(directory, name), os.path.join(aside, name))
    logs.warning("store.set_aside", replica=replica, kept_in=aside)
    return Store.open(directory, book, fsync=fsync)
