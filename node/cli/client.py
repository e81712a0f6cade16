"""The CLI's side of the client API: synchronous httpx calls, errors as one line."""

from __future__ import annotations

import os

import httpx

DEFAULT_NODE = "http://127.0.0.1:8700"


class CliError(Exception):
    """One clear line for the user; the CLI exits 1 (2 for usage errors)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def node_url(given: str | None) -> str:
    url = given or os.environ.get("CRDTBOOK_NODE") or DEFAULT_NODE
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def call(method: str, url: str, path: str, body: object = None, timeout: float = 10.0,
         admin_token: str | None = None, token: str | None = None):
    """One request; ``admin_token`` (operator actions) or ``token`` (an account's)
    goes in ``Authorization: Bearer``."""
    bearer = admin_token or token
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
    try:
        response = httpx.request(method, url + path, json=body, timeout=timeout,
                                 headers=headers)
    except httpx.ConnectError as exc:
        raise CliError(f"cannot reach a node at {url} ({exc or 'connection failed'}): is "
                       "`crdtbook node` running? Use --node URL or set CRDTBOOK_NODE") from None
    except httpx.TimeoutException:
        raise CliError(f"the node at {url} did not answer within {timeout:g}s") from None
    except Exception as exc:  # a bad URL, a protocol error: one line, never a traceback
        raise CliError(f"cannot talk to a node at {url}: {type(exc).__name__}: {exc}") from None
    try:
        data = response.json()
    except (ValueError, RecursionError):
        raise CliError(f"the node at {url} answered HTTP {response.status_code} "
                       "with something that is not JSON") from None
    if response.status_code == 401 and admin_token:
        raise CliError(f"the node at {url} refused the admin token (401): it is not this "
                       "node's token; pass the right one with --admin-token, "
                       "$CRDTBOOK_ADMIN_TOKEN or --data-dir DIR")
    if response.status_code == 401:
        why = "refused the token" if token else "needs a token"
        raise CliError(f"the node at {url} {why} (401): pass an account's token with "
                       "--token or $CRDTBOOK_TOKEN (on the node's machine the CLI reads the "
                       "default account's from --data-dir DIR)")
    if response.status_code == 429:
        raise CliError(f"rate limited (429): retry after "
                       f"{response.headers.get('retry-after', '?')}s")
    if response.status_code >= 400:
        detail = data.get("detail") if isinstance(data, dict) else data
        raise CliError(f"refused ({response.status_code}): {str(detail)[:300]}")
    return data
