"""What peers face: the gossip tasks that join, push, pull and discover
(gossip.py), the peer routes other nodes call (peerapi.py), the
grape-compatible announce/lookup table (registry.py) and the standalone
registry server (standalone.py).
"""
