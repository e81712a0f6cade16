"""A hand-driven peer for tests: a core replica with its own key, speaking the wire.

It signs its blocks and claims like a node does, so a test can act as an
honest member (admitted in-process by a running node's ``sponsor``) or, by
changing a byte, as a forger.
"""

from __future__ import annotations

from crdtbook.context import CausalContext
from crdtbook.door import Door
from crdtbook.events import make_order
from crdtbook.feed import Block, Tip, head_message, link
from crdtbook.feedwire import encode_blocks, encode_body, encode_pull
from crdtbook.keys import Signer
from crdtbook.replica import Replica
from node.cluster import peerauth


class SignedPeer:
    def __init__(self, name: str) -> None:
        self.signer = Signer.from_name(name)
        self.id = self.signer.id
        self.replica = Replica(self.id, track_fresh=True)
        self.door = Door(self.replica, self.signer.sign)

    def admitted_by(self, node) -> SignedPeer:
        """Join through a running node (in-process ``service.Node``)."""
        node.sponsor(self.id, self.signer.public)
        return self

    def seal(self):
        """Everything new here since the last seal, as this peer's next signed block."""
        own = [e for e in self.replica.take_fresh() if e.replica == self.id]
        return self.door.seal(own)

    def place(self, side: str, qty: str, price: str, now_ms: int):
        self.replica.place(side, qty, price, now_ms=now_ms)
        return self.seal()

    def forge(self, victim: str, tip: Tip, now_ms: int) -> Block:
        """The next block of ``victim``'s feed after ``tip``, signed with this peer's key."""
        event = make_order((now_ms + 5) << 16, victim, tip.last + 1, "sell", "limit",
                           10**8, 10**8, "")
        body = encode_body([event])
        sig = self.signer.sign(head_message(victim, event.seq, link(tip.hash, body)))
        return Block(victim, event.seq, event.seq, body, sig, (event,))

    def blocks(self, blocks, now_ms: int = 0) -> bytes:
        return encode_blocks(blocks, self.door.outgoing_claims(self.replica.claim(now_ms)))

    def pull(self, context: CausalContext | None = None) -> bytes:
        return encode_pull(context or self.replica.context(), self.door.tips.items())

    def signed(self, body: bytes, book: str = "default") -> dict[str, str]:
        """Headers that make ``body`` a request signed by this peer (see peerauth.py)."""
        message = peerauth.request_message(book, body)
        return {"x-crdtbook-replica": self.id, peerauth.HEADER: self.signer.sign(message).hex()}
