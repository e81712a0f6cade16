"""Printing a benchmark's figures: one aligned ``name  value`` line each, or JSON."""

from __future__ import annotations

import json


def print_figures(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value:,}" if isinstance(value, int)
              else f"{key:<{width}}  {value}")
