"""Hand-offs: a task added while a worker waits is claimed for it by the add itself.

Store-level tests run on SQLite and PostgreSQL with the store's real wake-up channel (a Unix
datagram socket, LISTEN/NOTIFY); the worker tests use real ``podium agent run`` processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from helpers import all_events, wait_for
from podium.agents import registration
from podium.models import AgentState, Outcome, Priority, TaskSpec, TaskState
from podium.store import Finish

EXOTIC = "it's \"$HOME\" `id` $(x) \\n\n\ttab é ü 中文 😀 \x01 end"


def reg(store, name="a1", roles=(), lease=30.0, takes_hand_offs=True, host="host", pid=123):
    return store.register_agent(name, list(roles), "echo", host, pid, lease, {},
                                takes_hand_offs=takes_hand_offs)


def add(store, *prompts, **kw):
    return store.add_tasks([TaskSpec(p, **kw) for p in prompts])


def handed_now(waiter) -> bool:
    assert waiter.wait(5), "no wake-up arrived"
    return waiter.handed_over()


def test_idle_takes_hand_offs_agent_is_handed_a_new_task(store):
    reg(store)
    w = store.agent_waiter("a1")
    try:
        t = add(store, EXOTIC)[0]
        assert (t.state, t.agent_id, t.attempts) == (TaskState.RUNNING, "a1", 1)
        stored = store.get_task(t.id)
        assert (stored.state, stored.agent_id, stored.attempts) == (TaskState.RUNNING, "a1", 1)
        assert stored.started_at is None and stored.lease_expires > time.time()
        agent = store.get_agent("a1")
        assert (agent.state, agent.current_task) == (AgentState.BUSY, t.id)
        ev = store.read_events(0, 100, task_id=t.id)
        assert [e.kind for e in ev] == ["task.queued", "task.claimed"]
        assert ev[1].agent_id == "a1" and ev[1].data == {"attempt": 1, "handed_over": True}

        assert handed_now(w) is True, "the wake-up says a task was handed over"
        assert w.handed_over() is False  # (said once)
        got = store.claim_batch("a1", [], 30, [], 8, True)
        assert [(x.id, x.prompt, x.attempts, x.state) for x in got] == \
            [(t.id, EXOTIC, 1, TaskState.RUNNING)]
        assert got[0].context_generation is not None
        # Looking again before it started finds the same task.
        again = store.claim_batch("a1", [], 30, [], 8, True)
        assert [(x.id, x.prompt) for x in again] == [(t.id, EXOTIC)]

        before = time.time()
        o = Outcome(TaskState.COMPLETED, output=b"ok")
        o.started_at = before
        assert store.claim_batch("a1", [], 30, [Finish(t.id, 1, o)], 8) == []
        final = store.get_task(t.id)
        assert final.state is TaskState.COMPLETED and final.output == b"ok"
        assert final.started_at == pytest.approx(before)
        assert store.get_agent("a1").state is AgentState.IDLE
        # Idle again: the next task is handed over too.
        assert add(store, "next")[0].agent_id == "a1"
    finally:
        w.close()


def test_hand_off_keeps_the_claim_rules(store):
    reg(store, "coder", roles=["coder"])
    reg(store, "other", takes_hand_offs=False)
    review = add(store, "review", target_role="reviewer")[0]
    mine = add(store, "for other", target_agent="other")[0]
    assert review.state is mine.state is TaskState.QUEUED
    coding = add(store, "code", target_role="coder")[0]
    assert coding.agent_id == "coder"
    # Busy now: nothing more is handed to it, and an agent not takes_hand_offs gets nothing.
    later = add(store, "later")[0]
    assert later.state is TaskState.QUEUED and later.agent_id is None
    # A blocked task waits for its dependency, hand-off or not.
    store.register_agent("free", [], "echo", "host", 1, 30, {}, takes_hand_offs=True)
    blocked = add(store, "after", depends_on=[later.id])[0]
    assert blocked.state is TaskState.BLOCKED
    assert store.get_agent("free").state is AgentState.IDLE


def test_agent_not_heard_from_lately_is_not_handed_tasks(store):
    reg(store, "quiet", lease=0.3)  # heartbeats every 0.05 s would be due
    time.sleep(0.2)
    t = add(store, "x")[0]
    assert t.state is TaskState.QUEUED
    store.heartbeat("quiet", 0.3)
    assert add(store, "y")[0].agent_id == "quiet"


def test_best_task_of_a_batch_is_handed_over(store):
    reg(store)
    low, high, normal = store.add_tasks([TaskSpec("low", priority=Priority.LOW),
                                         TaskSpec("high", priority=Priority.HIGH),
                                         TaskSpec("normal")])
    assert high.agent_id == "a1"
    assert low.state is normal.state is TaskState.QUEUED


def test_each_idle_agent_gets_one_task_of_a_batch(store):
    for name in ("a1", "a2", "a3"):
        reg(store, name)
    tasks = add(store, *[f"p{i}" for i in range(5)])
    holders = [t.agent_id for t in tasks if t.state is TaskState.RUNNING]
    assert sorted(holders) == ["a1", "a2", "a3"]
    assert sum(t.state is TaskState.QUEUED for t in tasks) == 2


def test_large_task_is_handed_over(store):
    reg(store)
    w = store.agent_waiter("a1")
    try:
        big = "x" * 100_000 + EXOTIC
        t = add(store, big)[0]
        assert t.agent_id == "a1"
        assert handed_now(w) is True
        got = store.claim_batch("a1", [], 30, [], 8, True)
        assert [(x.id, x.prompt) for x in got] == [(t.id, big)]
    finally:
        w.close()


def test_cancel_of_a_task_not_picked_up_frees_its_agent(store):
    reg(store)
    t = add(store, "x")[0]
    store.cancel(t.id, "changed my mind")
    agent = store.get_agent("a1")
    assert (agent.state, agent.current_task) == (AgentState.IDLE, None)
    assert store.claim_batch("a1", [], 30, [], 8, True) == []
    assert add(store, "y")[0].agent_id == "a1"


def test_handed_task_of_an_agent_that_stops_goes_back_to_the_queue(store):
    """A worker that stops hands back what it runs, so a task still handed to it when it
    deregisters was never started: it goes back without using up a try."""
    reg(store)
    t = add(store, "x", max_attempts=1)[0]
    store.deregister("a1")
    back = store.get_task(t.id)
    assert (back.state, back.agent_id, back.attempts) == (TaskState.QUEUED, None, 0)
    assert "task.requeued" in [e.kind for e in store.read_events(0, 100, task_id=t.id)]
    reg(store, "a2", takes_hand_offs=False)
    claimed = store.claim("a2", [], 30)
    assert claimed.id == t.id and claimed.attempts == 1


def test_handed_task_of_an_agent_that_died_counts_its_try(store):
    """A lease that expires cannot tell whether the agent started the task: the try counts,
    as for a claim."""
    reg(store, lease=0.3)
    t = add(store, "x", max_attempts=2)[0]
    time.sleep(0.4)
    assert len(store.recover()) >= 1  # (the tasks taken back)
    back = store.get_task(t.id)
    assert (back.state, back.attempts) == (TaskState.QUEUED, 1)
    assert store.get_agent("a1").state is AgentState.DEAD


def test_agent_whose_process_is_gone_from_this_host_is_not_handed_tasks(store):
    """An agent killed while idle still looks alive until its lease runs out; on its own host
    its process is seen to be gone, so it is passed over."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    reg(store, "dead", host=socket.gethostname(), pid=gone.pid)
    reg(store, "elsewhere", host="another-host", pid=gone.pid)  # (not ours to look up)
    reg(store, "alive", host=socket.gethostname(), pid=os.getpid())
    store.heartbeat("dead", 30)  # the freshest heartbeat of the three
    tasks = store.add_tasks([TaskSpec(p) for p in ("x", "y", "z")], registration.may_run)
    assert sorted(t.agent_id or "-" for t in tasks) == ["-", "alive", "elsewhere"]
    assert store.get_agent("dead").state is AgentState.IDLE


# -- real workers ---------------------------------------------------------------------------

def test_worker_starts_handed_tasks_exactly_once(podium, workers):
    workers.start("w1")
    wait_for(lambda: podium.agent("w1").state is AgentState.IDLE, 10, what="w1 idle")
    big = "y" * 100_000
    ids = []
    for prompt in (EXOTIC, big, "third"):
        ids.append(podium.add_task(prompt).id)
        wait_for(lambda: podium.task(ids[-1]).state is TaskState.COMPLETED, 15,
                 what="the task to complete")
        wait_for(lambda: podium.agent("w1").state is AgentState.IDLE, 10, what="w1 idle")
    for task_id, prompt in zip(ids, (EXOTIC, big, "third")):
        t = podium.task(task_id)
        assert t.output == prompt.encode() and t.attempts == 1
        assert t.created_at <= t.started_at <= t.completed_at
        claims = [e for e in all_events(podium.store)
                  if e.task_id == task_id and e.kind == "task.claimed"]
        assert len(claims) == 1 and claims[0].data.get("handed_over") is True, claims


def test_shell_worker_records_the_start_of_a_long_handed_task(podium, workers, tmp_path):
    go = tmp_path / "go"
    workers.start("s1", backend="shell")
    wait_for(lambda: podium.agent("s1").state is AgentState.IDLE, 10, what="s1 idle")
    t = podium.add_task(f"while [ ! -f {go} ]; do sleep 0.05; done; echo done")
    assert podium.task(t.id).agent_id == "s1"
    started = wait_for(lambda: podium.task(t.id).started_at, 10,
                       what="the worker's first heartbeat to record the start")
    assert started >= t.created_at
    go.touch()
    wait_for(lambda: podium.task(t.id).state is TaskState.COMPLETED, 15, what="completion")
    assert podium.task(t.id).output == b"done\n"


def test_worker_killed_while_idle_is_passed_over(podium, workers):
    """kill -9 of an idle worker: tasks added right after go to the live one at once, not to
    the dead one until its lease expires."""
    workers.start("doomed")
    workers.start("steady")
    wait_for(lambda: all(podium.agent(n).state is AgentState.IDLE for n in ("doomed", "steady")),
             10, what="both idle")
    workers.kill9("doomed")
    podium.store.heartbeat("doomed", 30)  # as if it beat just before: the first choice
    began = time.monotonic()
    ids = [podium.add_task(f"after the kill {i}").id for i in range(5)]
    for task_id in ids:
        wait_for(lambda task_id=task_id: podium.task(task_id).state is TaskState.COMPLETED, 10,
                 what="the task to complete")
    assert time.monotonic() - began < 10  # the lease is 30 s
    assert {podium.task(i).agent_id for i in ids} == {"steady"}
    assert all(podium.task(i).attempts == 1 for i in ids)


def test_a_hand_off_hint_with_nothing_handed_over_claims_nothing(store):
    """A forged or stale hint only makes the agent look: what it gets is what the store says."""
    reg(store)
    assert store.claim_batch("a1", [], 30, [], 8, True) == []
    t = add(store, EXOTIC)[0]
    got = store.claim_batch("a1", [], 30, [], 8, True)
    assert [(x.id, x.prompt, x.attempts) for x in got] == [(t.id, EXOTIC, 1)]
