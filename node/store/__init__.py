"""What the node keeps on disk: its data directory (identity, every event,
final history, the last snapshot) in an embedded SQLite store, written with
group commit off the event loop (``Journal``) and read back at restart
(``recover``)."""
