"""The event follower on each store: one read of the log per wake-up, and no event missed.

Every follower (``podium watch``, ``logs --follow``, the web dashboard's stream, the
benchmarks' clocks) reads the log when woken; a read that finds nothing is a statement the
store runs for nobody, on PostgreSQL beside every dispatch.
"""

from __future__ import annotations

import threading
import time

from podium.models import TaskSpec
from podium.service.events import FOLLOW_BATCH, EventFollower


def counted_reads(store, monkeypatch) -> list[int]:
    """The number of events each ``read_events`` of the store returned, in order."""
    reads: list[int] = []
    read = store.read_events

    def counting(*args, **kw):
        got = read(*args, **kw)
        reads.append(len(got))
        return got
    monkeypatch.setattr(store, "read_events", counting)
    return reads


def settle() -> None:
    """Let a commit's wake-up arrive (PostgreSQL's notifications come a little after the
    commit; one that comes after the read that saw its event costs one more read)."""
    time.sleep(0.2)


def test_one_read_per_wake_up(store, monkeypatch):
    reads = counted_reads(store, monkeypatch)
    with EventFollower(store) as follower:
        store.set_context("k", "v1")
        settle()
        assert [e.kind for e in follower.poll(5.0)] == ["context.set"]
        assert reads == [1]
        # Committed while the follower waits: read once, when the wake-up comes (the old
        # follower read first, found nothing, then waited).
        later = threading.Timer(0.3, store.set_context, ("k", "v2"))
        later.start()
        try:
            got = follower.poll(5.0)
        finally:
            later.join()
        assert [e.data["key"] for e in got] == ["k"] and reads == [1, 1]


def test_committed_between_read_and_wait_is_not_missed(store, monkeypatch):
    """An event committed after the read that returned a short batch (before the next poll
    waits) is announced by a wake-up that the wait sees."""
    with EventFollower(store) as follower:
        store.set_context("k", "v1")
        first = follower.poll(5.0)
        store.set_context("k", "v2")  # (before the next poll starts)
        got = follower.poll(5.0)
        assert len(first) == 1 and len(got) == 1 and got[0].id > first[0].id


def test_a_full_batch_is_read_on_without_waiting(store, monkeypatch):
    with EventFollower(store) as follower:
        store.add_tasks([TaskSpec(f"p{i}") for i in range(FOLLOW_BATCH + 5)])
        settle()  # (the follower must not need the wake-up for the rest)
        assert len(follower.poll(5.0)) == FOLLOW_BATCH
        reads = counted_reads(store, monkeypatch)
        t0 = time.monotonic()
        rest = follower.poll(5.0)
        assert len(rest) == 5 and reads == [5] and time.monotonic() - t0 < 1.0


def test_a_timed_out_poll_reads_once_and_returns_nothing(store, monkeypatch):
    with EventFollower(store) as follower:
        store.set_context("k", "v1")
        settle()
        assert len(follower.poll(5.0)) == 1
        reads = counted_reads(store, monkeypatch)
        assert follower.poll(0.2) == [] and reads == [0]
        assert follower.poll(0) == [] and reads == [0, 0]
