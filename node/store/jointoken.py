"""The join token: the secret a new node shows to be admitted to a cluster.

Theory of operation
-------------------
As with kubeadm or k3s, a closed cluster admits a new node only if its join
request (node/cluster/admission.py) carries the cluster's join token. The
founder makes it (``crdtbook-join-`` and 32 random hex digits, 128 bits) or
takes the one it was given (``--join-token``; every node of a
``--bootstrap-expect`` group is given the same); a node admitted later
keeps the token it joined with, so every member can sponsor others. An open
cluster (``--open``) keeps the word ``open`` instead: its members admit
anyone who can reach them.

Each member keeps its token in ``join-token`` in its data directory, written
and read by the rules of secretfile.py (mode 0600, never through a link),
and reads it again for every join request, so ``crdtbook join-token
--rotate`` (which replaces the file atomically) takes effect at once, on
that member only: the old token keeps working on members not rotated.
A token never travels: join requests, answers and hellos carry HMACs keyed
by it (node/cluster/admission.py), compared with ``hmac.compare_digest``;
it is never logged.
"""

from __future__ import annotations

import os
import re
import secrets

from . import secretfile

TOKEN_FILE = "join-token"
OPEN = "open"  # kept instead of a token: the cluster admits without one
PREFIX = "crdtbook-join-"
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{16,256}")  # what new() makes, or an operator's own
_STORED = re.compile(rf"{OPEN}|{_TOKEN.pattern}")
FORMAT = "16-256 letters, digits, '.', '-' or '_'"


def path(directory: str) -> str:
    return os.path.join(directory, TOKEN_FILE)


def new() -> str:
    return PREFIX + secrets.token_hex(16)


def valid(token: object) -> bool:
    return isinstance(token, str) and bool(_TOKEN.fullmatch(token))


def read(directory: str) -> str | None:
    """The token kept in ``directory`` (or ``OPEN``); None if there is none.
    StoreError if the file is unusable."""
    try:
        return secretfile.read(path(directory), "join token", _STORED,
                               f"{FORMAT}, or the word {OPEN!r}; run `crdtbook join-token "
                               "--rotate` to have a new one made")
    except FileNotFoundError:
        return None


def save(directory: str, token: str, replace: bool = False) -> None:
    """Keep ``token`` (or ``OPEN``); a token already kept stays unless ``replace``."""
    secretfile.create(path(directory), "join token", token, replace=replace)


def rotate(directory: str) -> str:
    """Replace the kept token with a new one; return it."""
    token = new()
    save(directory, token, replace=True)
    return token
