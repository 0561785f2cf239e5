"""The worker, end to end: real ``podium agent run`` processes, a real SQLite store, real shells.

Nothing is mocked. Tests wait on store state (``podium.wait`` or polling), never on fixed
sleeps, except where the only thing to wait for is a signal reaching another process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from helpers import all_events, wait_for
from podium.models import AgentState, Priority, TaskState

LEASE = 2.0
HEARTBEAT = 0.3


@pytest.fixture
def store(podium):
    """The SQLite store the workers use (not conftest's store-kind matrix)."""
    return podium.store


# -- helpers ---------------------------------------------------------------------------------





def kinds(store, task_id: str) -> list[str]:
    return [e.kind for e in all_events(store, task_id)]


def wait_state(podium, task_id: str, state: TaskState, timeout: float = 15.0):
    """The task in ``state``; for RUNNING, also started: a task handed to an idle worker is
    running from the add on, and records its start once the worker has begun it."""
    def reached():
        t = podium.task(task_id)
        return t.state is state and (state is not TaskState.RUNNING or t.started_at) and t

    return wait_for(reached, timeout, what=f"task {task_id} to be {state.value}")


def finished(podium, task_id: str, timeout: float = 30.0):
    t = podium.wait(task_id, timeout)
    assert t.state.finished, f"task {task_id} still {t.state.value} after {timeout}s"
    return t


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a process, or None when it no longer exists."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def read_pid(path: Path, timeout: float = 15.0) -> int:
    def get():
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None
    return wait_for(get, timeout, what=f"pid file {path}")


def no_errors_in_logs(workers, *names: str) -> None:
    for name in names:
        log = workers.log(name)
        assert "Traceback" not in log, f"{name} log:\n{log}"
        assert "database is locked" not in log, f"{name} log:\n{log}"


# -- basics ----------------------------------------------------------------------------------

def test_echo_round_trip(podium, workers, store):
    workers.start("e1", backend="echo")
    t = podium.add_task("hello, podium")
    done = finished(podium, t.id)
    assert done.state is TaskState.COMPLETED
    assert done.output == b"hello, podium"
    assert done.exit_code == 0
    assert done.agent_id == "e1"
    assert done.attempts == 1
    assert done.error is None
    assert done.started_at is not None and done.completed_at >= done.started_at
    ks = kinds(store, t.id)
    assert ks == ["task.queued", "task.claimed", "task.completed"], ks
    r = podium.task(t.id).result()
    assert r["status"] == "completed" and r["output"] == "hello, podium"
    assert "output_encoding" not in r
    assert podium.agent("e1").tasks_done == 1
    no_errors_in_logs(workers, "e1")


def test_shell_completed_keeps_stdout_and_stderr_apart(podium, workers):
    workers.start("s1", backend="shell")
    t = podium.add_task("echo to-stdout; echo to-stderr >&2; printf 'no newline'")
    done = finished(podium, t.id)
    assert done.state is TaskState.COMPLETED, done.error
    assert done.exit_code == 0
    assert done.output == b"to-stdout\nno newline"
    assert done.stderr == b"to-stderr\n"
    assert done.error is None
    r = podium.task(t.id).result()
    assert r["output"] == "to-stdout\nno newline" and r["stderr"] == "to-stderr\n"


def test_shell_failed_has_exit_code_output_and_stderr(podium, workers):
    workers.start("s1", backend="shell")
    t = podium.add_task("echo partial; echo 'it broke' >&2; exit 7")
    done = finished(podium, t.id)
    assert done.state is TaskState.FAILED
    assert done.exit_code == 7
    assert done.output == b"partial\n"
    assert done.stderr == b"it broke\n"
    assert "exit code 7" in done.error and "it broke" in done.error
    assert done.attempts == 1  # no retry unless asked for


def test_shell_runs_in_agent_workdir_with_task_environment(podium, workers, tmp_path):
    workers.start("s1", backend="shell")
    t = podium.add_task('pwd; echo "$PODIUM_TASK_ID $PODIUM_AGENT_ID"; echo "$PODIUM_TASK_CONTEXT"',
                        context="ctx value")
    done = finished(podium, t.id)
    assert done.state is TaskState.COMPLETED, done.error
    lines = done.output.decode().splitlines()
    assert Path(lines[0]).resolve() == tmp_path.resolve()
    assert lines[1] == f"{t.id} s1"
    assert lines[2] == "ctx value"


# -- ordering and targeting ------------------------------------------------------------------

def test_priorities_high_then_normal_then_low_fifo_within(podium, workers, store):
    order = [("low", "L1"), ("normal", "N1"), ("high", "H1"), ("low", "L2"), ("high", "H2"),
             ("normal", "N2"), ("high", "H3"), ("low", "L3"), ("normal", "N3")]
    ids = {}
    for prio, name in order:
        ids[podium.add_task(name, priority=prio).id] = name
    workers.start("e1", backend="echo")
    for tid in ids:
        assert finished(podium, tid).state is TaskState.COMPLETED
    claimed = [ids[e.task_id] for e in all_events(store) if e.kind == "task.claimed"]
    assert claimed == ["H1", "H2", "H3", "N1", "N2", "N3", "L1", "L2", "L3"]
    tasks = {t.id: t for t in podium.tasks(limit=100)}
    assert {tasks[i].priority for i in ids} == {Priority.HIGH, Priority.NORMAL, Priority.LOW}


def test_task_for_an_agent_is_taken_only_by_that_agent(podium, workers):
    # Register "x", then stop it so the task aimed at it has to wait for it to come back.
    workers.start("x", backend="echo")
    workers.stop("x")
    assert podium.agent("x").state is AgentState.STOPPED
    workers.start("y", backend="echo")
    mine = podium.add_task("for x only", agent="x")
    # Added after it: FIFO would give these to y only after "mine", were y allowed to take it.
    others = [podium.add_task(f"anyone {i}").id for i in range(3)]
    for tid in others:
        assert finished(podium, tid).agent_id == "y"
    assert podium.task(mine.id).state is TaskState.QUEUED
    assert podium.task(mine.id).attempts == 0

    workers.start("x", backend="echo")
    done = finished(podium, mine.id)
    assert done.state is TaskState.COMPLETED and done.agent_id == "x"
    assert done.output == b"for x only"

    # With both alive, targeted tasks still go only where they are aimed.
    to_y = [podium.add_task(f"y {i}", agent="y").id for i in range(5)]
    to_x = [podium.add_task(f"x {i}", agent="x").id for i in range(5)]
    assert {finished(podium, t).agent_id for t in to_y} == {"y"}
    assert {finished(podium, t).agent_id for t in to_x} == {"x"}


def test_task_for_a_role_is_taken_only_by_an_agent_with_that_role(podium, workers):
    workers.start("plain", backend="echo")
    workers.start("tester", backend="echo", roles=["tester"])
    workers.stop("tester")  # only "plain" (no roles) is left
    reviewed = podium.add_task("needs a reviewer", role="reviewer")
    tested = podium.add_task("needs a tester", role="tester")
    others = [podium.add_task(f"anyone {i}").id for i in range(3)]
    for tid in others:
        assert finished(podium, tid).agent_id == "plain"
    assert podium.task(reviewed.id).state is TaskState.QUEUED
    assert podium.task(tested.id).state is TaskState.QUEUED

    workers.start("rev", backend="echo", roles=["reviewer", "writer"])
    done = finished(podium, reviewed.id)
    assert done.state is TaskState.COMPLETED and done.agent_id == "rev"
    # "rev" is not a tester either: the tester task is still waiting.
    more = [podium.add_task(f"later {i}").id for i in range(2)]
    for tid in more:
        finished(podium, tid)
    assert podium.task(tested.id).state is TaskState.QUEUED
    workers.start("tester", backend="echo", roles=["tester"])
    assert finished(podium, tested.id).agent_id == "tester"


# -- dependencies ----------------------------------------------------------------------------

def test_dependencies_block_until_complete_and_release_automatically(podium, workers, store):
    a = podium.add_task("echo A")
    b = podium.add_task("echo B", depends_on=[a.id])
    c = podium.add_task("echo C", depends_on=[a.id, b.id])
    d = podium.add_task("echo D")  # independent, added last
    assert a.state is TaskState.QUEUED
    assert b.state is TaskState.BLOCKED and c.state is TaskState.BLOCKED
    assert podium.task(c.id).depends_on == [a.id, b.id] or \
        sorted(podium.task(c.id).depends_on) == sorted([a.id, b.id])

    workers.start("s1", backend="shell")
    done = {t.id: finished(podium, t.id) for t in (a, b, c, d)}
    assert all(t.state is TaskState.COMPLETED for t in done.values())
    assert done[b.id].started_at >= done[a.id].completed_at
    assert done[c.id].started_at >= done[b.id].completed_at
    claimed = [e.task_id for e in all_events(store) if e.kind == "task.claimed"]
    # A and D were queued; B is queued only once A completes, C once B does.
    assert claimed.index(a.id) < claimed.index(b.id) < claimed.index(c.id)
    released = [e for e in all_events(store, b.id) if e.kind == "task.queued"]
    assert released and released[-1].data.get("released_by") == a.id
    released_c = [e for e in all_events(store, c.id) if e.kind == "task.queued"]
    assert len(released_c) == 1 and released_c[0].data.get("released_by") == b.id


def test_failed_dependency_cancels_dependents_transitively(podium, workers):
    workers.start("s1", backend="shell")
    a = podium.add_task("echo failing >&2; exit 1")
    ok = podium.add_task("echo fine")
    b = podium.add_task("echo B", depends_on=[a.id])
    c = podium.add_task("echo C", depends_on=[b.id])
    d = podium.add_task("echo D", depends_on=[c.id, ok.id])
    e = podium.add_task("echo E", depends_on=[ok.id])
    assert finished(podium, a.id).state is TaskState.FAILED
    tb, tc, td = (finished(podium, t.id) for t in (b, c, d))
    assert tb.state is TaskState.CANCELLED and tb.error == f"dependency {a.id} failed"
    assert tc.state is TaskState.CANCELLED and tc.error == f"dependency {b.id} cancelled"
    assert td.state is TaskState.CANCELLED and td.error == f"dependency {c.id} cancelled"
    for t in (tb, tc, td):
        assert t.attempts == 0 and t.agent_id is None and t.output is None
    assert finished(podium, e.id).state is TaskState.COMPLETED
    # A task added later on a failed dependency is cancelled at once.
    late = podium.add_task("echo late", depends_on=[a.id])
    assert late.state is TaskState.CANCELLED and late.error == f"dependency {a.id} failed"


# -- stopping runs: timeout and cancel -------------------------------------------------------

def test_timeout_kills_the_whole_process_group(podium, workers, tmp_path):
    workers.start("s1", backend="shell")
    prompt = (f"echo $$ > {tmp_path}/sh.pid; sleep 60 & echo $! > {tmp_path}/bg.pid; "
              f"sleep 60; echo never")
    t = podium.add_task(prompt, timeout_s=1)
    done = finished(podium, t.id, timeout=20)
    sh_pid = read_pid(tmp_path / "sh.pid")
    bg_pid = read_pid(tmp_path / "bg.pid")
    assert done.state is TaskState.FAILED
    assert done.error == "timed out after 1s"
    assert b"never" not in (done.output or b"")
    assert 0.9 <= done.duration_ms / 1000 < 10, done.duration_ms
    assert not alive(sh_pid) and not alive(bg_pid)
    assert group_members(sh_pid) == []
    assert done.attempts == 1  # a timeout is a failure, not retried unless asked
    # The worker is free again.
    assert finished(podium, podium.add_task("echo next").id).output == b"next\n"


def test_cancel_running_task_kills_it(podium, workers, store, tmp_path):
    workers.start("s1", backend="shell")
    t = podium.add_task(f"echo $$ > {tmp_path}/sh.pid; echo started; sleep 60 & sleep 60")
    wait_state(podium, t.id, TaskState.RUNNING)
    sh_pid = read_pid(tmp_path / "sh.pid")
    assert group_members(sh_pid), "the task's processes should be running"
    started = time.monotonic()
    cancelled = podium.cancel(t.id, "changed my mind")
    assert cancelled.state is TaskState.CANCELLED
    # The worker notices, kills the group and records what the run produced.
    wait_for(lambda: not group_members(sh_pid), 10, what="the task's process group to die")
    assert time.monotonic() - started < 5
    wait_for(lambda: podium.agent("s1").current_task is None and
             podium.task(t.id).lease_expires is None, 10, what="the worker to let go")
    final = podium.task(t.id)
    assert final.state is TaskState.CANCELLED
    assert final.error == "changed my mind"
    assert final.output == b"started\n"
    assert [e.kind for e in all_events(store, t.id)].count("task.completed") == 0
    ev = [e for e in all_events(store, t.id) if e.kind == "task.cancelled"]
    assert len(ev) == 1 and ev[0].data["was"] == "running"
    # The worker goes on to the next task.
    assert finished(podium, podium.add_task("echo after").id).output == b"after\n"


def test_cancel_queued_task_is_never_run(podium, workers, store, tmp_path):
    t = podium.add_task(f"touch {tmp_path}/ran")
    dep = podium.add_task("echo dependent", depends_on=[t.id])
    c = podium.cancel(t.id)
    assert c.state is TaskState.CANCELLED and c.error == "cancelled by user"
    assert podium.task(dep.id).state is TaskState.CANCELLED
    workers.start("s1", backend="shell")
    assert finished(podium, podium.add_task("echo later").id).state is TaskState.COMPLETED
    final = podium.task(t.id)
    assert final.state is TaskState.CANCELLED and final.attempts == 0 and final.agent_id is None
    assert not (tmp_path / "ran").exists()
    assert "task.claimed" not in kinds(store, t.id)


# -- retries ---------------------------------------------------------------------------------

def test_retry_on_failure_requeues_up_to_max_attempts(podium, workers, store, tmp_path):
    workers.start("s1", backend="shell")
    counter = tmp_path / "count"
    t = podium.add_task(f"echo x >> {counter}; echo nope >&2; exit 2", retry=True, max_attempts=3)
    done = finished(podium, t.id)
    assert done.state is TaskState.FAILED
    assert done.attempts == 3
    assert counter.read_text() == "x\n" * 3
    assert done.exit_code == 2 and "exit code 2" in done.error
    ev = all_events(store, t.id)
    assert [e.kind for e in ev].count("task.claimed") == 3
    requeued = [e for e in ev if e.kind == "task.requeued"]
    assert [e.data["attempt"] for e in requeued] == [1, 2]
    assert [e.kind for e in ev].count("task.failed") == 1


def test_retry_stops_at_first_success(podium, workers, tmp_path):
    workers.start("s1", backend="shell")
    f = tmp_path / "n"
    prompt = (f"n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}; "
              f"echo try $n; [ $n -ge 2 ]")
    t = podium.add_task(prompt, retry=True, max_attempts=5)
    done = finished(podium, t.id)
    assert done.state is TaskState.COMPLETED
    assert done.attempts == 2
    assert done.output == b"try 2\n"
    assert done.error is None
    # Without --retry a failure is final.
    once = podium.add_task("exit 1", max_attempts=5)
    d2 = finished(podium, once.id)
    assert d2.state is TaskState.FAILED and d2.attempts == 1


# -- broadcast -------------------------------------------------------------------------------

def test_broadcast_gives_each_live_agent_its_own_task(podium, workers):
    for name in ("b1", "b2", "b3", "gone"):
        workers.start(name, backend="shell")
    workers.stop("gone")
    tasks = podium.broadcast('echo "I am $PODIUM_AGENT_ID"')
    assert len(tasks) == 3
    assert {t.target_agent for t in tasks} == {"b1", "b2", "b3"}
    assert len({t.broadcast_id for t in tasks}) == 1 and tasks[0].broadcast_id
    for t in tasks:
        done = finished(podium, t.id)
        assert done.state is TaskState.COMPLETED
        assert done.agent_id == t.target_agent
        assert done.output == f"I am {t.target_agent}\n".encode()


# -- output ----------------------------------------------------------------------------------

def test_output_is_streamed_while_the_task_runs(podium, workers, store, tmp_path):
    workers.start("s1", backend="shell")
    go = tmp_path / "go"
    t = podium.add_task(f"echo first; while [ ! -f {go} ]; do sleep 0.05; done; echo second")

    def first_chunk():
        chunks = [e.data["chunk"] for e in all_events(store, t.id) if e.kind == "task.output"]
        return "first" in "".join(chunks)
    wait_for(first_chunk, 10, what="a task.output event with the first line")
    assert podium.task(t.id).state is TaskState.RUNNING  # streamed before completion
    go.touch()
    done = finished(podium, t.id)
    assert done.output == b"first\nsecond\n"
    chunks = "".join(e.data["chunk"] for e in all_events(store, t.id) if e.kind == "task.output")
    assert chunks == "first\nsecond\n"


def test_ten_megabytes_of_output_kept_whole(podium, workers, cli, tmp_path):
    workers.start("s1", backend="shell")
    big = tmp_path / "big.bin"
    size = 10 * 1024 * 1024
    t = podium.add_task(f"head -c {size} /dev/urandom > {big} && cat {big}")
    done = finished(podium, t.id, timeout=60)
    assert done.state is TaskState.COMPLETED, done.error
    expected = big.read_bytes()
    assert len(expected) == size
    assert len(done.output) == size
    assert not done.output_truncated
    assert hashlib.sha256(done.output).hexdigest() == hashlib.sha256(expected).hexdigest()
    raw = cli("result", t.id, "--raw")
    assert raw.returncode == 0, raw.stderr
    assert hashlib.sha256(raw.stdout).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_non_utf8_output_comes_back_exactly(podium, workers, cli):
    workers.start("s1", backend="shell")
    t = podium.add_task(r"printf 'ok\377\376\000mid\200\r\n\351t\351'; printf '\377err' >&2")
    done = finished(podium, t.id)
    want = b"ok\xff\xfe\x00mid\x80\r\n\xe9t\xe9"
    assert done.state is TaskState.COMPLETED, done.error
    assert done.output == want
    assert done.stderr == b"\xfferr"

    res = cli("result", t.id)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["output_encoding"] == "base64"
    assert base64.b64decode(r["output"]) == want
    assert r["stderr_encoding"] == "base64"
    assert base64.b64decode(r["stderr"]) == b"\xfferr"
    raw = cli("result", t.id, "--raw")
    assert raw.returncode == 0 and raw.stdout == want


# -- signals and liveness --------------------------------------------------------------------

def test_sigterm_requeues_running_task_without_counting_the_attempt(podium, workers, store,
                                                                    tmp_path):
    workers.start("s1", backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    go = tmp_path / "go"
    t = podium.add_task(f"echo $$ > {tmp_path}/sh.pid; while [ ! -f {go} ]; do sleep 0.05; done; "
                        f"echo finished by $PODIUM_AGENT_ID")
    wait_state(podium, t.id, TaskState.RUNNING)
    sh_pid = read_pid(tmp_path / "sh.pid")
    assert podium.task(t.id).attempts == 1

    assert workers.stop("s1", signal.SIGTERM) == 0
    after = podium.task(t.id)
    assert after.state is TaskState.QUEUED
    assert after.attempts == 0  # handed back, not counted
    assert after.agent_id is None
    agent = podium.agent("s1")
    assert agent.state is AgentState.STOPPED and agent.current_task is None
    assert not group_members(sh_pid), "the task's processes must be killed"
    requeued = [e for e in all_events(store, t.id) if e.kind == "task.requeued"]
    assert len(requeued) == 1 and requeued[0].data["reason"] == "worker stopping"
    assert "handed back" in workers.log("s1")

    go.touch()
    workers.start("s2", backend="shell")
    done = finished(podium, t.id)
    assert done.state is TaskState.COMPLETED
    assert done.attempts == 1 and done.agent_id == "s2"
    assert done.output == b"finished by s2\n"


def test_sigint_drains_running_task_then_stops(podium, workers, store, tmp_path):
    workers.start("s1", backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    go = tmp_path / "go"
    t = podium.add_task(f"while [ ! -f {go} ]; do sleep 0.05; done; echo drained")
    wait_state(podium, t.id, TaskState.RUNNING)
    waiting = podium.add_task("echo should stay queued")
    workers.procs["s1"].send_signal(signal.SIGINT)
    # Nothing in the store changes when the signal lands; give it a moment to be handled
    # before letting the task finish.
    time.sleep(0.3)
    assert workers.procs["s1"].poll() is None, "SIGINT must not stop the worker at once"
    assert podium.task(t.id).state is TaskState.RUNNING
    go.touch()
    assert workers.procs["s1"].wait(timeout=20) == 0
    done = podium.task(t.id)
    assert done.state is TaskState.COMPLETED
    assert done.output == b"drained\n" and done.attempts == 1
    assert podium.agent("s1").state is AgentState.STOPPED
    # A draining worker takes no new task.
    assert podium.task(waiting.id).state is TaskState.QUEUED
    assert podium.task(waiting.id).attempts == 0
    ks = [e.kind for e in all_events(store) if e.agent_id == "s1"]
    assert ks[-1] == "agent.stopped"
    assert ks.index("task.completed") < ks.index("agent.stopped")


def test_silent_agent_is_shown_dead_and_its_task_requeued(podium, workers, store, cli, tmp_path):
    go = tmp_path / "go"
    proc = workers.start("frozen", backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    t = podium.add_task(f"while [ ! -f {go} ]; do sleep 0.05; done; echo by $PODIUM_AGENT_ID")
    wait_state(podium, t.id, TaskState.RUNNING)
    os.kill(proc.pid, signal.SIGSTOP)  # the worker stops heartbeating; its task keeps running
    try:
        dead = wait_for(
            lambda: [a for a in podium.agents() if a.id == "frozen" and a.state is AgentState.DEAD],
            LEASE * 4, what="the silent agent to be marked dead")
        assert dead
        listed = cli("agents", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {a["id"]: a["state"] for a in json.loads(listed.stdout)}["frozen"] == "dead"
        requeued = podium.task(t.id)
        assert requeued.state is TaskState.QUEUED
        assert requeued.attempts == 1
        assert "lease expired" in requeued.error

        workers.start("rescuer", backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
        wait_for(lambda: podium.task(t.id).agent_id == "rescuer", 10,
                 what="the rescuer to claim the task")
        go.touch()
        done = finished(podium, t.id)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert done.state is TaskState.COMPLETED
    assert done.agent_id == "rescuer" and done.attempts == 2
    assert done.output == b"by rescuer\n"
    # The thawed worker's late result must not overwrite the real one.
    wait_for(lambda: "task.stale_result" in kinds(store, t.id), 10,
             what="the thawed worker to report its stale result")
    assert podium.agent("frozen").state.live
    final = podium.task(t.id)
    assert final.state is TaskState.COMPLETED and final.agent_id == "rescuer"
    assert final.output == b"by rescuer\n"
    assert kinds(store, t.id).count("task.completed") == 1
    no_errors_in_logs(workers, "frozen", "rescuer")


def test_inline_backend_runs_many_tasks_back_to_back_and_still_stops(podium, workers, store):
    # Regression: the echo backend runs on the worker's main thread and pokes the worker's own
    # wake-up socket after each task; with more tasks queued than that socket's queue holds
    # (net.unix.max_dgram_qlen, 10 by default) a blocking poke hung the worker for good.
    ids = [t.id for t in podium.add_tasks([podium.spec(f"n{i}") for i in range(100)])]
    workers.start("e1", backend="echo")
    wait_for(lambda: store.counts()["completed"] == 100, 30, interval=0.05,
             what="100 tasks to complete")
    assert [podium.task(i).output for i in ids[:3]] == [b"n0", b"n1", b"n2"]
    started = time.monotonic()
    assert workers.stop("e1", signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 5
    assert podium.agent("e1").state is AgentState.STOPPED
    assert podium.agent("e1").tasks_done == 100


def test_shared_context_change_reaches_a_running_worker(podium, workers):
    """Workers reuse the shared context they hold only while it is unchanged."""
    workers.start("ctx", backend="echo")
    podium.set_context("style", "version one")
    first = podium.wait(podium.add_task("task A").id, timeout_s=20)
    assert b"version one" in first.output
    podium.set_context("style", "version two")
    second = podium.wait(podium.add_task("task B").id, timeout_s=20)
    assert b"version two" in second.output and b"version one" not in second.output
    podium.set_context("extra", "a new key")
    third = podium.wait(podium.add_task("task C").id, timeout_s=20)
    assert b"a new key" in third.output and b"version two" in third.output
