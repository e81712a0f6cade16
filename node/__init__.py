"""crdtbook's networked peer and the ``crdtbook`` command line.

Everything that waits, listens, sleeps or times out lives here; the pure
core in ``crdtbook/`` never imports this package.
"""
