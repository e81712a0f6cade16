"""Resource bounds measured on a real node process: memory (VmHWM) and time.

Each attack that once cost gigabytes or stalled a node must now be refused
early: a 60 MB CBOR push of empty arrays, a PeerRPC gzip body inflating to
1 GB, a thousand connections trickling their bodies. The node runs in a
child process (tests/procs.py) so its peak memory can be read from
/proc/PID/status, and so its file limit can be set the way a default shell
sets it (soft 1,024).
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import time
import zlib

import httpx
import pytest
import trio

from node import asgi

from .nodes import LIVENESS_S
from .procs import NodeProcess

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                                reason="reads /proc/PID/status")

MAX_RSS_MB = 300


def vm_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def empty_arrays_push(count: int) -> bytes:
    """A blocks message whose "blocks" is ``count`` empty arrays (one byte each)."""
    return (b"\xa4" + b"\x61v\x01" + b"\x64kind\x66blocks" + b"\x66blocks\x9a"
            + struct.pack(">I", count) + b"\x80" * count + b"\x66claims\x80")


def gzip_bomb(mib: int) -> bytes:
    """A valid gzip member of ``mib`` MiB of zeros, about 1 KiB per MiB: the same
    fully flushed deflate piece repeated, with the right CRC and size."""
    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + piece * mib + deflate.flush()
            + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF))


def soft_nofile_1024() -> None:
    """In the child: the soft file limit of a default shell (the node raises it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


class LimitedNode(NodeProcess):
    async def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(self.command(), cwd=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, preexec_fn=soft_nofile_1024)
        with trio.fail_after(timeout):
            line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        assert " listening on " in line, line
        self.url = line.split()[-1]


@pytest.fixture
async def proc(tmp_path):
    node = LimitedNode(str(tmp_path / "n"), extra=("--rpc-listen", "127.0.0.1:0"))
    await node.start()
    try:
        yield node
    finally:
        node.kill()


async def status(http: httpx.AsyncClient, url: str) -> dict:
    r = await http.get(url + "/status")
    assert r.status_code == 200
    return r.json()


async def test_a_60_mb_push_of_empty_arrays_and_a_gzip_bomb_are_refused_early(proc):
    pid = proc.proc.pid
    async with httpx.AsyncClient(timeout=30) as http:
        before = await status(http, proc.url)
        body = empty_arrays_push(60_000_000)
        started = time.monotonic()
        r = await http.post(proc.url + "/peer/push", content=body,
                            headers={"content-type": "application/cbor"})
        push_s = time.monotonic() - started
        assert r.status_code == 413  # over the peer body limit: refused by its size
        # under the size limit, the scan refuses it at its first header
        body = empty_arrays_push(15_000_000)
        started = time.monotonic()
        r = await http.post(proc.url + "/peer/push", content=body,
                            headers={"content-type": "application/cbor"})
        push_s = max(push_s, time.monotonic() - started)
        assert r.status_code == 400 and "more than 1000000 items" in r.json()["detail"]
        del body
        push_hwm = vm_kb(pid, "VmHWM") // 1024

        bomb = gzip_bomb(1000)  # 1 MB on the wire, 1,000 MiB inflated
        assert len(bomb) < 1024 * 1024
        rpc = f"http://127.0.0.1:{before['rpc'].rsplit(':', 1)[1]}/"
        started = time.monotonic()
        r = await http.post(rpc, content=bomb, headers={"grc-compress": "gzip"})
        bomb_s = time.monotonic() - started
        reply = zlib.decompress(r.content, 31)
        assert r.status_code == 200 and b"ERR_REQUEST:the gzipped body inflates past" in reply
        bomb_hwm = vm_kb(pid, "VmHWM") // 1024

        after = await status(http, proc.url)
    print(f"\n60 MB push: refused in {push_s:.2f}s, VmHWM {push_hwm} MB; "
          f"gzip bomb: refused in {bomb_s:.2f}s, VmHWM {bomb_hwm} MB")
    assert push_s < LIVENESS_S and bomb_s < LIVENESS_S
    assert push_hwm < MAX_RSS_MB and bomb_hwm < MAX_RSS_MB
    assert after["digest"] == before["digest"]


async def test_slow_connections_are_cut_and_status_keeps_answering(proc):
    """1,000 connections trickle their bodies (and 50 their headers), a byte a second:
    /status still answers (well before the first is cut), and every slow connection is
    cut within seconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip("this process may not open 1,100 files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    host, port = proc.url.split("://")[1].rsplit(":", 1)
    slow, headers_only = 1000, 50
    opened: list[float] = []
    held_for: list[float] = []  # seconds from opening to being cut, per connection

    async def trickle(body: bool) -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        since = time.monotonic()
        opened.append(since)
        # a peer route: it reads the body before anything else (order entry answers
        # 401 at once without a token, before reading)
        head = b"POST /peer/push HTTP/1.1\r\nhost: x\r\ncontent-type: application/cbor\r\n"
        try:
            await stream.send_all(head + (b"content-length: 100000\r\n\r\n\xa1" if body
                                          else b""))
            while True:  # a byte a second, until the node cuts the connection
                with trio.move_on_after(1.0):
                    if await stream.receive_some(4096) == b"":
                        break
                    continue
                await stream.send_all(b" " if body else b"x-slow: 1\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            held_for.append(time.monotonic() - since)
            await stream.aclose()

    latencies = []
    async with httpx.AsyncClient(timeout=10) as http:
        before = await status(http, proc.url)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(slow + headers_only):
                    nursery.start_soon(trickle, i < slow)
                await wait_for(lambda: len(opened) == slow + headers_only)
                # while (nearly) every slow connection is open: each is cut ~5 s after
                # it opened, and opening them all took ~4.5 s on a loaded machine, where
                # "until the first is cut" left time for one probe
                while len(held_for) * HELD_FRACTION < slow + headers_only:
                    t0 = time.monotonic()
                    await status(http, proc.url)
                    latencies.append(time.monotonic() - t0)
                    await trio.sleep(SAMPLE_S)
        after = await status(http, proc.url)
    print(f"\n{slow + headers_only} slow connections: /status worst {max(latencies):.3f}s "
          f"over {len(latencies)} calls while 9 in 10 or more were open; each cut after "
          f"{min(held_for):.1f}..{max(held_for):.1f}s")
    # A liveness bound, not a speed: a node the slow connections stalled would answer
    # only once they are cut (HEADER_TIMEOUT_S after they opened). 1.5 s was seen on a
    # machine loaded 2.5x past its cores; 0.2-0.4 s when it is quiet.
    assert len(latencies) >= 5 and max(latencies) < 0.8 * asgi.HEADER_TIMEOUT_S
    # 5 s to send the headers or the body (asgi.py), and slack for a loaded machine
    # (up to 8.8 s seen there: a cut is noticed by a task of this busy process)
    assert max(held_for) < 20.0
    assert after["digest"] == before["digest"]
    assert proc.proc.poll() is None


SAMPLE_S = 0.05  # between two /status probes while slow connections are held
HELD_FRACTION = 10  # probes go on until a tenth of the slow connections was cut
POLL_S = 0.05  # between two looks at a condition, within a deadline


async def wait_for(check, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds, failing after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(POLL_S)


def test_bomb_helpers_are_what_they_say():
    assert len(zlib.decompress(gzip_bomb(3), 31)) == 3 << 20
    assert sys.getsizeof(empty_arrays_push(10)) < 200
