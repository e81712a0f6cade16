"""An older revision's code, for the benchmarks' ``--baseline REV``.

Each comparing benchmark runs a revision's code beside this checkout's in
the same run, so that before and after meet the same machine under the same
load. ``export`` writes ``git archive REV`` (or some paths of it) into a new
temporary folder and returns it; the caller removes it (``shutil.rmtree``)
when done. A revision git does not know raises ``subprocess.CalledProcessError``.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, *paths: str, into: str | None = None) -> str:
    """A folder holding ``rev``'s tree (only ``paths`` if given); new unless ``into``."""
    code = into if into is not None else tempfile.mkdtemp(prefix="crdtbook-baseline-")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *paths],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", code], input=archive, check=True)
    return code
