"""Instruction counts from valgrind's callgrind (noise-free, unlike a clock).

The engineers' per-event figures (``bench/encodeonce.py``,
``bench/storeonce.py``, ``bench/pushes.py --instructions``) run a script
under callgrind and read the total it wrote; this module holds those two
steps so each bench says only what it runs.
"""

from __future__ import annotations

import subprocess
import sys


def total(path: str) -> int:
    """The instruction total of a callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {path}")


def run_script(out: str, script: str, *args: str) -> int:
    """Run ``python script args`` under callgrind, writing ``out``; its total."""
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    "--dump-instr=no", "--collect-jumps=no", sys.executable, script, *args],
                   check=True, capture_output=True)
    return total(out)
