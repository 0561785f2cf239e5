"""The traps a new user fell into in the first hour, each closed: commands that waited silently
for something that would never come, or left the team in a state nothing could explain.

The real ``podium`` command against a real store and real worker processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from helpers import error_line

PODIUM = [sys.executable, "-m", "podium"]


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert b"Traceback" not in p.stderr
    return p.stdout.decode("utf-8")


def agent_state(cli, name: str) -> str:
    return next(a for a in json.loads(ok(cli("agents", "--json"))) if a["id"] == name)["state"]


def test_reporting_busy_from_outside_a_task_is_refused_and_changes_nothing(cli, workers):
    workers.start("w1")
    assert agent_state(cli, "w1") == "idle"
    line = error_line(cli("report", "--status", "busy", env={"PODIUM_AGENT_ID": "w1"}))
    assert line.startswith("podium: error: agent w1 is not running a task: a worker is busy "
                           "only while it runs one"), line
    assert agent_state(cli, "w1") == "idle"
    assert json.loads(ok(cli("inbox", "w1", "--outbox", "--json"))) == []
    # Other words are reported as before.
    ok(cli("report", "--status", "waiting_input", env={"PODIUM_AGENT_ID": "w1"}))
    assert agent_state(cli, "w1") == "waiting_input"


def test_watching_one_task_ends_when_the_task_ends(cli, workers, store_url, tmp_path):
    workers.start("sh", backend="shell")
    gate = tmp_path / "gate"
    tid = ok(cli("task", "add", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done")).strip()
    # No --idle-timeout: only the task's end can stop it.
    watch = subprocess.Popen([*PODIUM, "--store", store_url, "watch", "--task", tid, "--from",
                              "0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    assert watch.poll() is None  # still waiting: the task runs
    gate.touch()
    stdout, stderr = watch.communicate(timeout=30)
    assert watch.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    assert {e["task_id"] for e in events} == {tid}
    assert events[0]["kind"] == "task.queued" and events[-1]["kind"] == "task.completed"

    # Watching a task that already finished, from now on: nothing more will come, so it ends.
    began = time.monotonic()
    assert ok(cli("watch", "--task", tid, timeout=30)) == ""
    assert time.monotonic() - began < 10


def test_watching_an_unknown_task_says_so_at_once(cli):
    ok(cli("init"))
    line = error_line(cli("watch", "--task", "t-nosuchtask", timeout=30))
    assert line == "podium: error: unknown task 't-nosuchtask'", line


def test_the_store_option_also_works_after_the_command(cli, store_url, tmp_path):
    ok(cli("task", "add", "echo one"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for argv in (["status", "--store", store_url, "--json"],
                 ["task", "list", "--store", store_url, "--json"],
                 ["task", "--store", store_url, "list", "--json"]):
        p = subprocess.run([*PODIUM, *argv], capture_output=True, cwd=elsewhere, timeout=60)
        text = ok(p)
        assert "echo one" in text or '"queued": 1' in text, (argv, text)
    assert not (elsewhere / ".podium").exists()


def test_stopping_an_unknown_agent_is_an_error_and_stops_nothing(cli, workers):
    workers.start("w1")
    line = error_line(cli("down", "w1x", timeout=30))
    assert line == "podium: error: unknown agent 'w1x': 'podium agents' lists them", line
    assert agent_state(cli, "w1") == "idle"
    line = error_line(cli("down", "w1", "nope", "zed", timeout=30))
    assert line == "podium: error: unknown agents 'nope', 'zed': 'podium agents' lists them"
    assert agent_state(cli, "w1") == "idle"


def test_the_store_is_found_upward_and_only_made_by_commands_that_add_work(tmp_path):
    project = tmp_path / "project"
    sub = project / "src" / "deep"
    sub.mkdir(parents=True)

    def podium(*args: str, cwd) -> subprocess.CompletedProcess:
        return subprocess.run([*PODIUM, *args], capture_output=True, cwd=cwd, timeout=60)

    # Nothing yet: read-only commands say so, and create nothing anywhere.
    for argv in (["status"], ["agents"], ["task", "list"], ["watch", "--idle-timeout", "0"]):
        line = error_line(podium(*argv, cwd=sub))
        assert line.startswith(f"podium: error: no store at {sub}/.podium/podium.db (nor in any "
                               "parent directory): 'podium init' makes one"), line
    assert not any(p.name == ".podium" for p in tmp_path.rglob("*"))
    # A mistyped path is not a new store either.
    line = error_line(podium("--store", str(project / "typo.db"), "status", cwd=project))
    assert line.startswith(f"podium: error: no store at {project}/typo.db:"), line
    assert not (project / "typo.db").exists()

    # init at the project's root; from a subdirectory, every command finds that store.
    assert ok(podium("init", cwd=project)).strip() == f"sqlite://{project}/.podium/podium.db"
    assert (project / ".podium" / ".gitignore").read_text().splitlines()[-1] == "*"
    tid = ok(podium("task", "add", "echo found", cwd=sub)).strip()
    assert tid in ok(podium("task", "list", cwd=project / "src"))
    assert not (sub / ".podium").exists() and not (project / "src" / ".podium").exists()

    # Adding work where there is no store yet makes one, there.
    other = tmp_path / "other"
    other.mkdir()
    ok(podium("task", "add", "echo new", cwd=other))
    assert (other / ".podium" / "podium.db").exists()


def test_a_task_nobody_can_run_is_accepted_with_a_warning_and_flagged(cli, workers, store_url):
    ok(cli("init"))
    p = cli("task", "add", "echo lonely")
    tid = ok(p).strip()
    assert p.stderr.decode() == (f"podium: warning: {tid} will wait: no live agent can take "
                                 "it; start some with 'podium up N'\n")
    workers.start("w1", backend="shell")
    p = cli("task", "add", "--role", "reviewer", "echo review")
    rid = ok(p).strip()
    assert "no live agent has role 'reviewer'; start one with 'podium up 1 --role reviewer'" \
        in p.stderr.decode()
    p = cli("task", "add", "echo fine")
    assert p.stderr == b""

    status = json.loads(ok(cli("status", "--json")))
    assert status["unrunnable"] == [{"tasks": 1, "target_agent": None,
                                     "target_role": "reviewer",
                                     "reason": "no live agent has role 'reviewer'; start one "
                                               "with 'podium up 1 --role reviewer'"}]
    assert "waiting for nobody: 1 queued task(s) for role reviewer" in ok(cli("status"))
    shown = ok(cli("task", "show", rid))
    assert "waiting    no live agent has role 'reviewer'" in shown
    assert json.loads(ok(cli("task", "show", rid, "--json")))["waiting_for_nobody"].startswith(
        "no live agent has role")

    # task wait without a timeout says what it waits for, every few seconds
    waiting = subprocess.Popen([*PODIUM, "--store", store_url, "task", "wait", rid],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(6.5)
    waiting.kill()
    _, err = waiting.communicate(timeout=10)
    assert f"podium: still waiting for {rid}: queued, no live agent has role 'reviewer'" \
        in err.decode()


def on_a_terminal(*argv: str, env: dict | None = None) -> str:
    """What a command printed to a terminal (a pty as its stdout and stderr)."""
    import os

    master, slave = os.openpty()
    try:
        subprocess.run([*PODIUM, *argv], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                       env={**os.environ, **(env or {})}, timeout=90)
    finally:
        os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # (EIO: the other end is closed and everything was read)
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out.decode("utf-8", "replace")


def test_people_get_colour_and_order_scripts_get_plain_text(store_url):
    try:
        shown = on_a_terminal("--store", store_url, "up", "11", "--prefix", "w")
        assert "agents registered: 11/11" in shown  # (the progress line, on a terminal only)
        table = on_a_terminal("--store", store_url, "agents")
        assert "\x1b[32midle" in table  # idle in green
        names = [line.split()[0] for line in table.splitlines()[1:] if line.strip()]
        assert names == [f"w-{i}" for i in range(1, 12)], names  # w-2 before w-10
        plain = on_a_terminal("--store", store_url, "agents", env={"NO_COLOR": "1"})
        assert "\x1b[" not in plain and "idle" in plain
        piped = subprocess.run([*PODIUM, "--store", store_url, "agents"], capture_output=True,
                               timeout=60)
        assert b"\x1b[" not in piped.stdout + piped.stderr and b"idle" in piped.stdout
    finally:
        subprocess.run([*PODIUM, "--store", store_url, "down", "--timeout", "10"],
                       capture_output=True, timeout=60)


def test_shell_completion_completes_commands():
    import os

    env = {**os.environ, "COMP_WORDS": "podium ta", "COMP_CWORD": "1",
           "_PODIUM_COMPLETE": "bash_complete"}
    p = subprocess.run([*PODIUM], capture_output=True, env=env, timeout=60)
    assert p.returncode == 0 and "plain,task" in p.stdout.decode().splitlines(), p
