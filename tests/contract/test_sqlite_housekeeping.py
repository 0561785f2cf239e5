"""SQLite housekeeping that the contract suite cannot see: sortable task ids and the background
checkpoints that keep the write-ahead log from growing without holding up writers."""

from __future__ import annotations

import multiprocessing
import time

from podium.clock import sortable_id
from podium.models import TaskSpec
from podium.store import sqlite as sqlite_mod
from podium.store.sqlite import CHECKPOINT_PAGES, SQLiteStore


def _ids(n: int, q) -> None:
    q.put([sortable_id("t") for _ in range(n)])


def test_sortable_ids_grow_and_never_repeat_across_processes():
    mine = [sortable_id("t") for _ in range(20_000)]
    assert mine == sorted(mine) and len(set(mine)) == len(mine)
    assert all(len(i) == 16 and i.startswith("t-") for i in mine[:10])
    q = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_ids, args=(20_000, q))
             for _ in range(3)]
    for p in procs:
        p.start()
    theirs = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    everything = mine + [i for ids in theirs for i in ids]
    assert len(set(everything)) == len(everything)
    assert all(ids == sorted(ids) for ids in theirs)


def test_forked_child_does_not_continue_the_parents_ids(monkeypatch):
    import os

    from podium import clock

    # One frozen millisecond for parent and child: only the counter tells their ids apart.
    monkeypatch.setattr(clock.time, "time_ns", lambda: 1_790_000_000_000_000_000)
    sortable_id("t")  # the parent has a counter running in this millisecond
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, as fast as it can
        os.close(r)
        os.write(w, "\n".join(sortable_id("t") for _ in range(300)).encode())
        os._exit(0)
    os.close(w)
    parent = [sortable_id("t") for _ in range(300)]
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    child = data.decode().split("\n")
    assert len(child) == 300 and not set(child) & set(parent)


def _wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_log_is_checkpointed_in_the_background(tmp_path):
    s = SQLiteStore(tmp_path / "p.db")
    try:
        assert s._checkpointer is None
        big = "x" * 200_000
        for _ in range(25):  # ~50 pages per commit, 1,250 in all
            s.add_tasks([TaskSpec(big)])
        assert s._checkpointer is not None and s._checkpointer.thread.is_alive()
        _wait_until(lambda: s._unchecked_pages() < CHECKPOINT_PAGES)
        assert (tmp_path / "p.db").stat().st_size > 2_000_000  # the pages reached the database
        assert len(s.list_tasks(limit=100)) == 25
    finally:
        s.close()
    assert not s._checkpointer.thread.is_alive()


def test_log_starts_over_once_checkpoints_catch_up(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_mod, "WAL_LIMIT_PAGES", 1500)
    s = SQLiteStore(tmp_path / "p.db")
    try:
        big = "y" * 200_000
        for _ in range(45):
            s.add_tasks([TaskSpec(big)])
            time.sleep(0.01)
        # Past the limit the thread checkpoints inside the writer lock (a code path this runs,
        # not one it can tell apart); once a checkpoint caught up, the next writer starts the
        # log over: it holds fewer pages than were ever written to it.
        # The last commits may land after the thread's last checkpoint and leave fewer pages
        # than CHECKPOINT_PAGES behind, which asks for none: the test asks until none are left.
        def caught_up() -> bool:
            s._checkpointer.request()
            return s._unchecked_pages() == 0

        _wait_until(caught_up)
        s.add_tasks([TaskSpec("small")])
        s.add_tasks([TaskSpec(big)])
        _wait_until(lambda: s._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                    < 1500)
        assert s.counts()["queued"] == 47
    finally:
        s.close()
