"""Shrinking a failing schedule to the smallest one that still fails (ddmin-style)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .sim import Schedule


def reduce(schedule: Schedule, fails: Callable[[Schedule], bool],
           budget_s: float = 30.0) -> Schedule:
    """Drop chunks of actions (halves, quarters, ... single ones) while it still fails."""
    deadline = time.monotonic() + budget_s
    actions = list(schedule.actions)
    chunk = max(1, len(actions) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i = 0
        shrunk = False
        while i < len(actions) and time.monotonic() < deadline:
            candidate = actions[:i] + actions[i + chunk:]
            if candidate and fails(schedule._replace(actions=tuple(candidate))):
                actions = candidate
                shrunk = True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    return schedule._replace(actions=tuple(actions))
