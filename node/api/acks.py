"""Write concerns: how much an order's answer waits for (``ack``).

* ``local`` (default): the event is durable in this node's store (fsynced);
* ``replicated``: also held by at least one peer;
* ``all``: also held by every other current member.

What a peer holds of this node's events is learnt from its pull requests
(their causal context) and from its answers to pushes (a push is answered
once durable there): see ``Node.note_held``. On timeout the order stands;
the answer says ``"replicated": false`` (HTTP 202).
"""

from __future__ import annotations

import contextlib
import re

import trio

from ..asgi import BadRequest
from ..service import Node

ACKS = ("local", "replicated", "all")
DEFAULT_TIMEOUT_S = 5.0
_SECONDS = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?", re.ASCII)


def parse_ack(query: dict) -> tuple[str, float]:
    """``ack`` and ``timeout`` from a query string (or a PeerRPC payload's fields)."""
    if not query:
        return "local", DEFAULT_TIMEOUT_S
    ack = query.get("ack", "local")
    if ack not in ACKS:
        raise BadRequest(400, "bad_ack", f"ack must be one of {', '.join(ACKS)}")
    text = query.get("timeout", "5")  # DEFAULT_TIMEOUT_S
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)  # a number in a PeerRPC payload
    if not isinstance(text, str) or not _SECONDS.fullmatch(text):
        raise BadRequest(400, "bad_timeout", "timeout must be a number of seconds, 0-60")
    timeout = float(text)
    if not 0 < timeout <= 60:  # also refuses nan and inf
        raise BadRequest(400, "bad_timeout", "timeout must be a number of seconds, 0-60")
    return ack, timeout


async def wait_replicated(node: Node, seq: int, ack: str, timeout: float) -> bool:
    """Wait until one peer (``replicated``) or every other member (``all``) holds this
    node's events up to ``seq``; False if that did not happen within ``timeout``."""
    with trio.move_on_after(timeout):
        while True:
            others = [r for r in node.replica.members() if r != node.id]
            if ack == "all":
                if all(node.peer_holds.get(r, 0) >= seq for r in others):
                    return True
            elif node.replicas_holding(seq) >= 1:
                return True
            await node.replicated.wait()
    return False


@contextlib.contextmanager
def expecting_acks(node: Node, ack: str):
    """While a request will wait for peers (``ack`` not local), pushes ask them for
    signed receipts (only those count, see node/cluster/peerauth.py). Entered
    before the events are made, so their first push already asks."""
    if ack == "local":
        yield
        return
    node.ack_waiting += 1
    try:
        yield
    finally:
        node.ack_waiting -= 1
