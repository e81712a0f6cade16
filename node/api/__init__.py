"""What clients face: the node's HTTP app and its routes (app.py), the
validation of client input (requests.py), the JSON shapes answered (views.py)
and the Grenache PeerRPC transport a Grenache client trades through
(peerrpc.py). The app also routes the peer and registry paths that share its
port to node/cluster/.
"""
