"""The admin token: the secret that operator actions (``/evict``, ``/leave``) need.

Theory of operation
-------------------
Whoever can write to a node's data directory owns the node already, so the
token lives there, in ``admin-token``, readable by the directory's owner
only (mode 0600): ``crdtbook evict``/``leave`` on the node's machine find it
there, and ``crdtbook admin-token`` prints it for scripts and other machines.

It is made the first time a node opens the directory (also an existing
directory from before tokens), from 32 random bytes as URL-safe text. The
file is written under a temporary name created with ``O_EXCL`` and mode 0600
from the start (never a moment readable by others), synced, then linked to
its final name: a crash leaves either no token or a whole one, never an
empty file, and a link that finds a token already there keeps that one.

The running node keeps only the SHA-256 of the token (``digest``), and
``matches`` compares digests with ``hmac.compare_digest``: the comparison
takes the same time wherever the guess goes wrong. The token is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat

from .. import logs
from .sqlite import StoreError

TOKEN_FILE = "admin-token"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,512}")  # what token_urlsafe makes (or an operator's own)


def path(directory: str) -> str:
    return os.path.join(directory, TOKEN_FILE)


def ensure(directory: str) -> bytes:
    """The SHA-256 of the directory's admin token, made first if missing; StoreError
    if the token file cannot be made or read."""
    where = path(directory)
    if not os.path.lexists(where):  # a dangling link is not "missing": read() refuses it
        _create(directory)
    token = read(directory)
    try:
        if os.stat(where).st_mode & 0o077:  # an operator's copy, or a careless restore
            logs.warning("admin_token.readable_by_others", path=where,
                         fix=f"chmod 600 {where}")
    except OSError:
        pass  # read() just succeeded: a vanishing file is not worth refusing to start
    return digest(token)


def read(directory: str) -> str:
    """The token kept in ``directory``: FileNotFoundError if there is none,
    StoreError if the file is unreadable or does not hold a token."""
    where = path(directory)
    try:
        # never through a link: whoever planted one would choose the token
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot read the admin token {where}: it must be a regular file, "
                         f"not a link ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"the admin token {where} must be a regular file")
        with os.fdopen(fd, encoding="ascii") as f:
            fd = -1
            token = f.read(1024).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read the admin token {where}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if not _TOKEN.fullmatch(token):
        raise StoreError(f"{where} does not hold an admin token (16-512 letters, digits, "
                         "'-' or '_'); delete it and restart the node to have a new one made")
    return token


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def matches(expected: bytes, presented: str) -> bool:
    return hmac.compare_digest(digest(presented), expected)


def _create(directory: str) -> None:
    where = path(directory)
    temporary = f"{where}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, where)  # never replaces a token already there
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StoreError(f"cannot create the admin token {where}: "
                         f"{exc.strerror or exc}") from None
