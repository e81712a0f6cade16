"""crdtbook's deterministic core: the event-set CRDT and the matching engine.

Pure data structures and functions: no I/O, no clocks, no randomness. The
networked node (``node/``) feeds it events and asks it what to send.

    amount    exact decimal strings <-> integer units of 1e-8
    dot       Dot (replica, seq), the identity of an event
    context   CausalContext: version vector + dot cloud
    aworset   AWORSet: delta-state add-wins observed-remove set
    clock     HybridClock: hybrid logical clock in one integer
    events    Order and Cancel, ordered by position (clock, replica, seq)
    book      BookSide: price levels, FIFO within a level
    engine    Engine: price-time matching with an undo log
    codec     canonical CBOR for events, deltas, contexts
    snapshot  Claim and Snapshot, the shapes replica and codec share
    views     Fill, OrderView, CancelView, Book: what callers see
    membership  Membership: joins, cutoffs, claims, the floor under F
    compaction  dropping settled history; snapshots and installing them
    replica   Replica: the facade the node drives
"""

from .amount import AmountError, format_amount, parse_amount
from .aworset import AWORSet
from .codec import CodecError, decode_context, decode_delta, encode_context, encode_delta
from .context import CausalContext
from .dot import Dot
from .events import Cancel, Order
from .replica import Book, Fill, OrderView, Replica, ReplicaError

__all__ = [
    "AWORSet", "AmountError", "Book", "Cancel", "CausalContext", "CodecError", "Dot", "Fill",
    "Order", "OrderView", "Replica", "ReplicaError", "decode_context", "decode_delta",
    "encode_context", "encode_delta", "format_amount", "parse_amount",
]
