"""The node key: the Ed25519 secret a replica signs with, and its id comes from.

Theory of operation
-------------------
A replica's id is derived from its public key (crdtbook/keys.py), so the
key *is* the replica: it is made with the data directory, in ``node.key``
(the 32-byte seed as 64 hex digits, mode 0600), before the store names a
replica, and read back at every start. Written and read by the rules of
secretfile.py: never through a link, never a moment readable by others, a
crash leaves no key or a whole one. It is never logged or sent anywhere.

Whoever holds the file can act as the replica; whoever loses it loses the
replica (a node cannot sign without it). datadir.py checks that the key and
the store belong together.
"""

from __future__ import annotations

import os
import re

from crdtbook.keys import Signer

from . import secretfile

KEY_FILE = "node.key"
_SEED = re.compile(r"[0-9a-f]{64}")


def path(directory: str) -> str:
    return os.path.join(directory, KEY_FILE)


def create(directory: str) -> Signer:
    """A new key, kept in ``directory`` (a key already there is kept and returned)."""
    secretfile.create(path(directory), "node key", Signer.generate().seed().hex())
    return read(directory)


def read(directory: str) -> Signer:
    """The key kept in ``directory``: FileNotFoundError if there is none,
    StoreError if the file is unusable."""
    where = path(directory)
    seed = secretfile.read(where, "node key", _SEED,
                           "64 lowercase hex digits: the replica's Ed25519 seed; restore it "
                           "from a backup of this directory")
    secretfile.warn_if_readable(where, "node_key.readable_by_others")
    return Signer(bytes.fromhex(seed))
