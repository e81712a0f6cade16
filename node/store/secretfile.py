"""Secret files in a data directory: the admin token, the node key, the join token,
the default account's token.

Theory of operation
-------------------
Whoever can write to a node's data directory owns the node already, so its
secrets live there, each in one small text file readable by the
directory's owner only (mode 0600).

* ``create`` writes a new file under a temporary name created with
  ``O_EXCL`` and mode 0600 from the start (never a moment readable by
  others), syncs it, then links it to its final name: a crash leaves either
  no file or a whole one, never an empty one, and a link that finds a file
  already there keeps that one (``replace=True`` renames over it instead:
  a rotation, atomic too).
* ``read`` opens with ``O_NOFOLLOW`` and reads only a regular file: a link
  planted in the directory would let whoever planted it choose the secret
  (or, dangling, crash the start with a traceback).
* ``warn_if_readable`` logs once, at start, if others can read the file (an
  operator's copy, a careless restore): used, but worth fixing.
* ``digest``/``matches`` compare SHA-256 digests with ``hmac.compare_digest``:
  the comparison takes the same time wherever a guess goes wrong.

Secrets are never logged.
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


def read(where: str, what: str, pattern: re.Pattern, expected: str) -> str:
    """The text kept in ``where`` (stripped): FileNotFoundError if there is none,
    StoreError if it is a link, not a regular file, unreadable, or does not
    match ``pattern`` (``expected`` says what it should hold)."""
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot read the {what} {where}: it must be a regular file, "
                         f"not a link ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"the {what} {where} must be a regular file")
        with os.fdopen(fd, encoding="ascii") as f:
            fd = -1
            text = f.read(1024).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read the {what} {where}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if not pattern.fullmatch(text):
        article = "an" if what[0] in "aeiou" else "a"
        raise StoreError(f"{where} does not hold {article} {what} ({expected})")
    return text


def create(where: str, what: str, text: str, replace: bool = False) -> None:
    """Write ``text`` to ``where`` (mode 0600, durably); an existing file is kept
    unless ``replace``. StoreError if it cannot be written."""
    directory = os.path.dirname(where) or "."
    temporary = f"{where}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (text + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temporary, where)  # a link at ``where`` is replaced, never followed
        else:
            try:
                os.link(temporary, where)  # never replaces a file already there
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
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise StoreError(f"cannot write the {what} {where}: {exc.strerror or exc}") from None


def warn_if_readable(where: str, event: str) -> None:
    try:
        if os.stat(where, follow_symlinks=False).st_mode & 0o077:
            logs.warning(event, path=where, fix=f"chmod 600 {where}")
    except OSError:
        pass  # it was just read: a vanishing file is not worth refusing to start


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def matches(expected: bytes, presented: str) -> bool:
    return hmac.compare_digest(digest(presented), expected)
