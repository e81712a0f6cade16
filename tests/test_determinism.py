"""The same workload in two processes with different hash seeds: the same bytes."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import hashlib, random
from crdtbook.codec import encode_delta
from crdtbook.replica import Replica
from fuzz.workload import play, random_steps

rng = random.Random(2024)
played = play(5, random_steps(rng, 5, 800), [3, 0, 9, 1, 4])
order = list(range(len(played.deltas)))
rng.shuffle(order)
fresh = Replica("observer")
for i in order:
    fresh.merge(played.deltas[i])
h = hashlib.sha256()
h.update(repr(fresh.fills()).encode())
h.update(repr(fresh.orders()).encode())
h.update(repr(fresh.book()).encode())
h.update(encode_delta(fresh.snapshot()))
print(fresh.digest(), h.hexdigest(), len(fresh.fills()))
"""


def run(seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


def test_two_processes_two_hash_seeds_same_digest_and_views():
    first, second = run("1"), run("4242")
    assert first == second
    digest, views, fills = first.split()
    assert len(digest) == 64 and int(fills) > 0
