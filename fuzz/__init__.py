"""The delivery-order fuzzer: many replicas, one process, a shuffling network."""
