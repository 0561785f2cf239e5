"""Pruning the history: exactly what is old and finished goes, everything else stays, and the
store carries on as before (ids keep growing, cursors stay valid, counts stay right)."""

from __future__ import annotations

import time

from podium.models import Outcome, Priority, TaskSpec, TaskState
from podium.store import Finish, open_store
from podium.store.base import Pruned


def reg(store, name):
    return store.register_agent(name, [], "echo", "host", 123, 30.0, {})


def finish(store, agent, task, status=TaskState.COMPLETED, output=b"out"):
    store.finish(agent, Finish(task.id, task.attempts,
                               Outcome(status, output=output, stderr=b"err", exit_code=0,
                                       tokens_in=3, cost_usd=0.5)))


def history(store):
    """Old tasks in every state (finished ones with messages), then, after the cutoff, new
    finished ones. Returns (cutoff, ids by name)."""
    reg(store, "a1")
    old_done, old_failed, old_running, parent, old_queued = store.add_tasks(
        [TaskSpec(p) for p in ("old done", "old failed", "old running", "parent", "old queued")])
    old_cancelled, old_blocked = store.add_tasks(
        [TaskSpec("old cancelled"), TaskSpec("old blocked", depends_on=[parent.id])])
    old_dependent = store.add_tasks([TaskSpec("old dependent", depends_on=[old_done.id])])[0]
    for t in (old_done, old_failed, old_running, parent):
        claimed = store.claim("a1", [], 30.0)
        assert claimed.id == t.id
        if t is old_done:
            finish(store, "a1", claimed)
        elif t is old_failed:
            finish(store, "a1", claimed, TaskState.FAILED)
    store.cancel(old_cancelled.id, "old")
    store.add_message("a1", "about old done", direction="out", task_id=old_done.id)
    store.add_message("a1", "about old failed", direction="out", task_id=old_failed.id)
    store.add_message("a1", "a plain message")
    store.set_context("k", "v1")
    time.sleep(0.02)
    cutoff = time.time()
    time.sleep(0.02)
    new_done = store.add_tasks([TaskSpec("new done", priority=Priority.HIGH)])[0]
    claimed = store.claim("a1", [], 30.0)
    assert claimed.id == new_done.id
    finish(store, "a1", claimed)
    new = store.add_tasks([TaskSpec("new one")])[0]
    store.cancel(new.id, "new")
    store.set_context("k", "v2")
    return cutoff, dict(
        old_done=old_done.id, old_failed=old_failed.id, old_cancelled=old_cancelled.id,
        old_running=old_running.id, parent=parent.id, old_queued=old_queued.id,
        old_blocked=old_blocked.id, old_dependent=old_dependent.id, new_done=new_done.id,
        new_cancelled=new.id)


def task_ids(store):
    return {t.id for t in store.list_tasks(limit=10_000)}


def test_prune_removes_old_finished_tasks_and_events_only(store):
    cutoff, ids = history(store)
    events_before = store.read_events(0, 100_000)
    old_events = [e for e in events_before if e.ts < cutoff]
    last_before = store.last_event_id()
    counts = store.counts()

    dry = store.prune(cutoff, dry_run=True)
    assert dry == Pruned(events=len(old_events), tasks=3, task_deps=0, messages=2)
    assert store.read_events(0, 100_000) == events_before  # a dry run changes nothing

    pruned = store.prune(cutoff)
    assert pruned == dry
    gone = {ids["old_done"], ids["old_failed"], ids["old_cancelled"]}
    assert task_ids(store) == set(ids.values()) - gone
    for name, state in (("old_running", "running"), ("parent", "running"),
                        ("old_queued", "queued"), ("old_blocked", "blocked"),
                        ("old_dependent", "queued")):  # unfinished: kept whatever their age
        assert store.get_task(ids[name]).state.value == state
    assert store.get_task(ids["old_blocked"]).depends_on == [ids["parent"]]
    # A dependent kept lists its pruned dependency still.
    assert store.get_task(ids["old_dependent"]).depends_on == [ids["old_done"]]
    events = store.read_events(0, 100_000)
    assert [e.id for e in events[:-1]] == [e.id for e in events_before if e.ts >= cutoff]
    assert events[-1].kind == "history.pruned" and events[-1].id > last_before
    assert [m.body for m in store.list_messages("a1", direction="out")] == []
    assert [m.body for m in store.list_messages("a1")] == ["a plain message"]
    assert store.get_agent("a1").state.live
    assert store.get_context("k").value == "v2" and store.get_context("k").version == 2
    after = store.counts()
    assert after == {**counts, "completed": counts["completed"] - 1,
                     "failed": counts["failed"] - 1, "cancelled": counts["cancelled"] - 1}
    assert store.prune(cutoff) == Pruned()  # nothing more to do


def test_prune_keep_results_clears_only_outputs(store):
    cutoff, ids = history(store)
    counts = store.counts()
    pruned = store.prune(cutoff, keep_results=True)
    assert pruned.tasks == 0 and pruned.outputs == 3 and pruned.messages == 0
    assert task_ids(store) == set(ids.values())
    done = store.get_task(ids["old_done"])
    assert done.state is TaskState.COMPLETED and done.exit_code == 0 and done.tokens_in == 3
    assert done.cost_usd == 0.5 and done.duration_ms is not None
    assert done.output is None and done.stderr is None
    with store._reader() as tx:  # (the mark that ``result`` shows: column output_pruned)
        marked = {r["id"] for r in tx.all("SELECT id FROM tasks WHERE output_pruned = 1")}
    assert marked == {ids["old_done"], ids["old_failed"], ids["old_cancelled"]}
    assert store.get_task(ids["new_done"]).output == b"out"
    assert len(store.list_messages("a1", direction="out")) == 2
    assert store.counts() == counts
    assert store.prune(cutoff, keep_results=True).outputs == 0  # cleared once
    assert store.prune(cutoff).tasks == 3  # and a later prune may still remove them


def test_store_works_on_after_a_prune(store):
    history(store)
    follower_cursor = store.last_event_id()
    store.prune(time.time() + 1)
    assert store.read_events(follower_cursor, 1000)[0].kind == "history.pruned"
    cursor = store.last_event_id()
    assert cursor > follower_cursor
    # Tasks and dependencies, claims, results and recovery as on any store.
    a = store.add_tasks([TaskSpec("after a", priority=Priority.HIGH)])[0]
    b = store.add_tasks([TaskSpec("after b", priority=Priority.HIGH, depends_on=[a.id])])[0]
    assert b.state is TaskState.BLOCKED
    reg(store, "a2")
    t = store.claim("a2", [], 30.0)
    assert t is not None and t.id == a.id
    finish(store, "a2", t)
    assert store.task_state(b.id) is TaskState.QUEUED
    new_events = store.read_events(cursor, 1000)
    assert new_events and all(e.id > cursor for e in new_events)
    assert store.read_events(follower_cursor, 1)[0].id > follower_cursor
    reg(store, "dies")
    t = store.claim("dies", [], 0.05)
    assert t is not None and t.id == b.id
    time.sleep(0.1)
    store.recover()
    assert store.task_state(b.id) is TaskState.QUEUED
    assert store.counts() == {"blocked": 1, "queued": 3, "running": 2, "completed": 1,
                              "failed": 0, "cancelled": 0}


def test_counts_survive_a_copy(any_store_url, tmp_path):
    """Copied rows are counted afresh in the destination."""
    src = open_store(f"sqlite://{tmp_path / 'src.db'}")
    history(src)
    dst = open_store(any_store_url)
    try:
        from podium.store.copy import copy_store

        copy_store(src, dst)
        assert dst.counts() == src.counts()
        with dst._reader() as tx:
            assert dst.counts() == dst._scan_counts(tx)
    finally:
        src.close()
        dst.close()


def test_migration_counts_an_existing_history(tmp_path, monkeypatch):
    from podium.store import migrations
    from podium.store import sqlite as sqlite_mod

    url = f"sqlite://{tmp_path / 'old.db'}"
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS",
                        [m for m in migrations.MIGRATIONS if m[0] < "m008"])
    old = open_store(url)
    with old._write() as tx:  # (a history written before m008: rows only)
        for i, state in enumerate(["completed", "completed", "failed", "queued"]):
            tx.execute("INSERT INTO tasks (id, prompt, priority, state, max_attempts, "
                       "created_at, completed_at) VALUES (?, 'x', 1, ?, 3, 0, 0)",
                       (f"t-old{i}", state))
    old.close()
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", migrations.MIGRATIONS)
    s = open_store(url)
    try:
        assert s.counts() == {"blocked": 0, "queued": 1, "running": 0, "completed": 2,
                              "failed": 1, "cancelled": 0}
    finally:
        s.close()


def test_automatic_pruning_runs_off_the_commit(tmp_path, monkeypatch):
    """PODIUM_RETENTION: a process looks after a commit, and prunes on a thread of its own."""
    monkeypatch.setenv("PODIUM_RETENTION", "0s")
    s = open_store(f"sqlite://{tmp_path / 'auto.db'}")
    try:
        s.auto_prune_first_s = 0.0
        old = s.add_tasks([TaskSpec("old")])[0]
        s.cancel(old.id, "old")  # (the first commit reads the setting)
        kept = s.add_tasks([TaskSpec("queued")])[0]  # (a look: due, the thread starts)
        assert s._prune_thread is not None
        s._prune_thread.join(10)
        assert task_ids(s) == {kept.id}
        s.add_tasks([TaskSpec("more")])
        assert s._prune_thread is not None and not s._prune_thread.is_alive()
        other = open_store(s.url)  # another process of the team: pruned within the hour
        try:
            other._retention_setting = (0.0, False)
            other._auto_prune()
            assert kept.id in task_ids(other)
            assert len(task_ids(other)) == 2
        finally:
            other.close()
    finally:
        s.close()


def test_bad_retention_setting_turns_automatic_pruning_off(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PODIUM_RETENTION", "a month")
    s = open_store(f"sqlite://{tmp_path / 'bad.db'}")
    try:
        s.add_tasks([TaskSpec("x")])
        assert "automatic pruning is off" in caplog.text
        assert s._prune_next == float("inf")
    finally:
        s.close()
