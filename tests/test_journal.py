"""The journal's group commit: a lone request's commit does not wait for company,
and ``sync(mark)`` waits for what was appended before the mark."""

from __future__ import annotations

import trio

from node.store.journal import COMMIT_WINDOW_S, LAZY_COMMIT_S, Journal
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


async def test_a_flush_cancelled_once_its_rows_are_written_still_commits(tmp_path):
    from crdtbook.events import make_order

    store = Store.open(str(tmp_path / "data"), "default", fsync=False)
    journal = Journal(store)
    events = [make_order(10 + i, "a", i + 1, "buy", "limit", 100, 5, "") for i in range(3)]
    written = store.stage

    def stage_then_cancel(batch):  # the stop's deadline falls right after the rows
        written(batch)
        scope.cancel()

    store.stage = stage_then_cancel
    try:
        journal.events(events[:2])
        with trio.CancelScope() as scope:
            await journal.flush()
        assert store.event_count() == 2  # committed, not left in an open transaction
        store.stage = written
        journal.events(events[2:])
        await journal.flush()  # the next transaction begins as usual
        assert store.event_count() == 3 and not journal.failed
    finally:
        store.close()


async def test_an_ephemeral_journal_gathers_what_nobody_waits_for(tmp_path, autojump_clock):
    """Appends nobody syncs on wait up to LAZY_COMMIT_S for company, then commit
    together (one commit for all); a sync meanwhile gets its commit at once."""
    store = Store.open(str(tmp_path / "data"), "default", fsync=False)
    store.ephemeral = True
    journal = Journal(store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run)
            began = trio.current_time()
            for i in range(3):  # three orders answered without waiting
                journal.meta(n=i)
                await trio.sleep(LAZY_COMMIT_S / 10)
            assert journal.pending and journal.commits == 0  # still gathering
            while journal.pending:
                await trio.sleep(LAZY_COMMIT_S / 10)
            assert journal.commits == 1 and store.meta["n"] == 2
            assert trio.current_time() - began <= LAZY_COMMIT_S + LAZY_COMMIT_S / 10
            journal.meta(n=3)
            await trio.sleep(LAZY_COMMIT_S / 10)
            began = trio.current_time()
            await journal.sync()  # someone waits: no more gathering
            assert trio.current_time() - began < LAZY_COMMIT_S / 10
            assert journal.commits == 2 and store.meta["n"] == 3
            nursery.cancel_scope.cancel()
    finally:
        store.close()



async def test_a_flush_from_another_task_leaves_the_writer_awake(tmp_path, autojump_clock):
    """``flush`` is callable from any task (the server's stop does): the writer,
    waiting for appends meanwhile, still commits the next ones."""
    store = Store.open(str(tmp_path / "data"), "default", fsync=False)
    store.ephemeral = True
    journal = Journal(store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run)
            journal.meta(a=1)
            await journal.sync()
            await trio.sleep(COMMIT_WINDOW_S)  # the writer now waits for an append
            await journal.flush()  # another task flushes (nothing appended)
            assert store.meta["a"] == 1 and not journal.pending
            journal.meta(b=1)  # nobody flushes this one but the writer
            with trio.move_on_after(10 * LAZY_COMMIT_S):
                while journal.pending:
                    await trio.sleep(LAZY_COMMIT_S / 10)
            assert not journal.pending and store.meta["b"] == 1
            nursery.cancel_scope.cancel()
    finally:
        store.close()
