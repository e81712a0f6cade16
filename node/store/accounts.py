"""Client accounts: who may place and cancel orders at this node.

Theory of operation
-------------------
An account is a name and a bearer token. The node keeps the accounts in its
store (the ``accounts`` table, see sqlite.py), with the SHA-256 of each
token and never the token itself: ``crdtbook account add NAME`` prints the
token once, and a lost token is replaced by revoking the account and adding
another. The table is written by the journal like everything else (one
transaction, fsynced before the answer), so an account the CLI was told
about survives a crash, and a revocation answered is a revocation kept.

Accounts are per node: an account exists on the node its holder talks to.
The order events it places carry its name as their account label, and
that label is replicated with the event as before.

Every data directory has a *default account*, ``local``, made with the
directory (and for directories from before accounts, at their next start).
Its token is kept in ``DIR/account-token`` (mode 0600, by the rules of
secretfile.py), so the CLI on the node's machine reads it there: ``crdtbook
order sell 3@12`` just works locally. The file is the source of truth for
that account: delete it and restart the node to have a new token made (the
old one stops working). A revoked ``local`` stays revoked.

Rules this module keeps
-----------------------
* Tokens are ``crdtbook-acct-`` and 32 random hex digits (128 bits); they
  are compared by SHA-256 digest with ``hmac.compare_digest`` and never
  logged or echoed.
* Lookup is by digest in a dict, then the found digest is compared again
  in constant time: a dict lookup's timing can tell at most something
  about the SHA-256 of a guess, which says nothing about a token.
* Names are 1-64 letters, digits, '.', '_', '-' or '@', and are never
  reused (a revoked name stays taken): an old order's label always means
  the account that placed it.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets

from . import secretfile
from .sqlite import AccountRow, StoreError

TOKEN_FILE = "account-token"
DEFAULT = "local"
PREFIX = "crdtbook-acct-"
_TOKEN = re.compile(r"crdtbook-acct-[0-9a-f]{32}")
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
NAME_RULE = "1-64 letters, digits, '.', '_', '-' or '@'"
digest = secretfile.digest


def new_token() -> str:
    return PREFIX + secrets.token_hex(16)


def path(directory: str) -> str:
    return os.path.join(directory, TOKEN_FILE)


def read(directory: str) -> str:
    """The default account's token kept in ``directory``: FileNotFoundError if there
    is none, StoreError if the file is unusable."""
    return secretfile.read(path(directory), "account token", _TOKEN,
                           f"{PREFIX} and 32 hex digits; delete it and restart the node to "
                           "have a new one made")


def ensure_default(directory: str) -> bytes:
    """The digest of the default account's token, the file made first if missing."""
    where = path(directory)
    if not os.path.lexists(where):
        secretfile.create(where, "account token", new_token())
    token = read(directory)
    secretfile.warn_if_readable(where, "account_token.readable_by_others")
    return digest(token)


class Accounts:
    """The node's accounts in memory: by name, and by token digest for lookups."""

    def __init__(self, rows: list[AccountRow]) -> None:
        self.by_name: dict[str, AccountRow] = {r.name: r for r in rows}
        self._by_digest: dict[bytes, AccountRow] = {r.digest: r for r in rows
                                                    if r.revoked is None}

    def authenticate(self, token: str) -> str | None:
        """The name of the live account whose token this is, or None."""
        presented = digest(token)
        row = self._by_digest.get(presented)
        if row is None or not hmac.compare_digest(row.digest, presented):
            return None
        return row.name

    def default_row(self, token_digest: bytes, now_ms: int) -> AccountRow | None:
        """The row to write so that ``local`` has the token file's digest (None: it
        has already, or it is revoked and stays so)."""
        row = self.by_name.get(DEFAULT)
        if row is None:
            return AccountRow(DEFAULT, token_digest, now_ms)
        if row.revoked is None and row.digest != token_digest:
            return AccountRow(DEFAULT, token_digest, row.created)  # the file was replaced
        return None

    def new(self, name: object, now_ms: int) -> tuple[AccountRow, str]:
        """A new account's row and token; ValueError (with the reason) if the name
        is malformed or taken."""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"an account name is {NAME_RULE}")
        if name in self.by_name:
            how = "was revoked (names are never reused)" if self.by_name[name].revoked \
                else "exists"
            raise ValueError(f"account {name!r} {how}")
        token = new_token()
        return AccountRow(name, digest(token), now_ms), token

    def revoked(self, name: str, now_ms: int) -> AccountRow:
        """The row that revokes ``name``; KeyError if there is no such live account."""
        row = self.by_name.get(name)
        if row is None or row.revoked is not None:
            raise KeyError(name)
        return AccountRow(row.name, row.digest, row.created, now_ms)

    def put(self, row: AccountRow) -> None:
        """Take ``row`` (made, rotated or revoked) into memory."""
        old = self.by_name.get(row.name)
        if old is not None:
            self._by_digest.pop(old.digest, None)
        self.by_name[row.name] = row
        if row.revoked is None:
            self._by_digest[row.digest] = row


def load(store) -> Accounts:
    try:
        return Accounts(store.accounts())
    except Exception as exc:  # sqlite3.Error: a store made by a build before accounts
        raise StoreError(f"cannot read the accounts of the store in {store.directory} "
                         f"({exc}); it was made by a development build: move it aside") \
            from None
