"""The data directory: open it for a node, refuse a retired one, set one aside.

Theory of operation
-------------------
A node's identity lives in its data directory: its key (``node.key``, see
keyfile.py), from which its replica id is derived, and the store, which
names that id. Opening the directory answers two questions before anything
else runs: which replica this is (a new key, and so a new id, for a new
directory; the key and the store must name the same replica), and whether
that replica may still trade. A replica that
left or was evicted never trades again under its id (its seq and its
cancel-on-leave are history on every node), so its directory is refused,
unless ``--rejoin-as-new`` asks to move the old store aside, into
``retired-<replica>-<unix time>/`` (its key with it), and start a new
replica, with a new key, in its place.

A store that names a replica while the key is missing, or whose key is
another replica's, is refused: the key cannot be made again, and a new one
would be another replica claiming the old one's events.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from crdtbook.keys import Signer

from .. import logs
from . import keyfile
from .recover import identity
from .sqlite import Batch, Store, StoreError


class Retired(Exception):
    """The store's replica has left the cluster or was evicted: it cannot trade again."""


def phrase(how: str) -> str:
    return "was evicted from the cluster" if how == "evicted" else "left the cluster"


def open_store(data_dir: str | None, book: str, *, fsync: bool = True,
               rejoin_as_new: bool = False) -> tuple[Store, Signer, bool]:
    """The node's store, its key (the replica id is ``signer.id``), and whether the
    replica is new here: StoreError or Retired if the directory is unusable.

    ``data_dir`` None: a throwaway store with a new key in a new temporary
    directory, without fsync (``--ephemeral``); the node deletes it when it closes.
    """
    if data_dir is None:
        directory = tempfile.mkdtemp(prefix="crdtbook-ephemeral-")
        store = Store.open(directory, book, fsync=False)
        store.ephemeral = True
        try:
            signer = keyfile.create(directory)
            identity(store, signer.id)
        except BaseException:
            store.close()
            raise
        return store, signer, True
    store = Store.open(data_dir, book, fsync=fsync)
    try:
        held = store.meta.get("replica")
        retired = store.meta.get("retired")
        if retired and rejoin_as_new:
            store = _set_aside(store, book, fsync)
            held = None
        elif retired:
            raise Retired(f"replica {held} {phrase(retired)}; its data in "
                          f"{store.directory} cannot trade again. Start with --rejoin-as-new "
                          "to keep that data aside and join as a new replica")
        signer = _key(store, held)
        identity(store, signer.id)
        return store, signer, held is None
    except BaseException:
        store.close()
        raise


def _key(store: Store, held: str | None) -> Signer:
    """The directory's key, made now for a new store; StoreError if it does not
    belong to the replica the store names."""
    directory = store.directory
    where = keyfile.path(directory)
    try:
        signer = keyfile.read(directory)
    except FileNotFoundError:
        if store.holds_events() or store.snapshot() is not None:
            if held is None:
                identity(store, "")  # refuses: events, but no replica named
            raise StoreError(f"the store in {directory} belongs to replica {held}, but its key "
                             f"{where} is missing: the replica cannot sign without it. Restore "
                             "node.key from a backup of this directory, or start a new replica "
                             "on another --data-dir (and evict this one)") from None
        if held is not None:  # named, but never held an event: nothing to keep
            store.write(Batch(meta={"replica": None}))
        return keyfile.create(directory)
    if held is not None and held != signer.id:
        raise StoreError(f"the store in {directory} belongs to replica {held}, but {where} is "
                         f"the key of replica {signer.id}; put back the key of {held} or use "
                         "another --data-dir")
    return signer


def _set_aside(store: Store, book: str, fsync: bool) -> Store:
    """Move a retired replica's files into a subdirectory; open a new store."""
    directory, replica = store.directory, store.meta.get("replica")
    store.close()
    aside = os.path.join(directory, f"retired-{replica}-{int(time.time())}")
    os.makedirs(aside)
    for name in sorted(os.listdir(directory)):
        if name.startswith("store.sqlite") or name == keyfile.KEY_FILE:
            shutil.move(os.path.join(directory, name), os.path.join(aside, name))
    logs.warning("store.set_aside", replica=replica, kept_in=aside)
    return Store.open(directory, book, fsync=fsync)
