"""Faults, in the issue's words: "kill -9 a worker mid-task and show the task requeued and
completed exactly once; 8 workers racing for 500 tasks — every task done exactly once, no
'database is locked' surfaced; prompts with quotes, `$`, backticks, newlines, NUL-free
binary-ish unicode and a 5 MB prompt round-trip exactly through `task add -` → `result`".

Real worker processes, a real SQLite store and the real CLI; exactly-once is read from the
event log (every state change is written with its event in one transaction).
"""

from __future__ import annotations

import collections
import json
import os
import random
import time

import pytest

from helpers import all_events, wait_for
from podium import orphans
from podium.models import AgentState, TaskState

LEASE = 2.0
HEARTBEAT = 0.3


@pytest.fixture
def store(podium):
    """The SQLite store the workers use (not conftest's store-kind matrix)."""
    return podium.store






def assert_clean_logs(workers, names) -> None:
    for name in names:
        log = workers.log(name)
        assert "database is locked" not in log, f"{name}:\n{log}"
        assert "Traceback" not in log, f"{name}:\n{log}"
        assert "error" not in log.lower(), f"{name}:\n{log}"


# -- kill -9 ---------------------------------------------------------------------------------

def test_kill9_mid_task_requeues_and_completes_exactly_once(podium, workers, store):
    for name in ("w1", "w2"):
        workers.start(name, backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    t = podium.add_task('sleep 2; echo "done by $PODIUM_AGENT_ID"')
    running = wait_for(lambda: (x := podium.task(t.id)).started_at and x,
                       10, what="the task to start")
    victim = running.agent_id
    survivor = "w2" if victim == "w1" else "w1"
    workers.kill9(victim)

    done = podium.wait(t.id, 30)
    assert done.state is TaskState.COMPLETED, (done.state, done.error)
    assert done.agent_id == survivor
    assert done.attempts == 2
    assert done.output == f"done by {survivor}\n".encode()

    ev = all_events(store, t.id)
    ks = [e.kind for e in ev]
    assert ks.count("task.completed") == 1, ks
    assert ks.count("task.claimed") == 2, ks
    claims = [(e.agent_id, e.data["attempt"]) for e in ev if e.kind == "task.claimed"]
    assert claims == [(victim, 1), (survivor, 2)]
    requeued = [e for e in ev if e.kind == "task.requeued"]
    assert len(requeued) == 1 and "lease expired" in requeued[0].data["reason"]
    assert victim in requeued[0].data["reason"]
    assert ks.index("task.requeued") < ks.index("task.completed")
    assert "task.failed" not in ks and "task.stale_result" not in ks
    # The killed agent is shown dead; the survivor is fine.
    states = {a.id: a.state for a in podium.agents()}
    assert states[victim] is AgentState.DEAD
    assert states[survivor].live
    assert_clean_logs(workers, [survivor])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _orphan_scenario(podium, workers, tmp_path):
    """A task with a side effect after 4 s; its worker is killed -9 while it runs."""
    mark = tmp_path / "side-effect"
    t = podium.add_task(f'sleep 4; echo "$PODIUM_AGENT_ID" >> "{mark}"; echo done')
    running = wait_for(lambda: (x := podium.task(t.id)).started_at and x,
                       10, what="the task to start")
    orphans_before = wait_for(
        lambda: orphans.find(podium.store.url, running.agent_id, {t.id}), 10,
        what="the task's program to show up")
    workers.kill9(running.agent_id)
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _alive(int(p))
            and os.getpgid(int(p)) in orphans_before]
    assert pids, "the killed worker's program should still be running (its own session)"
    return t, running.agent_id, mark, pids


def test_program_left_by_a_killed_worker_is_killed_when_its_task_is_taken(
        podium, workers, store, tmp_path):
    workers.start("w1", backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    t, _, mark, pids = _orphan_scenario(podium, workers, tmp_path)
    survivor = "w2"
    workers.start(survivor, backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    done = podium.wait(t.id, 30)
    assert done.state is TaskState.COMPLETED and done.agent_id == survivor
    # Whoever took the task from the dead agent (the survivor's heartbeat or this test's wait,
    # both on this host) killed the program it left running.
    assert not any(_alive(p) for p in pids)
    time.sleep(1.0)  # past the moment the orphan would have written
    assert mark.read_text() == f"{survivor}\n"  # the side effect happened once


def test_program_left_by_a_killed_worker_is_killed_when_it_restarts(
        podium, workers, store, tmp_path):
    workers.start("w1", backend="shell", lease=30.0, heartbeat=HEARTBEAT)
    t, _, mark, pids = _orphan_scenario(podium, workers, tmp_path)
    # The same agent started again (a long lease: only re-registering can free the task).
    workers.start("w1", backend="shell", lease=30.0, heartbeat=HEARTBEAT)
    wait_for(lambda: not any(_alive(p) for p in pids), 10, what="the orphan to be killed")
    done = podium.wait(t.id, 30)
    assert done.state is TaskState.COMPLETED and done.attempts == 2
    time.sleep(1.0)
    assert mark.read_text() == "w1\n"


def test_orphan_lookup_matches_store_agent_and_task_only(tmp_path):
    import subprocess

    def start(store_url, agent, task):
        env = dict(os.environ, PODIUM_STORE=store_url, PODIUM_AGENT_ID=agent,
                   PODIUM_TASK_ID=task)
        return subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)

    url = f"sqlite://{tmp_path}/p.db"
    others = [start(f"sqlite://{tmp_path}/other.db", "w1", "t-1"), start(url, "w2", "t-1"),
              start(url, "w1", "t-2")]
    target = start(url, "w1", "t-1")
    try:
        # (a child shows its own environment only once it has exec'd)
        wait_for(lambda: orphans.find(url, "w1", {"t-1"}) == {target.pid}, 10,
                 what="the matching process to be found")
        wait_for(lambda: orphans.find(url, "w1") == {target.pid, others[2].pid}, 10,
                 what="every process of that agent to be found")
        assert orphans.kill(url, "w1", {"t-1"}) == 1
        assert target.wait(timeout=10) == -9
        assert all(p.poll() is None for p in others)
        assert orphans.find(url, "w1") == {others[2].pid}  # any task of that agent
    finally:
        for p in [*others, target]:
            p.kill()
            p.wait()


def test_kill9_on_last_attempt_fails_the_task(podium, workers, store):
    workers.start("w1", backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    workers.start("w2", backend="shell", lease=LEASE, heartbeat=HEARTBEAT)
    t = podium.add_task("sleep 30", max_attempts=1)
    running = wait_for(lambda: (x := podium.task(t.id)).started_at and x,
                       10, what="the task to start")
    workers.kill9(running.agent_id)
    done = podium.wait(t.id, 30)
    assert done.state is TaskState.FAILED
    assert "lease expired" in done.error and "attempt 1 of 1" in done.error
    ks = [e.kind for e in all_events(store, t.id)]
    assert ks.count("task.claimed") == 1 and ks.count("task.failed") == 1
    assert "task.completed" not in ks


# -- many workers, many tasks ----------------------------------------------------------------

def test_eight_workers_race_for_500_tasks_each_done_exactly_once(podium, workers, store):
    names = [f"r{i}" for i in range(1, 9)]
    procs = {n: workers.start(n, backend="echo", wait=False) for n in names}
    for n, p in procs.items():
        workers.wait_registered(n, p)

    prompts = {}
    # Added in batches while the workers are already pulling, so claims race with inserts.
    for batch in range(10):
        specs = [podium.spec(f"task {batch}-{i} ✓") for i in range(50)]
        for t in podium.add_tasks(specs):
            prompts[t.id] = t.prompt
    assert len(prompts) == 500

    def all_done():
        c = store.counts()
        return c["completed"] == 500 or c["failed"] or c["cancelled"]
    wait_for(all_done, 90, interval=0.1, what="500 tasks to complete")
    counts = store.counts()
    assert counts["completed"] == 500, counts

    tasks = {t.id: t for t in podium.tasks(limit=1000, with_output=True)}
    assert set(tasks) == set(prompts)
    for tid, t in tasks.items():
        assert t.state is TaskState.COMPLETED
        assert t.attempts == 1, (tid, t.attempts)
        assert t.output == prompts[tid].encode("utf-8")
        assert t.agent_id in names

    per_task = collections.defaultdict(collections.Counter)
    for e in all_events(store):
        if e.task_id is not None:
            per_task[e.task_id][e.kind] += 1
    for tid in prompts:
        c = per_task[tid]
        assert c["task.completed"] == 1, (tid, c)
        assert c["task.claimed"] == 1, (tid, c)
        assert c["task.requeued"] == 0 and c["task.stale_result"] == 0, (tid, c)

    by_agent = collections.Counter(t.agent_id for t in tasks.values())
    assert sum(by_agent.values()) == 500
    assert len(by_agent) >= 2, by_agent  # they really raced
    done_counts = {a.id: a.tasks_done for a in podium.agents() if a.id in names}
    assert done_counts == {n: by_agent.get(n, 0) for n in names}
    for n in names:
        assert workers.stop(n) == 0
    assert_clean_logs(workers, names)


# -- prompts round-trip through the CLI ------------------------------------------------------

def _binaryish_unicode() -> str:
    """Every code point of the BMP (no NUL, no surrogates) plus a spread of astral ones."""
    chars = [chr(i) for i in range(1, 0x10000) if not 0xD800 <= i <= 0xDFFF]
    rng = random.Random(1234)
    chars += [chr(rng.randrange(0x10000, 0x110000)) for _ in range(2000)]
    rng.shuffle(chars)
    return "".join(chars)


ROUND_TRIP = {
    "quotes": """single ' double " both '"' and "'" unbalanced ' " ''' \"\"\" """,
    "dollar": "$HOME ${PATH} $(whoami) $((1+2)) $0 $$ $@ $* $? $! \\$escaped $ trailing$",
    "backticks": "`whoami` ``double`` `echo $(id)` ```fence```",
    "newlines": "line1\nline2\r\nline3\rline4\n\n\nblank-lines-then-tab\tend\n",
    "leading_trailing_space": "   padded \t \n  ",
    "dash": "-n -e --help -",
    "backslashes": "\\ \\\\ \\n \\t \\x00 \\u0000 C:\\path\\to\\file %s %d {} {0} %(x)s",
    "shell_meta": "a; b && c || d | e > f < g & h * ? [x] ~ # ! { } ( )",
    "json_like": '{"output": "fake", "status": "failed"}\n[1, 2, null]',
    "controls": "".join(chr(i) for i in range(1, 32)) + "\x7f" + "".join(
        chr(i) for i in range(0x80, 0xA0)),
    "unicode": "héllo wörld — 你好 — مرحبا — שלום — 🎉👩‍👩‍👧‍👦🏳️‍🌈 — e\u0301 — \u200b\u200d"
               "\ufeff\u2028\u2029\ufffd\ufffe\uffff \U0010ffff \U0001f600",
    "binaryish": _binaryish_unicode(),
}


def _add_via_cli(cli, prompt: str) -> str:
    res = cli("task", "add", "-", input=prompt.encode("utf-8"))
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode().strip()


def _result_via_cli(cli, task_id: str) -> dict:
    res = cli("result", task_id)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return json.loads(res.stdout.decode("utf-8"))


def test_prompts_round_trip_exactly_through_cli(podium, workers, cli):
    workers.start("echo", backend="echo")
    ids = {name: _add_via_cli(cli, prompt) for name, prompt in ROUND_TRIP.items()}
    for name, tid in ids.items():
        assert podium.wait(tid, 30).state is TaskState.COMPLETED, name
    for name, tid in ids.items():
        prompt = ROUND_TRIP[name]
        assert podium.task(tid).prompt == prompt, name
        r = _result_via_cli(cli, tid)
        assert r["status"] == "completed", name
        assert "output_encoding" not in r, name
        assert r["output"] == prompt, name
    # --raw gives the very bytes, and `task show --json` the prompt as stored.
    for name in ("binaryish", "newlines", "controls"):
        raw = cli("result", ids[name], "--raw")
        assert raw.returncode == 0 and raw.stdout == ROUND_TRIP[name].encode("utf-8"), name
        shown = cli("task", "show", ids[name], "--json")
        assert json.loads(shown.stdout.decode("utf-8"))["prompt"] == ROUND_TRIP[name], name


def test_five_megabyte_prompt_round_trips_exactly(podium, workers, cli):
    workers.start("echo", backend="echo")
    rng = random.Random(5)
    alphabet = "abc $`'\"\\\n\t€😀你" + "".join(chr(i) for i in range(0x100, 0x180))
    prompt = "".join(rng.choice(alphabet) for _ in range(2_000_000))
    while len(prompt.encode("utf-8")) < 5 * 1024 * 1024:
        prompt += prompt[: 500_000]
    prompt = "BEGIN\n" + prompt + "\nEND"
    size = len(prompt.encode("utf-8"))
    assert size >= 5 * 1024 * 1024
    tid = _add_via_cli(cli, prompt)
    done = podium.wait(tid, 60)
    assert done.state is TaskState.COMPLETED, done.error
    assert not done.output_truncated
    r = _result_via_cli(cli, tid)
    assert r["output"] == prompt
    raw = cli("result", tid, "--raw")
    assert raw.returncode == 0 and len(raw.stdout) == size
    assert raw.stdout == prompt.encode("utf-8")


def test_prompts_that_cannot_round_trip_are_refused_without_a_trace(podium, cli):
    bad_utf8 = cli("task", "add", "-", input=b"ok \xff\xfe not utf-8")
    assert bad_utf8.returncode == 1
    assert b"not valid UTF-8" in bad_utf8.stderr
    empty = cli("task", "add", "-", input=b" \n\t ")
    assert empty.returncode == 1 and b"empty" in empty.stderr
    assert podium.store.counts()["queued"] == 0
    assert podium.tasks() == []
