"""The command line: ``crdtbook`` and its subcommands (main.py), their grammar,
help and usage hints (parser.py), how answers are shown to a person
(render.py) and where they go (output.py), the HTTP client its client
commands use (client.py) and the local devnet of real node processes
(devnet.py). Client commands reach a node over HTTP only; ``crdtbook node``
and ``crdtbook registry`` start one in this process.
"""
