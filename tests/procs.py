"""Real node processes for durability tests: start, kill -9, restart on the same directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import trio

from .nodes import DATA_DIRS, JOIN_TOKEN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NodeProcess:
    """``crdtbook node`` in a child process with a data directory.

    The first start picks a free port; restarts reuse it, so peers that know
    the node by URL find it again.
    """

    def __init__(self, data_dir: str, *peers: str, book: str = "default",
                 extra: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.peers = list(peers)
        self.book = book
        self.extra = list(extra)
        self.port = 0
        self.url = ""
        self.replica = ""
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "node", "node", "--listen", f"127.0.0.1:{self.port}",
               "--data-dir", self.data_dir, "--book", self.book, "--pull-interval", "0.2",
               "--log-level", "warning", *self.extra]
        if "--open" not in self.extra and "--join-token" not in self.extra:
            cmd += ["--join-token", JOIN_TOKEN]
        for peer in self.peers:
            cmd += ["--peer", peer]
        return cmd

    async def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        with trio.fail_after(timeout):
            line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        if " listening on " not in line:
            raise AssertionError(f"node did not start (exit {self.proc.poll()}): {line!r}")
        words = line.split()
        self.replica, self.url = words[2], words[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        DATA_DIRS[self.url] = self.data_dir  # tests.nodes.client() sends its token

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            return await trio.to_thread.run_sync(self.proc.wait)


async def get(client: httpx.AsyncClient, url: str, path: str):
    response = await client.get(url + path)
    response.raise_for_status()
    return response.json()


async def paged(client: httpx.AsyncClient, url: str, path: str, key: str) -> list:
    """Every item of a paged history route, following ``next`` to the end."""
    items, after = [], None
    sep = "&" if "?" in path else "?"
    while True:
        query = f"{sep}limit=10000" + (f"&after={after}" if after else "")
        page = await get(client, url, path + query)
        items += page[key]
        after = page["next"]
        if after is None:
            return items
