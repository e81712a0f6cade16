"""Where the CLI's answers go: stdout, through one rich console.

Theory of operation
-------------------
``Output`` decides once, from where stdout goes, how things are written:

* to a terminal: rich renders tables at the terminal's width, in colour,
  unless ``--no-color`` or ``$NO_COLOR`` (https://no-color.org) says not;
* anywhere else (a pipe, a file): no colour and no escape codes at all,
  lines never wrapped (the width is wide), no trailing spaces, so ``grep``,
  ``awk`` and tests see the same plain text on every machine.

``--json`` output does not go through rich: it is the node's JSON, indented.

A reader that goes away early (``crdtbook events | head -3``) is not an
error: ``quiet_broken_pipe`` points stdout at /dev/null so that nothing is
printed at exit, and the command ends with status 141, as a command killed by
SIGPIPE does. (SIGPIPE itself stays ignored, as Python sets it: the default
action would also end the command without a word on a socket a node closed.)
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from rich.console import Console, RenderableType

WIDE = 10_000  # the width of a pipe: never wrap
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`'s yes


class Output:
    def __init__(self, no_color: bool = False, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty()
        self.color = self.terminal and not no_color and not os.environ.get("NO_COLOR")
        self.console = Console(
            file=self.stream, width=None if self.terminal else WIDE, highlight=False,
            emoji=False, markup=False, no_color=not self.color,
            color_system="auto" if self.terminal else None, soft_wrap=not self.terminal)

    def show(self, *things: RenderableType) -> None:
        """Render ``things``, one after the other, each from a new line."""
        if self.terminal:
            for thing in things:
                self.console.print(thing)
            return
        with self.console.capture() as captured:
            for thing in things:
                self.console.print(thing)
        text = "\n".join(line.rstrip() for line in captured.get().split("\n"))
        self.stream.write(text)

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")

    def json(self, data: object) -> None:
        json.dump(data, self.stream, indent=2)
        self.stream.write("\n")

    def clear(self) -> None:
        """A new screen (``--watch``); nothing when not a terminal."""
        if self.terminal:
            self.console.clear()


def quiet_broken_pipe() -> int:
    """After a BrokenPipeError on stdout: nothing more is written there (not even
    at exit, when Python flushes it); the exit status to use."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return BROKEN_PIPE


def crdtbook_command() -> str:
    """How a person runs this crdtbook: ``crdtbook`` when that is what the shell
    finds on PATH, else this one's path (``.venv/bin/crdtbook`` before the
    environment is activated), relative when under the current directory."""
    here = os.path.join(os.path.dirname(sys.executable), "crdtbook")
    if not os.path.exists(here):
        return "crdtbook"
    found = shutil.which("crdtbook")
    if found and os.path.realpath(found) == os.path.realpath(here):
        return "crdtbook"
    relative = os.path.relpath(here)
    return relative if not relative.startswith("..") else here
