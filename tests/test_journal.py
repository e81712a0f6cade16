"""The journal's group commit: a lone request's commit does not wait for company,
and ``sync(mark)`` waits for what was appended before the mark."""

from __future__ import annotations

import trio

from node.store.journal import COMMIT_WINDOW_S, Journal
from node.store.sqlite import Store


async def test_a_lone_appender_commits_at_once_and_sync_waits_for_its_mark(
        tmp_path, autojump_clock):
    store = Store.open(str(tmp_path / "data"), "default", fsync=False)
    store.ephemeral = True  # written on the event loop: no thread under the mock clock
    journal = Journal(store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run)
            for i in range(5):  # one request at a time, each several appends
                began = trio.current_time()
                journal.meta(a=i)
                journal.meta(b=i)
                journal.meta(c=i)
                await journal.sync()
                assert trio.current_time() - began < COMMIT_WINDOW_S  # no window waited
                assert not journal.pending and store.meta["c"] == i
            journal.meta(d=1)
            mark = journal.mark()
            journal.meta(e=1)  # after the mark
            await journal.sync(mark)
            assert store.meta.get("d") == 1
            await journal.sync()
            assert store.meta.get("e") == 1 and not journal.pending
            nursery.cancel_scope.cancel()
    finally:
        store.close()
