"""The admin token: the secret that operator actions (``/evict``, ``/leave``) need.

Theory of operation
-------------------
Whoever can write to a node's data directory owns the node already, so the
token lives there, in ``admin-token``, readable by the directory's owner
only (mode 0600): ``crdtbook evict``/``leave`` on the node's machine find it
there, and ``crdtbook admin-token`` prints it for scripts and other machines.

It is made the first time a node opens the directory (also an existing
directory from before tokens), from 32 random bytes as URL-safe text, and
written and read by the rules of secretfile.py (mode 0600 from the start,
never through a link, a crash leaves no token or a whole one).

The running node keeps only the SHA-256 of the token (``digest``), and
``matches`` compares digests with ``hmac.compare_digest``: the comparison
takes the same time wherever the guess goes wrong. The token is never logged.
"""

from __future__ import annotations

import os
import re
import secrets

from . import secretfile

TOKEN_FILE = "admin-token"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,512}")  # what token_urlsafe makes (or an operator's own)
digest = secretfile.digest
matches = secretfile.matches


def path(directory: str) -> str:
    return os.path.join(directory, TOKEN_FILE)


def ensure(directory: str) -> bytes:
    """The SHA-256 of the directory's admin token, made first if missing; StoreError
    if the token file cannot be made or read."""
    where = path(directory)
    if not os.path.lexists(where):  # a dangling link is not "missing": read() refuses it
        secretfile.create(where, "admin token", secrets.token_urlsafe(32))
    token = read(directory)
    secretfile.warn_if_readable(where, "admin_token.readable_by_others")
    return digest(token)


def read(directory: str) -> str:
    """The token kept in ``directory``: FileNotFoundError if there is none,
    StoreError if the file is unreadable or does not hold a token."""
    return secretfile.read(path(directory), "admin token", _TOKEN,
                           "16-512 letters, digits, '-' or '_'; delete it and restart the "
                           "node to have a new one made")
