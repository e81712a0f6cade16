"""The README stands alone and says true things: its links stay in the project, it
tells how to run and test, and its Python example prints what its comments say."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_links_stay_inside_the_project():
    targets = re.findall(r"\]\(([^)]+)\)", README)
    assert targets
    for target in targets:
        path = target.split("#", 1)[0]
        assert not target.startswith(("http:", "https:", "/")) and ".." not in path, target
        assert (ROOT / path).exists(), target


def test_quick_start_names_make_run_and_make_test_and_how_to_reach_the_command():
    first_screen = README[:README.index("## Map")]
    assert "make run" in first_screen and "make test" in first_screen
    assert ". .venv/bin/activate" in first_screen and ".venv/bin/crdtbook" in first_screen


def test_the_core_example_prints_what_its_comments_say():
    code = README.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    checked = 0
    for line in code.splitlines():
        statement, _, comment = line.partition("  #")
        claim = comment.strip().split(":")[0]
        try:
            expected = ast.literal_eval(claim)
        except (ValueError, SyntaxError):
            exec(statement, scope)  # an assignment, or a comment that claims no value
            continue
        assert eval(statement, scope) == expected, line
        checked += 1
    assert checked >= 4
