"""``podium logs``, ``task retry``, task id prefixes and ``agent prune``, through the real
``podium`` command against a real store and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from helpers import error_line, wait_for
from podium.service import Podium

PODIUM = [sys.executable, "-m", "podium"]


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert b"Traceback" not in p.stderr
    return p.stdout.decode("utf-8")


def add(cli, *args: str) -> str:
    return ok(cli("task", "add", *args)).strip()


def unique_prefix(tid: str, ids: list[str]) -> str:
    """The shortest prefix of ``tid`` that no other id of ``ids`` starts with."""
    return next(tid[:n] for n in range(3, len(tid) + 1)
                if not any(o != tid and o.startswith(tid[:n]) for o in ids))


@pytest.fixture
def team(cli):
    """For tests that run ``podium up``: whatever is still running is stopped afterwards."""
    yield
    cli("down", "--timeout", "5")


# -- podium logs ------------------------------------------------------------------------

def test_an_agents_log_shows_each_task_start_and_end(cli, team, store_url):
    ok(cli("up", "1"))
    tid = add(cli, "echo one; echo two\necho three")
    bad = add(cli, "echo oops >&2; exit 4")
    ok(cli("task", "wait", tid, "--timeout", "30"))
    cli("task", "wait", bad, "--timeout", "30")
    text = ok(cli("logs", "agent-1"))
    assert "[agent-1] registered" in text
    assert f"[agent-1] ▶ {tid} echo one; echo two ⏎ echo three\n" in text
    assert f"[agent-1] ■ {tid} completed in " in text
    assert "s, exit 0, 3 lines of output\n" in text
    assert f"[agent-1] ■ {bad} failed in " in text and ", exit 4, 0 lines of output: " in text
    # The last lines only; the log is the user's alone (it holds prompts).
    last = ok(cli("logs", "agent-1", "-n", "1"))
    assert last.count("\n") == 1 and last.startswith(f"[agent-1] ■ {bad} failed")
    assert ok(cli("logs", "agent-1", "-n", "0")) == ""
    p = Podium.open(store_url)
    try:
        assert stat.S_IMODE(p.agent_log("agent-1").stat().st_mode) == 0o600
    finally:
        p.close()

    # Followed, the log runs on until the agent stops, and ends with its last lines.
    follow = subprocess.Popen([*PODIUM, "--store", store_url, "logs", "agent-1", "-f"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    late = add(cli, "echo late")
    ok(cli("task", "wait", late, "--timeout", "30"))
    time.sleep(0.5)
    assert follow.poll() is None
    ok(cli("down", "--timeout", "10"))
    stdout, stderr = follow.communicate(timeout=30)
    assert follow.returncode == 0, stderr
    lines = stdout.decode().splitlines()  # (the last 50, then what came: one way or the other)
    assert lines[0] == "[agent-1] registered" or lines[0].startswith("[agent-1] registered ")
    assert f"[agent-1] ▶ {late} echo late" in lines and lines[-1] == "[agent-1] stopped"

    # A stopped agent's log followed: what is there, and the end at once.
    began = time.monotonic()
    assert ok(cli("logs", "agent-1", "-f", timeout=30)).endswith("[agent-1] stopped\n")
    assert time.monotonic() - began < 10


def test_logs_of_an_agent_without_a_log_file(cli, workers):
    workers.start("fg")  # (run in the foreground by hand: its output is its terminal's)
    line = error_line(cli("logs", "fg"))
    assert line.startswith("podium: error: agent fg has no log at "), line
    assert "only agents started in the background by 'podium up' log there" in line
    assert error_line(cli("logs", "fg", "-n", "-1")) == \
        "podium: error: bad lines -1: must be an integer, at least 0 and at most 100000"


def test_following_a_running_tasks_output_ends_with_the_task(cli, workers, store_url, tmp_path):
    workers.start("sh", backend="shell")
    gate = tmp_path / "gate"
    tid = add(cli, f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second")
    prefix = tid[:12]
    # Not followed: what the run streamed so far.
    wait_for(lambda: ok(cli("logs", prefix)) == "first\n", what="the first line streamed")
    follow = subprocess.Popen([*PODIUM, "--store", store_url, "logs", prefix, "-f"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert follow.stdout is not None
    assert follow.stdout.readline() == b"first\n"  # (replayed: it follows the run from here)
    time.sleep(0.3)
    assert follow.poll() is None  # still following: the task runs
    gate.touch()
    stdout, stderr = follow.communicate(timeout=30)
    assert follow.returncode == 0, stderr
    assert stdout == b"second\n"
    assert stderr.decode() == f"podium: {tid} completed\n"
    # Finished: the stored output; -n: its last lines.
    assert ok(cli("logs", tid)) == "first\nsecond\n"
    assert ok(cli("logs", tid, "-n", "1", "-f")) == "second\n"


def test_logs_of_a_queued_task_followed_until_it_is_cancelled(cli, store_url):
    ok(cli("init"))
    tid = add(cli, "--role", "nobody", "never runs")
    p = cli("logs", tid)
    assert p.returncode == 0 and p.stdout == b""
    assert p.stderr.decode() == f"podium: {tid} is queued: no output yet\n"
    follow = subprocess.Popen([*PODIUM, "--store", store_url, "logs", tid, "-f"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    assert follow.poll() is None
    ok(cli("task", "cancel", tid, "--reason", "not today"))
    stdout, stderr = follow.communicate(timeout=30)
    assert follow.returncode == 0 and stdout == b""
    assert stderr.decode() == f"podium: {tid} cancelled: not today\n"


# -- task retry -------------------------------------------------------------------------

def test_retrying_a_failed_step_resumes_the_pipeline(cli, workers, tmp_path, store_url):
    workers.start("sh", backend="shell")
    flag = tmp_path / "flag"
    first = add(cli, f"test -e {flag} && echo built")
    second = add(cli, "--depends-on", first, "echo tested")
    third = add(cli, "--depends-on", second, "echo shipped")
    assert cli("task", "wait", first, "--timeout", "30").returncode == 3  # failed
    for t in (second, third):
        assert json.loads(ok(cli("task", "show", t, "--json")))["state"] == "cancelled"
    # Retrying a finished step is refused; the failed one is queued again, afresh.
    assert error_line(cli("task", "retry", third)) == (
        f"podium: error: task {third} depends on {second}, which is cancelled: retry that one "
        "first")
    flag.touch()
    ids = [t["id"] for t in json.loads(ok(cli("task", "list", "--json")))]
    assert ok(cli("task", "retry", unique_prefix(first, ids))) == f"{first} queued\n"
    assert cli("task", "wait", third, "--timeout", "30").returncode == 0
    assert ok(cli("logs", third)) == "shipped\n"
    shown = json.loads(ok(cli("task", "show", first, "--json")))
    assert shown["state"] == "completed" and shown["attempts"] == 1
    assert shown["result"]["error"] is None and shown["result"]["output"] == "built\n"
    assert error_line(cli("task", "retry", first)) == (
        f"podium: error: task {first} is completed: only a failed or cancelled task can be "
        "retried")
    p = Podium.open(store_url)
    try:
        kinds = [e.kind for e in p.events(0, 1000, first)]
    finally:
        p.close()
    assert [k for k in kinds[kinds.index("task.failed"):] if k != "task.output"] == [
        "task.failed", "task.retried", "task.claimed", "task.completed"]


def test_retrying_a_dependent_before_its_failed_dependency_is_refused(cli, workers):
    workers.start("sh", backend="shell")
    first = add(cli, "exit 1")
    second = add(cli, "--depends-on", first, "echo two")
    cli("task", "wait", first, "--timeout", "30")
    assert error_line(cli("task", "retry", second)) == (
        f"podium: error: task {second} depends on {first}, which is failed: retry that one "
        "first")


# -- id prefixes ------------------------------------------------------------------------

def test_ambiguous_and_unknown_task_ids_give_one_clear_line(cli):
    ok(cli("init"))
    ids = [add(cli, "--role", "nobody", f"task {i}") for i in range(7)]
    shown = ", ".join(sorted(ids)[:5])
    ambiguous = f"podium: error: ambiguous task id 't-': {shown}, ... (give more of it)"
    for args in (["task", "show", "t-"], ["task", "wait", "t-", "--timeout", "1"],
                 ["task", "cancel", "t-"], ["task", "result", "t-"], ["result", "t-"],
                 ["task", "retry", "t-"], ["logs", "t-"], ["watch", "--task", "t-"],
                 ["task", "add", "--depends-on", "t-", "x"]):
        assert error_line(cli(*args, timeout=30)) == ambiguous, args
    for args in (["task", "show", "t-zzz"], ["task", "cancel", "t-zzz"],
                 ["task", "retry", "t-zzz"], ["watch", "--task", "t-zzz"]):
        assert error_line(cli(*args, timeout=30)) == "podium: error: unknown task 't-zzz'", args
    assert error_line(cli("task", "add", "-d", "t-zzz", "x")) == \
        "podium: error: unknown task 't-zzz' (in depends_on)"
    for name in ("t-zzz", "t-0000000000000z"):  # (a prefix, a whole id)
        assert error_line(cli("logs", name)) == (f"podium: error: no agent or task {name!r} "
                                                 "('podium agents' and 'podium task list' "
                                                 "list them)")
    # A unique prefix works wherever an id does.
    tid = ids[3]
    prefix = unique_prefix(tid, ids)
    assert json.loads(ok(cli("task", "show", prefix, "--json")))["id"] == tid
    assert json.loads(ok(cli("task", "result", prefix)))["task_id"] == tid
    dep = add(cli, "--depends-on", prefix, "after it")
    assert json.loads(ok(cli("task", "show", dep, "--json")))["depends_on"] == [tid]
    assert ok(cli("task", "cancel", prefix)) == f"{tid} cancelled\n"
    assert cli("task", "wait", prefix, "--timeout", "5").returncode == 4
    assert ok(cli("task", "retry", prefix)) == f"{tid} queued\n"


# -- agent prune ------------------------------------------------------------------------

def test_agent_prune_removes_only_stopped_and_dead_agents(cli, workers):
    workers.start("live")
    workers.start("gone")
    workers.stop("gone")
    workers.start("killed", lease=0.5, heartbeat=0.1)
    workers.kill9("killed")
    hung = workers.start("hung", lease=0.5, heartbeat=0.1)
    ok(cli("send", "gone", "a message for the gone"))
    os.kill(hung.pid, signal.SIGSTOP)  # silent, marked dead, yet its process is still here
    try:
        time.sleep(1.0)
        states = {a["id"]: a["state"] for a in json.loads(ok(cli("agents", "--json")))}
        assert states == {"live": "idle", "gone": "stopped", "killed": "dead", "hung": "dead"}
        text = ok(cli("agent", "prune"))
        assert text == ("removed 2 agent(s): gone, killed\n"
                        f"kept hung: it is dead but its process {hung.pid} still runs here "
                        "('podium down hung' stops it)\n")
        assert {a["id"] for a in json.loads(ok(cli("agents", "--json")))} == {"live", "hung"}
        assert error_line(cli("inbox", "gone")) == "podium: error: unknown agent 'gone'"
        assert json.loads(ok(cli("agent", "prune", "--json"))) == {
            "removed": [], "kept": {"hung": f"it is dead but its process {hung.pid} still "
                                            "runs here ('podium down hung' stops it)"}}
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    # Its name is free again.
    workers.start("gone")


# -- the MCP face -----------------------------------------------------------------------

def test_mcp_retry_task_and_id_prefixes(cli, store_url, workers, tmp_path):
    import anyio
    from mcp import Client, StdioServerParameters

    workers.start("sh", backend="shell")
    flag = tmp_path / "flag"
    first = add(cli, f"test -e {flag} && echo built")
    then = add(cli, "--depends-on", first, "echo then")
    cli("task", "wait", first, "--timeout", "30")
    flag.touch()
    server = StdioServerParameters(command=sys.executable, cwd=str(tmp_path),
                                   args=["-m", "podium", "--store", store_url, "mcp", "serve"])

    async def call(client, tool, **args):
        r = await client.call_tool(tool, args)
        return r.is_error, (r.content[0].text if r.is_error else r.structured_content)

    async def main():
        async with Client(server) as client:
            error, t = await call(client, "retry_task", task_id=first[:-2])
            assert not error and t["id"] == first and t["state"] in ("queued", "running")
            error, done = await call(client, "wait_for_task", task_id=then[:-2], timeout_s=30)
            assert not error and done["status"] == "completed" and done["output"] == "then\n"
            error, text = await call(client, "retry_task", task_id=first)
            assert error and text.endswith(f"task {first} is completed: only a failed or "
                                           "cancelled task can be retried")
            error, text = await call(client, "get_task_result", task_id="t-")
            assert error and f"ambiguous task id 't-': {min(first, then)}, " in text

    anyio.run(main)
