import os
import sys

from .cli.main import main

# CRDTBOOK_PROFILE=PREFIX: run under cProfile (the event loop's thread only) and
# write PREFIX.<pid>.prof at exit (bench/cluster.py --profile uses it)
_profile = os.environ.get("CRDTBOOK_PROFILE")
if _profile:
    import cProfile

    _profiler = cProfile.Profile()
    try:
        _status = _profiler.runcall(main)
    finally:
        _profiler.dump_stats(f"{_profile}.{os.getpid()}.prof")
    sys.exit(_status)
sys.exit(main())
