"""The store contract: what every Store implementation must do, run against each of them.

Only the public Store interface is used here, so a new implementation passes by behaving the
same, not by sharing code.
"""

from __future__ import annotations

import threading
import time

import pytest

from podium.errors import Conflict, InvalidInput, NotFound
from podium.models import AgentState, Outcome, Priority, TaskSpec, TaskState
from podium.store import Finish, open_store


def reg(store, name="a1", roles=(), lease=30.0):
    return store.register_agent(name, list(roles), "echo", "host", 123, lease, {})


def done(task, output=b"ok", status=TaskState.COMPLETED, **kw):
    return Finish(task.id, task.attempts, Outcome(status, output=output, **kw))


def add(store, *prompts, **kw):
    return store.add_tasks([TaskSpec(p, **kw) for p in prompts])


def kinds(store, task_id):
    return [e.kind for e in store.read_events(0, 10_000, task_id=task_id)]


# -- schema -----------------------------------------------------------------------------

def test_migrate_is_idempotent(store):
    assert store.migrate() == []
    reg(store)
    assert store.migrate() == []
    assert store.get_agent("a1").name == "a1"


# -- agents -----------------------------------------------------------------------------

def test_register_and_list_agents(store):
    a = reg(store, "a1", ["coder"])
    assert a.state is AgentState.IDLE and a.roles == ["coder"] and a.pid == 123
    reg(store, "a2")
    assert [x.id for x in store.list_agents()] == ["a1", "a2"]
    with pytest.raises(NotFound):
        store.get_agent("nope")


def test_live_agent_name_cannot_be_taken(store):
    reg(store, "a1")
    with pytest.raises(Conflict, match="already running"):
        reg(store, "a1")


def test_stopped_agent_name_can_be_reused(store):
    reg(store, "a1")
    store.deregister("a1")
    assert store.get_agent("a1").state is AgentState.STOPPED
    assert reg(store, "a1").state is AgentState.IDLE


def test_agent_session_is_kept_across_reregistration(store):
    reg(store, "a1")
    assert store.set_agent_session("a1", "s-1").meta["session_id"] == "s-1"
    store.deregister("a1")
    assert reg(store, "a1").meta["session_id"] == "s-1"  # a restarted agent resumes it
    assert "session_id" not in store.set_agent_session("a1", None).meta
    assert "agent.session" in [e.kind for e in store.read_events(0, 10_000)]
    with pytest.raises(NotFound):
        store.set_agent_session("nope", "s")


def test_reregistering_dead_agent_requeues_its_task(store):
    reg(store, "a1", lease=0.05)
    [t] = add(store, "x")
    store.claim("a1", [], 0.05)
    time.sleep(0.1)
    reg(store, "a1")  # the old process is gone: its claim must not be lost
    assert store.get_task(t.id).state is TaskState.QUEUED


def test_silent_agent_is_marked_dead_and_its_task_requeued(store):
    reg(store, "a1", lease=0.05)
    reg(store, "a2")
    [t] = add(store, "x")
    assert store.claim("a1", [], 0.05).id == t.id
    time.sleep(0.1)
    store.heartbeat("a2", 30)  # any heartbeat sweeps expired leases
    assert store.get_agent("a1").state is AgentState.DEAD
    task = store.get_task(t.id)
    assert task.state is TaskState.QUEUED and task.agent_id is None
    assert "lease expired" in task.error
    assert store.claim("a2", [], 30).id == t.id


# -- claiming ---------------------------------------------------------------------------

def test_claim_empty_queue(store):
    reg(store)
    assert store.claim("a1", [], 30) is None


def test_claim_takes_priority_then_fifo(store):
    reg(store)
    low = add(store, "low1", priority=Priority.LOW)[0]
    n1, n2 = add(store, "n1", "n2")
    high = add(store, "high", priority=Priority.HIGH)[0]
    order = []
    t = store.claim("a1", [], 30)
    while t is not None:
        order.append(t.id)
        t = store.claim("a1", [], 30, done(t))
    assert order == [high.id, n1.id, n2.id, low.id]


def test_claim_sets_running_lease_and_agent(store):
    reg(store)
    [t] = add(store, "x")
    before = time.time()
    c = store.claim("a1", [], 30)
    assert c.id == t.id and c.state is TaskState.RUNNING and c.attempts == 1
    assert c.agent_id == "a1" and c.lease_expires >= before + 29
    agent = store.get_agent("a1")
    assert agent.state is AgentState.BUSY and agent.current_task == t.id
    assert store.claim("a1", [], 30) is None  # a running task is not handed out twice


def test_targeting_by_agent(store):
    reg(store, "a1")
    reg(store, "a2")
    [t] = store.add_tasks([TaskSpec("x", target_agent="a2")])
    assert store.claim("a1", [], 30) is None
    assert store.claim("a2", [], 30).id == t.id


def test_targeting_by_role(store):
    reg(store, "coder", ["coder"])
    reg(store, "plain")
    [t] = store.add_tasks([TaskSpec("review", target_role="reviewer")])
    [u] = store.add_tasks([TaskSpec("code", target_role="coder")])
    assert store.claim("plain", [], 30) is None
    assert store.claim("coder", ["coder"], 30).id == u.id
    reg(store, "rev", ["reviewer", "tester"])
    assert store.claim("rev", ["reviewer", "tester"], 30).id == t.id


def test_unknown_target_agent_rejects_whole_batch(store):
    reg(store)
    with pytest.raises(NotFound, match="unknown agent 'ghost'"):
        store.add_tasks([TaskSpec("ok"), TaskSpec("x", target_agent="ghost")])
    assert store.list_tasks() == []


def test_finish_records_result_exactly(store):
    reg(store)
    [t] = add(store, "x")
    c = store.claim("a1", [], 30)
    blob = bytes(range(256)) * 100  # any bytes, NUL included
    state = store.finish("a1", done(c, blob, exit_code=0, tokens_in=5, tokens_out=7,
                                    cost_usd=0.25, session_id="s1", stderr=b"warn"))
    assert state is TaskState.COMPLETED
    got = store.get_task(t.id)
    assert got.output == blob and got.stderr == b"warn"
    assert (got.tokens_in, got.tokens_out, got.cost_usd, got.session_id) == (5, 7, 0.25, "s1")
    assert got.completed_at >= got.started_at >= got.created_at
    r = got.result()
    assert r["output_encoding"] == "base64" and r["status"] == "completed"
    agent = store.get_agent("a1")
    assert agent.state is AgentState.IDLE and agent.current_task is None
    assert (agent.tasks_done, agent.tokens_in, agent.tokens_out) == (1, 5, 7)


def test_stale_finish_is_ignored(store):
    reg(store, "a1", lease=0.05)
    reg(store, "a2")
    [t] = add(store, "x")
    first = store.claim("a1", [], 0.05)
    time.sleep(0.1)
    store.recover()
    second = store.claim("a2", [], 30)
    assert second.id == t.id and second.attempts == 2
    assert store.finish("a1", done(first, b"late")) is None  # the old claim lost its lease
    assert store.finish("a2", done(second, b"right")) is TaskState.COMPLETED
    got = store.get_task(t.id)
    assert got.output == b"right" and got.agent_id == "a2"
    assert kinds(store, t.id).count("task.completed") == 1


def test_lease_exhaustion_fails_task(store):
    reg(store, "a1", lease=0.02)
    [t] = add(store, "x", max_attempts=2)
    for _ in range(2):
        assert store.claim("a1", [], 0.02).id == t.id
        time.sleep(0.05)
        store.recover()
    got = store.get_task(t.id)
    assert got.state is TaskState.FAILED and "attempt 2 of 2" in got.error


def test_release_does_not_count_attempt(store):
    reg(store)
    [t] = add(store, "x")
    c = store.claim("a1", [], 30)
    store.release("a1", c.id, c.attempts, "worker stopping")
    got = store.get_task(t.id)
    assert got.state is TaskState.QUEUED and got.attempts == 0
    assert "task.requeued" in kinds(store, t.id)


def test_failure_is_final_unless_retry(store):
    reg(store)
    [plain] = add(store, "x")
    [retry] = add(store, "y", retry_on_failure=True, max_attempts=2)
    c = store.claim("a1", [], 30)
    assert store.finish("a1", done(c, b"", TaskState.FAILED, error="boom")) is TaskState.FAILED
    c = store.claim("a1", [], 30)
    assert c.id == retry.id
    assert store.finish("a1", done(c, b"", TaskState.FAILED, error="e1")) is TaskState.QUEUED
    c = store.claim("a1", [], 30)
    assert c.id == retry.id and c.attempts == 2
    assert store.finish("a1", done(c, b"", TaskState.FAILED, error="e2")) is TaskState.FAILED
    assert store.get_task(retry.id).error == "e2"
    assert store.get_task(plain.id).error == "boom"


def test_batch_of_results_mixes_usual_and_unusual_cases(store):
    """Results recorded together with the next claim: the usual ones in one statement, the
    stale, cancelled and to-be-retried ones each by their own rule; exotic values survive."""
    reg(store)
    ok, fail, stale, cancelled, dep_src = add(store, "ok", "fail", "stale", "cancel", "src")
    [retry] = store.add_tasks([TaskSpec("retry", retry_on_failure=True, max_attempts=3)])
    [dependent] = store.add_tasks([TaskSpec("after", depends_on=[dep_src.id])])
    claimed = store.claim_batch("a1", [], 30, [], 6)
    assert [t.id for t in claimed] == [ok.id, fail.id, stale.id, cancelled.id, dep_src.id,
                                       retry.id]
    store.cancel(cancelled.id, "changed my mind")
    blob = "ünï 'q' $x `b`\n".encode() + bytes([0, 255])
    finishes = [
        done(claimed[0], blob, exit_code=0, tokens_in=3, tokens_out=4, cost_usd=0.5,
             session_id="s"),
        done(claimed[1], b"", TaskState.FAILED, error="boom", exit_code=2),
        Finish(stale.id, claimed[2].attempts + 1, Outcome(TaskState.COMPLETED)),  # not ours
        done(claimed[3], b"partial"),
        done(claimed[4], b"src done"),
        done(claimed[5], b"", TaskState.FAILED, error="try again"),
    ]
    again = store.claim_batch("a1", [], 30, finishes, 10)
    assert sorted(t.id for t in again) == sorted([dependent.id, retry.id])
    got = {t.id: store.get_task(t.id) for t in claimed}
    assert got[ok.id].state is TaskState.COMPLETED and got[ok.id].output == blob
    assert (got[ok.id].tokens_in, got[ok.id].tokens_out, got[ok.id].cost_usd,
            got[ok.id].session_id, got[ok.id].exit_code) == (3, 4, 0.5, "s", 0)
    assert got[fail.id].state is TaskState.FAILED and got[fail.id].error == "boom"
    assert got[fail.id].exit_code == 2
    assert got[stale.id].state is TaskState.RUNNING  # the stale result was refused
    assert "task.stale_result" in kinds(store, stale.id)
    assert got[cancelled.id].state is TaskState.CANCELLED
    assert got[cancelled.id].error == "changed my mind" and got[cancelled.id].output == b"partial"
    assert got[dep_src.id].state is TaskState.COMPLETED
    assert got[retry.id].state is TaskState.RUNNING and got[retry.id].attempts == 2
    assert "task.requeued" in kinds(store, retry.id)
    assert kinds(store, ok.id)[-1] == "task.completed"
    assert store.get_agent("a1").tasks_done == 6


def test_heartbeat_extends_lease_and_reports_loss(store):
    reg(store)
    [t] = add(store, "x")
    c = store.claim("a1", [], 0.5)
    r = store.heartbeat("a1", 30, c.id, c.attempts)
    assert r.task_state is TaskState.RUNNING and not r.lost
    assert store.get_task(t.id).lease_expires > time.time() + 20
    store.cancel(t.id, "stop it")
    r = store.heartbeat("a1", 30, c.id, c.attempts)
    assert r.lost and r.task_state is TaskState.CANCELLED
    with pytest.raises(NotFound):
        store.heartbeat("ghost", 30)


def test_an_idle_heartbeat_says_whether_work_waits(store):
    """The idle look that rides on a heartbeat: work the agent may take, and only that."""
    reg(store, "a1", ["dev"])
    reg(store, "a2")
    assert store.heartbeat("a1", 30).work_waiting is None  # (not asked)
    assert store.heartbeat("a1", 30, roles=["dev"]).work_waiting is False  # empty queue
    add(store, "for a2", target_agent="a2")
    add(store, "for ops", target_role="ops")
    [first] = add(store, "for a2 too", target_agent="a2")
    add(store, "blocked", depends_on=[first.id])
    assert store.heartbeat("a1", 30, roles=["dev"]).work_waiting is False  # none of it is a1's
    [dev] = add(store, "for dev", target_role="dev")
    assert store.heartbeat("a1", 30, roles=["dev"]).work_waiting is True
    assert store.heartbeat("a1", 30, roles=[]).work_waiting is False  # (without the role)
    assert store.claim("a1", ["dev"], 30).id == dev.id
    assert store.heartbeat("a1", 30, roles=["dev"]).work_waiting is False
    # Handed to an idle agent that takes hand-offs: its own, whatever its roles.
    store.register_agent("a3", [], "echo", "host", 123, 30.0, {}, takes_hand_offs=True)
    [handed] = add(store, "for a3", target_agent="a3")
    assert store.get_task(handed.id).agent_id == "a3"
    assert store.heartbeat("a3", 30, roles=[]).work_waiting is True


# -- dependencies -----------------------------------------------------------------------

def test_dependencies_block_then_release(store):
    reg(store)
    a, b = add(store, "a", "b")
    [c] = add(store, "c", depends_on=[a.id, b.id])
    assert c.state is TaskState.BLOCKED and sorted(c.depends_on) == sorted([a.id, b.id])
    t = store.claim("a1", [], 30)
    t = store.claim("a1", [], 30, done(t))
    assert store.get_task(c.id).state is TaskState.BLOCKED
    t = store.claim("a1", [], 30, done(t))  # b done: c is released and claimed
    assert t.id == c.id
    assert "task.queued" in kinds(store, c.id)


def test_dependency_already_done_queues_at_once(store):
    reg(store)
    [a] = add(store, "a")
    store.finish("a1", done(store.claim("a1", [], 30)))
    [b] = add(store, "b", depends_on=[a.id])
    assert b.state is TaskState.QUEUED


def test_failed_dependency_cancels_dependents_transitively(store):
    reg(store)
    [a] = add(store, "a")
    [b] = add(store, "b", depends_on=[a.id])
    [c] = add(store, "c", depends_on=[b.id])
    store.finish("a1", done(store.claim("a1", [], 30), b"", TaskState.FAILED, error="x"))
    assert store.get_task(b.id).state is TaskState.CANCELLED
    assert store.get_task(b.id).error == f"dependency {a.id} failed"
    assert store.get_task(c.id).state is TaskState.CANCELLED
    assert store.get_task(c.id).error == f"dependency {b.id} cancelled"
    [d] = add(store, "d", depends_on=[a.id])  # added after the failure
    assert d.state is TaskState.CANCELLED


def test_unknown_dependency_is_rejected(store):
    with pytest.raises(NotFound, match="t-nothere"):
        add(store, "x", depends_on=["t-nothere"])
    assert store.list_tasks() == []


# -- cancel -----------------------------------------------------------------------------

def test_cancel_queued_running_and_finished(store):
    reg(store)
    q, r = add(store, "q", "r")
    assert store.cancel(q.id, "no longer needed").state is TaskState.CANCELLED
    c = store.claim("a1", [], 30)
    assert c.id == r.id
    assert store.cancel(r.id, "stop").state is TaskState.CANCELLED
    # the worker's late result keeps the cancelled state but attaches the output
    assert store.finish("a1", done(c, b"partial")) is TaskState.CANCELLED
    got = store.get_task(r.id)
    assert got.state is TaskState.CANCELLED and got.output == b"partial" and got.error == "stop"
    with pytest.raises(Conflict, match="already cancelled"):
        store.cancel(r.id, "again")
    with pytest.raises(NotFound):
        store.cancel("t-unknown", "x")


# -- listing ----------------------------------------------------------------------------

def test_list_and_count(store):
    reg(store)
    tasks = add(store, "a", "b", "c")
    store.claim("a1", [], 30)
    assert [t.id for t in store.list_tasks()] == [t.id for t in tasks]
    assert [t.id for t in store.list_tasks(limit=2)] == [t.id for t in tasks[1:]]
    assert [t.id for t in store.list_tasks(TaskState.RUNNING)] == [tasks[0].id]
    assert [t.id for t in store.list_tasks(agent_id="a1")] == [tasks[0].id]
    counts = store.counts()
    assert counts["queued"] == 2 and counts["running"] == 1 and counts["failed"] == 0
    assert store.task_state(tasks[1].id) is TaskState.QUEUED
    with pytest.raises(NotFound):
        store.task_state("t-zz")


# -- messages, context, events ----------------------------------------------------------

def test_messages(store):
    reg(store)
    m1 = store.add_message("a1", "hello $HOME `x` \"q\"\n✓")
    store.add_message("a1", "second")
    store.add_message("a1", "report", direction="out", kind="report", sender="a1")
    assert m1.body == "hello $HOME `x` \"q\"\n✓"
    inbox = store.list_messages("a1", "in", unread=True, mark_read=True)
    assert [m.body for m in inbox] == [m1.body, "second"]
    assert store.list_messages("a1", "in", unread=True) == []
    assert [m.kind for m in store.list_messages("a1", "out")] == ["report"]
    with pytest.raises(NotFound):
        store.add_message("ghost", "x")
    with pytest.raises(InvalidInput):
        store.add_message("a1", "x", direction="sideways")


def test_context_is_versioned(store):
    assert store.set_context("spec", "v1").version == 1
    assert store.set_context("spec", "v2", by="a1").version == 2
    e = store.get_context("spec")
    assert (e.value, e.version, e.updated_by) == ("v2", 2, "a1")
    store.set_context("api", "x")
    assert [e.key for e in store.list_context()] == ["api", "spec"]
    with pytest.raises(NotFound):
        store.get_context("missing")


def test_event_cursor_sees_everything_in_order(store):
    start = store.last_event_id()
    reg(store)
    [t] = add(store, "x")
    store.finish("a1", done(store.claim("a1", [], 30)))
    store.add_event("custom.note", "a1", t.id, {"text": "hi"})
    evs = store.read_events(start)
    assert [e.kind for e in evs] == ["agent.registered", "task.queued", "task.claimed",
                                     "task.completed", "custom.note"]
    assert [e.id for e in evs] == sorted(e.id for e in evs)
    assert store.read_events(evs[2].id)[0].kind == "task.completed"
    assert store.last_event_id() == evs[-1].id
    assert evs[-1].data == {"text": "hi"}


def test_event_cursor_misses_nothing_while_writers_race(store):
    """Readers follow ``read_events(after=cursor)``: an event may never get an id below one a
    reader has already passed, whichever writer commits first."""
    url, start = store.url, store.last_event_id()
    writers, per_writer = 4, 40
    followed: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def follow() -> None:
        s = open_store(url)
        try:
            cursor = start
            while True:
                last_round = stop.is_set()
                for e in s.read_events(cursor, 1000):
                    followed.append(e.id)
                    cursor = e.id
                if last_round:
                    return
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            s.close()

    def write(i: int) -> None:
        s = open_store(url)
        try:
            name = f"w{i}"
            reg(s, name)
            for k in range(per_writer):
                [t] = add(s, f"{name}-{k}")
                s.add_event("custom.note", name, t.id, {"k": k})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            s.close()

    reader = threading.Thread(target=follow)
    reader.start()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    reader.join()
    assert not errors
    everything = [e.id for e in store.read_events(start, 100_000)]
    assert len(everything) == writers * (1 + 2 * per_writer)
    assert followed == everything  # in order, none skipped, none twice


# -- concurrency and wake-ups -----------------------------------------------------------

def test_concurrent_claimers_take_each_task_once(store):
    store_url = store.url
    n_tasks, n_claimers = 300, 6
    add(store, *[f"t{i}" for i in range(n_tasks)])
    seen: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(i: int) -> None:
        s = open_store(store_url)  # its own connection, as another process would have
        try:
            name = f"c{i}"
            reg(s, name)
            t = s.claim(name, [], 30)
            while t is not None:
                with lock:
                    seen.append(t.id)
                t = s.claim(name, [], 30, done(t))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n_claimers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(seen) == n_tasks and len(set(seen)) == n_tasks
    assert store.counts()["completed"] == n_tasks


def test_agent_waiter_is_woken_by_its_tasks_only(store):
    reg(store, "a1")
    reg(store, "a2")
    w1, w2 = store.agent_waiter("a1"), store.agent_waiter("a2")
    try:
        store.add_tasks([TaskSpec("x", target_agent="a1")])
        assert w1.wait(2.0) is True
        assert w2.wait(0.1) is False
        add(store, "for anyone")
        assert w1.wait(2.0) is True and w2.wait(2.0) is True
        store.add_message("a2", "hi")
        assert w2.wait(2.0) is True and w1.wait(0.1) is False
    finally:
        w1.close()
        w2.close()


def test_event_waiter_wakes_on_any_event(store):
    w = store.event_waiter()
    try:
        assert w.wait(0.05) is False
        store.set_context("k", "v")
        assert w.wait(2.0) is True
        w.poke()
        assert w.wait(0) is True
    finally:
        w.close()


def test_claim_reports_context_generation(store):
    reg(store)
    add(store, "a", "b", "c")
    g0 = store.claim("a1", [], 30).context_generation
    store.set_context("k", "v1")
    g1 = store.claim("a1", [], 30).context_generation
    store.set_context("k", "v2")
    g2 = store.claim("a1", [], 30).context_generation
    assert g0 < g1 < g2


def test_workflow_id_is_kept(store):
    t = store.add_tasks([TaskSpec("step 1", workflow_id="w-1"), TaskSpec("alone")])
    assert [store.get_task(x.id).workflow_id for x in t] == ["w-1", None]
    assert store.list_tasks()[0].workflow_id == "w-1"


def test_live_agent_name_is_taken_over_only_from_the_process_named_gone(store):
    store.register_agent("a1", [], "echo", "h", 111, 30, {})
    from podium.errors import AgentRunning
    with pytest.raises(AgentRunning) as err:
        store.register_agent("a1", [], "echo", "h", 222, 30, {})
    assert (err.value.pid, err.value.host) == (111, "h")
    with pytest.raises(AgentRunning):  # (another process than the one found gone)
        store.register_agent("a1", [], "echo", "h", 222, 30, {}, replaces_pid=999)
    with pytest.raises(AgentRunning):  # (the same pid, on another host)
        store.register_agent("a1", [], "echo", "other", 222, 30, {}, replaces_pid=111)
    assert store.register_agent("a1", [], "echo", "h", 222, 30, {}, replaces_pid=111).pid == 222


def test_a_process_whose_name_was_taken_over_neither_beats_nor_deregisters_it(store):
    """A worker found dead (its lease ran out while it could not beat) whose name another
    worker then registered: its beats and its deregistering, which name its process, change
    nothing and say who holds the name now; the new holder's own are as usual."""
    from podium.errors import AgentReplaced
    store.register_agent("a1", [], "echo", "h1", 111, 0.1, {})
    assert not store.heartbeat("a1", 0.1, holder=("h1", 111)).lost
    time.sleep(0.3)  # (a1's lease runs out: the name may be taken)
    store.register_agent("a1", [], "echo", "h2", 222, 30, {})
    [t] = add(store, "x")
    c = store.claim("a1", [], 30)
    beaten = store.get_agent("a1").last_heartbeat
    time.sleep(0.01)
    for beat in (lambda: store.heartbeat("a1", 60, holder=("h1", 111)),
                 lambda: store.heartbeat("a1", 60, c.id, c.attempts, holder=("h1", 111)),
                 lambda: store.heartbeat("a1", 60, holder=("h2", 111)),  # (same pid, not host)
                 lambda: store.deregister("a1", holder=("h1", 111))):
        with pytest.raises(AgentReplaced) as err:
            beat()
        assert (err.value.pid, err.value.host) == (222, "h2")
        assert "taken over by pid 222 on h2" in str(err.value)
    a = store.get_agent("a1")
    assert (a.host, a.pid, a.last_heartbeat, a.state.value) == ("h2", 222, beaten, "busy")
    assert store.get_task(t.id).lease_expires < time.time() + 40  # (not the 60 s beat's)
    assert not store.heartbeat("a1", 30, c.id, c.attempts, holder=("h2", 222)).lost
    with pytest.raises(NotFound):
        store.heartbeat("ghost", 30, holder=("h1", 111))
    with pytest.raises(NotFound):
        store.deregister("ghost", holder=("h1", 111))
    store.deregister("a1", holder=("h2", 222))
    assert store.get_agent("a1").state.value == "stopped"


def test_a_process_whose_name_was_taken_over_claims_nothing(store):
    """A worker found dead whose name another worker then registered, claiming as its own
    process (``holder``), takes neither what is handed to the agent (the new holder's) nor
    what is queued, and its late result leaves the agent's row alone; the new holder claims
    both as usual."""
    old, new = ("h1", 111), ("h2", 222)
    store.register_agent("a1", [], "echo", *old, 0.1, {}, takes_hand_offs=True)
    [before] = add(store, "claimed before")
    [c] = store.claim_batch("a1", [], 30, [], 1, True, holder=old)  # (handed at its add)
    time.sleep(0.3)  # (a1's lease runs out: the name may be taken)
    store.register_agent("a1", [], "echo", *new, 30, {}, takes_hand_offs=True)
    assert store.get_task(before.id).state is TaskState.QUEUED  # (taken back by the register)
    [handed] = add(store, "handed")
    assert store.get_task(handed.id).agent_id == "a1"  # (handed to the idle agent)
    for handed_look in (True, False):
        assert store.claim_batch("a1", [], 30, [], 5, handed_look, holder=old) == []
    assert store.claim_batch("a1", [], 30, [done(c)], 5, True, holder=old) == []
    a = store.get_agent("a1")
    assert (a.pid, a.tasks_done, a.current_task) == (222, 0, handed.id)
    assert store.get_task(before.id).state is TaskState.QUEUED  # (the late result: stale)
    [h] = store.claim_batch("a1", [], 30, [], 5, True, holder=new)
    assert h.id == handed.id
    assert [t.id for t in store.claim_batch(
        "a1", [], 30, [done(h, started_at=time.time())], 5, holder=new)] \
        == [before.id]
    assert store.get_agent("a1").tasks_done == 1
