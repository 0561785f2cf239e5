"""The store contract for retrying tasks, finding task ids by prefix and removing agents: run on
every store kind (the ``store`` fixture also checks the finished-task counts afterwards)."""

from __future__ import annotations

import time

import pytest

from podium.errors import Conflict, NotFound
from podium.models import AgentState, Outcome, TaskSpec, TaskState
from podium.store import Finish


def reg(store, name="a1", roles=(), lease=30.0):
    return store.register_agent(name, list(roles), "echo", "host", 123, lease, {})


def add(store, prompt="p", **kw):
    return store.add_tasks([TaskSpec(prompt, **kw)])[0]


def run(store, task, status=TaskState.FAILED, agent="a1", **kw):
    """Claim ``task`` for ``agent`` and record its result."""
    claimed = store.claim(agent, [], 30.0)
    assert claimed is not None and claimed.id == task.id
    out = Outcome(status, output=kw.pop("output", b"out\n"), **kw)
    assert store.finish(agent, Finish(task.id, claimed.attempts, out)) is status


def kinds(store, task_id):
    return [e.kind for e in store.read_events(0, 10_000, task_id=task_id)]


# -- retry ------------------------------------------------------------------------------

def test_retry_failed_task_starts_afresh(store):
    reg(store)
    t = add(store, "boom", max_attempts=2)
    run(store, t, stderr=b"bad\n", error="exit code 2", exit_code=2, tokens_in=5, cost_usd=0.1)
    before = store.counts()
    r = store.retry(t.id)
    assert r.state is TaskState.QUEUED and r.attempts == 0 and r.agent_id is None
    assert r.error is None and r.output is None and r.stderr is None and r.exit_code is None
    assert r.started_at is None and r.completed_at is None and r.tokens_in is None
    assert r.cost_usd is None and not r.output_truncated and r.max_attempts == 2
    after = store.counts()
    assert after["failed"] == before["failed"] - 1 and after["queued"] == before["queued"] + 1
    ev = store.read_events(0, 10_000, task_id=t.id)[-1]
    assert ev.kind == "task.retried" and ev.data == {"was": "failed", "state": "queued"}
    # It runs again, as a new task would, counting its attempts from 1.
    again = store.claim("a1", [], 30.0)
    assert again.id == t.id and again.attempts == 1
    store.finish("a1", Finish(t.id, 1, Outcome(TaskState.COMPLETED, output=b"fine")))
    assert store.get_task(t.id).output == b"fine"


def test_retry_cancelled_task(store):
    t = add(store)
    store.cancel(t.id, "not now")
    r = store.retry(t.id)
    assert r.state is TaskState.QUEUED and r.error is None
    assert kinds(store, t.id)[-2:] == ["task.cancelled", "task.retried"]


@pytest.mark.parametrize("state", ["queued", "running", "blocked", "completed"])
def test_retry_refused_unless_failed_or_cancelled(store, state):
    reg(store)
    dep = add(store, "dep")
    t = add(store, "t", depends_on=[dep.id]) if state == "blocked" else dep
    if state in ("running", "completed"):
        store.claim("a1", [], 30.0)
    if state == "completed":
        store.finish("a1", Finish(t.id, 1, Outcome(TaskState.COMPLETED)))
    assert store.task_state(t.id).value == state
    before = store.get_task(t.id)
    with pytest.raises(Conflict, match=f"task {t.id} is {state}: only a failed or cancelled"):
        store.retry(t.id)
    assert store.get_task(t.id) == before
    assert "task.retried" not in kinds(store, t.id)


def test_retry_unknown_task(store):
    with pytest.raises(NotFound, match="unknown task 't-nope'"):
        store.retry("t-nope")


def test_retry_resumes_the_pipeline_it_cancelled(store):
    reg(store)
    a = add(store, "a")
    b = add(store, "b", depends_on=[a.id])
    c = add(store, "c", depends_on=[b.id])
    other = add(store, "other", depends_on=[a.id])
    store.cancel(other.id, "not wanted")  # (cancelled by hand, not by a's failure)
    run(store, a)
    assert store.get_task(b.id).error == f"dependency {a.id} failed"
    assert store.get_task(c.id).error == f"dependency {b.id} cancelled"
    before = store.counts()
    store.retry(a.id)
    for t in (b, c):
        got = store.get_task(t.id)
        assert got.state is TaskState.BLOCKED and got.error is None and got.completed_at is None
        assert kinds(store, t.id)[-1] == "task.blocked"
    assert store.get_task(other.id).state is TaskState.CANCELLED
    assert store.counts()["cancelled"] == before["cancelled"] - 2
    # The pipeline runs on as if nothing had failed.
    for t in (a, b, c):
        run(store, t, TaskState.COMPLETED)
    assert store.get_task(c.id).state is TaskState.COMPLETED


def test_retry_keeps_dependent_another_failure_holds(store):
    reg(store)
    a, b = add(store, "a"), add(store, "b")
    both = add(store, "both", depends_on=[a.id, b.id])
    run(store, a)
    run(store, b)
    assert store.get_task(both.id).error == f"dependency {a.id} failed"
    store.retry(a.id)
    held = store.get_task(both.id)
    assert held.state is TaskState.CANCELLED and held.error == f"dependency {b.id} failed"
    store.retry(b.id)  # now nothing holds it
    assert store.get_task(both.id).state is TaskState.BLOCKED


def test_retry_of_dependent_waits_for_or_refuses_its_dependencies(store):
    reg(store)
    a = add(store, "a")
    b = add(store, "b", depends_on=[a.id])
    run(store, a)
    with pytest.raises(Conflict, match=f"depends on {a.id}, which is failed: retry that one"):
        store.retry(b.id)
    store.retry(a.id)
    assert store.get_task(b.id).state is TaskState.BLOCKED  # (revived with a)
    store.cancel(b.id, "by hand")
    assert store.retry(b.id).state is TaskState.BLOCKED  # a is queued: b waits for it
    run(store, a, TaskState.COMPLETED)
    assert store.get_task(b.id).state is TaskState.QUEUED
    run(store, b)
    assert store.retry(b.id).state is TaskState.QUEUED  # a completed: b runs at once


def test_retried_task_wakes_the_agents(store):
    reg(store)
    t = add(store)
    store.cancel(t.id, "x")
    waiter = store.agent_waiter("a1")
    try:
        waiter.wait(0)  # (drop what came before)
        store.retry(t.id)
        assert waiter.wait(5)
    finally:
        waiter.close()


# -- task ids by prefix ---------------------------------------------------------------------

def test_task_ids_with_prefix(store):
    ids = sorted(t.id for t in store.add_tasks([TaskSpec(f"p{i}") for i in range(8)]))
    assert store.task_ids_with_prefix(ids[3], 10) == [ids[3]]
    assert store.task_ids_with_prefix("t-", 100) == ids
    assert store.task_ids_with_prefix("t-", 3) == ids[:3]
    assert store.task_ids_with_prefix("t", 100) == ids
    assert store.task_ids_with_prefix("", 100) == ids
    assert store.task_ids_with_prefix(ids[0][:-1] + "~", 10) == []
    assert store.task_ids_with_prefix("u", 10) == []
    assert store.task_ids_with_prefix("t-\U0010ffff", 10) == []
    common = next(n for n in range(2, 17) if ids[0][:n] != ids[-1][:n]) - 1
    assert store.task_ids_with_prefix(ids[0][:common], 100) == ids


# -- removing agents ------------------------------------------------------------------------

def test_remove_agents_only_stopped_or_dead_without_work(store):
    reg(store, "live")
    reg(store, "stopped")
    store.deregister("stopped")
    reg(store, "dead", lease=0.01)
    reg(store, "waited-for")
    store.deregister("waited-for")
    pending = add(store, "for it", target_agent="waited-for")
    store.add_message("stopped", "hello")
    store.add_message("stopped", "report", direction="out", kind="report")
    store.add_message("live", "keep me")
    time.sleep(0.05)
    store.recover()
    assert store.get_agent("dead").state is AgentState.DEAD
    done = store.remove_agents(["live", "stopped", "dead", "waited-for", "nobody"])
    assert done.removed == ["stopped", "dead"]
    assert done.kept == {"live": "it is idle",
                         "waited-for": "1 unfinished task(s) are for it (cancel them first)",
                         "nobody": "unknown agent"}
    assert [a.id for a in store.list_agents()] == ["live", "waited-for"]
    assert [m.body for m in store.list_messages("live")] == ["keep me"]
    for gone in ("stopped", "dead"):
        with pytest.raises(NotFound):
            store.get_agent(gone)
    removed = [e for e in store.read_events(0, 10_000) if e.kind == "agent.removed"]
    assert [(e.agent_id, e.data["was"]) for e in removed] == [("stopped", "stopped"),
                                                             ("dead", "dead")]
    # Cancelled, its task no longer keeps the agent; the name can be taken again afterwards.
    store.cancel(pending.id, "x")
    assert store.remove_agents(["waited-for"]).removed == ["waited-for"]
    assert reg(store, "stopped").state is AgentState.IDLE
    assert store.list_messages("stopped") == []


def test_removed_agent_tasks_keep_its_name(store):
    reg(store)
    t = add(store)
    run(store, t, TaskState.COMPLETED)
    store.deregister("a1")
    assert store.remove_agents(["a1"]).removed == ["a1"]
    assert store.get_task(t.id).agent_id == "a1"
