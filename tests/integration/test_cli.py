"""The ``podium`` command as a user runs it: real processes, a real store, real workers.

Every command is run through ``python -m podium`` (the ``cli`` fixture); agents are real
``podium agent run`` processes (the ``workers`` fixture) or started by ``podium up``. Error
cases check the whole contract: one ``podium: error:`` line on stderr (click's usage errors
too), a non-zero exit, no traceback, and a store left exactly as it was.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_cli
from helpers import error_line, files_under, snapshot

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TASK_ID = re.compile(r"^t-[0-9a-z]{14}$")
RESULT_FIELDS = {"task_id", "agent_id", "status", "output", "duration_ms", "error", "exit_code",
                 "attempts", "started_at", "completed_at", "tokens_in", "tokens_out", "cost_usd"}
TASK_FIELDS = {"id", "prompt", "context", "priority", "target_agent", "target_role", "depends_on",
               "state", "agent_id", "attempts", "max_attempts", "retry_on_failure", "timeout_s",
               "created_at", "started_at", "completed_at", "lease_expires", "broadcast_id"}
AGENT_FIELDS = {"id", "name", "roles", "backend", "host", "pid", "state", "current_task",
                "registered_at", "last_heartbeat", "note", "tasks_done", "heartbeat_age_s"}
PODIUM = f"{shlex.quote(sys.executable)} -m podium"
WAIT = "30"  # seconds a `task wait` may take before the test gives up


# -- helpers -------------------------------------------------------------------------------

def out(p: subprocess.CompletedProcess) -> str:
    """stdout of a successful run, decoded as the UTF-8 Podium always writes."""
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}"
    assert b"Traceback" not in p.stderr, p.stderr
    return p.stdout.decode("utf-8")


def js(p: subprocess.CompletedProcess):
    return json.loads(out(p))


def usage_error(p: subprocess.CompletedProcess) -> str:
    """click's usage error: the one ``podium: error:`` line, exit 1, pointing at the help."""
    line = error_line(p)
    assert line.endswith(" --help')"), line
    return line


def new_task(cli, *args: str, input: bytes | None = None) -> str:
    text = out(cli("task", "add", *args, input=input))
    assert text.endswith("\n") and TASK_ID.match(text[:-1]), text
    return text[:-1]


def wait_done(cli, task_id: str) -> dict:
    """``task wait --json``: the result once the task finished (any final state)."""
    p = cli("task", "wait", task_id, "--timeout", WAIT, "--json")
    assert p.returncode in (0, 3, 4), (p.returncode, p.stderr)
    return json.loads(p.stdout)


def parse_iso(s: str) -> datetime:
    assert ISO.match(s), s
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def recent(s: str) -> bool:
    return abs(datetime.now(UTC) - parse_iso(s)) < timedelta(minutes=2)


def pid_running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def until(cond, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def team(cli):
    """For tests that run ``podium up``: whatever is still running is stopped afterwards."""
    yield
    cli("down", "--timeout", "5")


# -- store and team --------------------------------------------------------------------------

def test_init_default_store_env_and_explicit_url(tmp_path):
    home = tmp_path.resolve()
    # No --store, no PODIUM_STORE: ./.podium/podium.db in the current directory, created.
    assert out(run_cli("init")) == f"sqlite://{home}/.podium/podium.db\n"
    assert (home / ".podium" / "podium.db").is_file()
    tid = new_task(lambda *a, **k: run_cli(*a, **k), "in the default store")
    # Running init again keeps the data.
    assert out(run_cli("init")) == f"sqlite://{home}/.podium/podium.db\n"
    assert [t["id"] for t in js(run_cli("task", "list", "--json"))] == [tid]

    # PODIUM_STORE names another store (a plain relative path).
    env = {"PODIUM_STORE": "other.db"}
    assert out(run_cli("init", env=env)) == f"sqlite://{home}/other.db\n"
    assert js(run_cli("task", "list", "--json", env=env)) == []
    # --store wins over PODIUM_STORE; sqlite:///abs and the bare path are the same store.
    url = f"sqlite://{home}/.podium/podium.db"
    assert [t["id"] for t in js(run_cli("task", "list", "--json", store_url=url, env=env))] == [tid]
    inited = run_cli("init", store_url=str(home / ".podium" / "podium.db"), env=env)
    assert out(inited) == url + "\n"


def test_up_agents_and_down(cli, tmp_path, team):
    home = tmp_path.resolve()
    started = js(cli("up", "2", "--json"))
    assert [a["id"] for a in started] == ["agent-1", "agent-2"]
    for a in started:
        assert AGENT_FIELDS <= set(a)
        assert a["backend"] == "shell" and a["state"] == "idle" and a["roles"] == []
        assert a["host"] == socket.gethostname()
        assert isinstance(a["pid"], int) and pid_running(a["pid"])
        assert recent(a["registered_at"]) and ISO.match(a["last_heartbeat"])
        assert "registered" in (home / "logs" / f"{a['id']}.log").read_text()

    # Text output: one line per agent, then where the logs are.
    text = out(cli("up", "1", "--prefix", "rev", "--role", "reviewer"))
    m = re.fullmatch(r"rev-1  pid (\d+)  backend shell\nlogs: (.+)\n", text)
    assert m, text
    assert Path(m.group(2)) == home / "logs"
    pids = {a["id"]: a["pid"] for a in started} | {"rev-1": int(m.group(1))}

    listed = js(cli("agents", "--json"))

    def steady(agents):
        return [{k: v for k, v in a.items() if k not in ("last_heartbeat", "heartbeat_age_s")}
                for a in agents]

    assert steady(js(cli("agent", "list", "--json"))) == steady(listed)
    assert {a["id"]: a["pid"] for a in listed} == pids
    assert {a["id"]: a["state"] for a in listed} == dict.fromkeys(pids, "idle")
    assert next(a for a in listed if a["id"] == "rev-1")["roles"] == ["reviewer"]
    assert all(0 <= a["heartbeat_age_s"] < 60 for a in listed)
    table = out(cli("agents")).splitlines()
    assert table[0].split()[:3] == ["AGENT", "STATE", "ROLES"]
    assert sorted(r.split()[0] for r in table[1:]) == sorted(pids)

    # They really run tasks: a role task goes to the one agent with that role.
    tid = new_task(cli, "--role", "reviewer", "echo I am $PODIUM_AGENT_ID")
    r = wait_done(cli, tid)
    assert (r["status"], r["agent_id"], r["output"]) == ("completed", "rev-1", "I am rev-1\n")

    # down NAME stops just that agent.
    assert out(cli("down", "rev-1")) == "stopped 1 agent(s): rev-1\n"
    until(lambda: not pid_running(pids["rev-1"]), what="rev-1 to exit")
    assert pid_running(pids["agent-1"]) and pid_running(pids["agent-2"])

    text = out(cli("down", "--timeout", "10"))
    assert text.startswith("stopped 2 agent(s): ")
    assert sorted(text.strip().split(": ")[1].split(", ")) == ["agent-1", "agent-2"]
    for pid in pids.values():
        until(lambda pid=pid: not pid_running(pid), what=f"pid {pid} to exit")
    assert ({a["id"]: a["state"] for a in js(cli("agents", "--json"))}
            == dict.fromkeys(pids, "stopped"))
    assert "stopped" in (home / "logs" / "agent-1.log").read_text()
    assert out(cli("down")) == "stopped 0 agent(s)\n"


# -- tasks -------------------------------------------------------------------------------

def test_task_add_records_every_option(cli, workers):
    workers.start("w1", roles=["builder"])
    plain = new_task(cli, "--role", "nobody-has-this", "wait for me")
    t = js(cli("task", "add", "--json", "--agent", "w1", "--role", "builder", "--priority", "high",
               "--depends-on", plain, "--context", "ctx ✓", "--timeout", "2.5",
               "--max-attempts", "5", "--retry", "do it ✓"))
    assert TASK_FIELDS <= set(t) and TASK_ID.match(t["id"])
    assert t["prompt"] == "do it ✓" and t["context"] == "ctx ✓"
    assert (t["target_agent"], t["target_role"], t["priority"]) == ("w1", "builder", "high")
    assert t["depends_on"] == [plain] and t["state"] == "blocked"
    assert (t["timeout_s"], t["max_attempts"], t["retry_on_failure"]) == (2.5, 5, True)
    assert ((t["attempts"], t["agent_id"], t["started_at"], t["completed_at"])
            == (0, None, None, None))
    assert recent(t["created_at"])
    assert t["result"]["status"] == "blocked" and t["result"]["output"] is None
    shown = js(cli("task", "show", t["id"], "--json"))
    assert {k: shown[k] for k in TASK_FIELDS} == {k: t[k] for k in TASK_FIELDS}

    d = js(cli("task", "add", "--json", "defaults"))
    assert (d["priority"], d["max_attempts"], d["retry_on_failure"], d["timeout_s"]) == \
        ("normal", 3, False, None)
    assert (d["target_agent"], d["target_role"], d["depends_on"], d["context"]) == \
        (None, None, [], None)
    assert wait_done(cli, d["id"])["agent_id"] == "w1"


def test_task_add_stdin_is_byte_exact(cli, workers):
    workers.start("w1")  # echo: the output is the prompt as received
    data = "  leading blanks\r\nCRLF line\n\ttab ✓ 日本語 🎉\n\n\n".encode()
    tid = new_task(cli, "-", input=data)
    assert js(cli("task", "show", tid, "--json"))["prompt"] == data.decode("utf-8")
    assert wait_done(cli, tid)["status"] == "completed"
    raw = cli("result", tid, "--raw")
    assert raw.returncode == 0 and raw.stdout == data


def test_routing_priority_and_dependencies(cli, workers):
    # Queued before any agent exists, so the order they are served in is visible.
    low = new_task(cli, "--priority", "low", "low")
    n1 = new_task(cli, "normal 1")
    high = new_task(cli, "-p", "high", "high")
    n2 = new_task(cli, "normal 2")
    workers.start("w1")
    results = {t: wait_done(cli, t) for t in (low, n1, high, n2)}
    order = sorted(results, key=lambda t: results[t]["started_at"])
    assert order == [high, n1, n2, low]
    assert all(r["agent_id"] == "w1" for r in results.values())

    workers.start("w2", roles=["rev"])
    targeted = [new_task(cli, "--agent", "w2", f"for w2 #{i}") for i in range(3)]
    by_role = [new_task(cli, "--role", "rev", f"review #{i}") for i in range(3)]
    assert {wait_done(cli, t)["agent_id"] for t in targeted + by_role} == {"w2"}

    # B waits for A; C depends on a cancelled task and is cancelled with it.
    a = new_task(cli, "--role", "later", "A")
    b = js(cli("task", "add", "--json", "-d", a, "B"))
    assert b["state"] == "blocked"
    assert js(cli("task", "list", "--state", "blocked", "--json"))[0]["id"] == b["id"]
    x = new_task(cli, "--role", "later", "X")
    c = new_task(cli, "-d", x, "-d", a, "C")
    assert out(cli("task", "cancel", x)) == f"{x} cancelled\n"
    rc = js(cli("task", "show", c, "--json"))
    assert rc["state"] == "cancelled" and x in rc["result"]["error"]
    workers.start("w3", roles=["later"])
    ra, rb = wait_done(cli, a), wait_done(cli, b["id"])
    assert ra["status"] == rb["status"] == "completed"
    assert parse_iso(rb["started_at"]) >= parse_iso(ra["completed_at"])


def test_task_wait_exit_codes(cli, workers):
    workers.start("sh", backend="shell")
    ok = new_task(cli, "echo fine")
    p = cli("task", "wait", ok, "--timeout", WAIT)
    assert (p.returncode, p.stdout) == (0, f"{ok} completed\n".encode())
    r = js(cli("task", "wait", ok, "--json"))
    assert (r["task_id"], r["status"], r["output"]) == (ok, "completed", "fine\n")

    bad = new_task(cli, "echo oops >&2; exit 3")
    p = cli("task", "wait", bad, "--timeout", WAIT)
    assert (p.returncode, p.stdout) == (3, f"{bad} failed\n".encode())
    r = js(cli("result", bad))
    assert (r["status"], r["exit_code"], r["error"], r["attempts"]) == \
        ("failed", 3, "exit code 3: oops", 1)

    queued = new_task(cli, "--role", "nobody", "echo never")
    assert out(cli("task", "cancel", queued, "--reason", "changed my mind")) == \
        f"{queued} cancelled\n"
    p = cli("task", "wait", queued, "--timeout", WAIT)
    assert (p.returncode, p.stdout) == (4, f"{queued} cancelled\n".encode())
    assert js(cli("result", queued))["error"] == "changed my mind"

    stuck = new_task(cli, "--role", "nobody", "echo never")
    t0 = time.monotonic()
    p = cli("task", "wait", stuck, "--timeout", "0.5")
    assert (p.returncode, p.stdout) == (5, f"{stuck} queued\n".encode())
    assert 0.5 <= time.monotonic() - t0 < 10
    p = cli("task", "wait", stuck, "--timeout", "0", "--json")
    assert p.returncode == 5 and json.loads(p.stdout)["status"] == "queued"


def test_timeout_retry_and_cancel_running(cli, workers, tmp_path):
    workers.start("sh", backend="shell")
    slow = new_task(cli, "--timeout", "0.5", "sleep 20")
    p = cli("task", "wait", slow, "--timeout", WAIT)
    assert p.returncode == 3
    r = js(cli("result", slow))
    assert r["status"] == "failed" and "timed out after 0.5s" in r["error"]
    assert 400 <= r["duration_ms"] < 10_000

    # Fails once, then succeeds: --retry runs it again, without it the failure stands.
    flaky = "if [ -e {f} ]; then echo second try; else touch {f}; exit 1; fi"
    retried = new_task(cli, "--retry", "--max-attempts", "2",
                       flaky.format(f=shlex.quote(str(tmp_path / "flag1"))))
    once = new_task(cli, "--max-attempts", "2",
                    flaky.format(f=shlex.quote(str(tmp_path / "flag2"))))
    r = wait_done(cli, retried)
    assert (r["status"], r["attempts"], r["output"]) == ("completed", 2, "second try\n")
    r = wait_done(cli, once)
    assert (r["status"], r["attempts"], r["exit_code"]) == ("failed", 1, 1)

    # Cancelling a running task kills it: the agent is free again at once.
    running = new_task(cli, "sleep 30")
    until(lambda: js(cli("task", "show", running, "--json"))["state"] == "running",
          what="the task to start")
    assert out(cli("task", "cancel", running)) == f"{running} cancelled\n"
    t0 = time.monotonic()
    p = cli("task", "wait", running, "--timeout", WAIT)
    assert (p.returncode, p.stdout) == (4, f"{running} cancelled\n".encode())
    after = new_task(cli, "echo after")
    assert wait_done(cli, after)["output"] == "after\n"
    assert time.monotonic() - t0 < 15
    assert js(cli("result", running))["status"] == "cancelled"


def test_result_show_and_list(cli, workers):
    workers.start("sh", backend="shell")
    tid = new_task(cli, "echo 'héllo ✓'; echo warn >&2")
    binary = new_task(cli, r"printf '\377\000\376'")
    wait_done(cli, tid), wait_done(cli, binary)

    r = js(cli("result", tid))
    assert RESULT_FIELDS <= set(r)
    assert (r["task_id"], r["agent_id"], r["status"], r["output"]) == \
        (tid, "sh", "completed", "héllo ✓\n")
    assert (r["error"], r["exit_code"], r["attempts"]) == (None, 0, 1)
    assert (r["tokens_in"], r["tokens_out"], r["cost_usd"]) == (None, None, None)
    assert r["stderr"] == "warn\n"
    start, end = parse_iso(r["started_at"]), parse_iso(r["completed_at"])
    assert recent(r["started_at"]) and start <= end
    assert isinstance(r["duration_ms"], float) and r["duration_ms"] > 0
    assert abs((end - start).total_seconds() * 1000 - r["duration_ms"]) < 1
    assert cli("result", tid, "--raw").stdout == "héllo ✓\n".encode()

    # Output that is not UTF-8: exact bytes raw, base64 in JSON.
    rb = js(cli("result", binary))
    assert rb["output_encoding"] == "base64"
    assert base64.b64decode(rb["output"]) == b"\xff\x00\xfe"
    assert cli("result", binary, "--raw").stdout == b"\xff\x00\xfe"

    # An unfinished task has a result too, with nothing in it yet.
    pending = new_task(cli, "--role", "nobody", "echo later")
    rp = js(cli("result", pending))
    assert (rp["status"], rp["output"], rp["agent_id"], rp["attempts"]) == ("queued", None, None, 0)
    assert (rp["started_at"], rp["completed_at"], rp["duration_ms"]) == (None, None, None)
    raw = cli("result", pending, "--raw")
    assert out(raw) == ""

    text = out(cli("task", "show", tid))
    for line in ("state      completed", "agent      sh", "attempts   1/3", "exit code  0",
                 f"task       {tid}", "prompt:\necho 'héllo ✓'; echo warn >&2\noutput:\nhéllo ✓"):
        assert line in text, (line, text)

    failed = new_task(cli, "exit 9")
    wait_done(cli, failed)
    every = js(cli("task", "list", "--json"))
    assert [t["id"] for t in every] == [tid, binary, pending, failed]
    assert all(TASK_FIELDS <= set(t) and "result" not in t for t in every)

    def ids(state):
        return [t["id"] for t in js(cli("task", "list", "--state", state, "--json"))]

    assert ids("completed") == [tid, binary]
    assert ids("queued") == [pending]
    assert ids("failed") == [failed]
    assert ids("running") == []
    assert [t["id"] for t in js(cli("task", "list", "-n", "1", "--json"))] == [failed]
    assert [t["id"] for t in js(cli("task", "list", "--agent", "sh", "--json"))] == \
        [tid, binary, failed]
    table = out(cli("task", "list")).splitlines()
    assert table[0].split() == ["TASK", "STATE", "PRIORITY", "TARGET", "AGENT", "TRIES", "AGE",
                                "PROMPT"]
    assert [row.split()[:2] for row in table[1:]] == \
        [[tid, "completed"], [binary, "completed"], [pending, "queued"], [failed, "failed"]]


def test_cancel_finished_task_is_refused(cli, workers, podium):
    workers.start("w1")
    tid = new_task(cli, "done soon")
    assert wait_done(cli, tid)["status"] == "completed"
    before = snapshot(podium)
    line = error_line(cli("task", "cancel", tid))
    assert line == f"podium: error: task {tid} is already completed; nothing to cancel"
    assert snapshot(podium) == before
    cancelled = new_task(cli, "--role", "nobody", "x")
    out(cli("task", "cancel", cancelled))
    before = snapshot(podium)
    assert "already cancelled" in error_line(cli("task", "cancel", cancelled))
    assert snapshot(podium) == before


def test_broadcast_one_task_per_live_agent(cli, workers):
    for name in ("w1", "w2", "gone"):
        workers.start(name)
    workers.stop("gone")
    tasks = js(cli("broadcast", "--json", "--context", "shared ctx", "hello all"))
    assert sorted(t["target_agent"] for t in tasks) == ["w1", "w2"]
    assert len({t["broadcast_id"] for t in tasks}) == 1 and tasks[0]["broadcast_id"]
    assert all(t["prompt"] == "hello all" and t["context"] == "shared ctx" for t in tasks)
    for t in tasks:
        r = wait_done(cli, t["id"])
        assert (r["status"], r["agent_id"]) == ("completed", t["target_agent"])

    lines = out(cli("broadcast", "-", input="from stdin ✓\n".encode())).splitlines()
    targets = {}
    for line in lines:
        tid, agent = line.split()
        targets[tid] = agent
    assert sorted(targets.values()) == ["w1", "w2"]
    for tid, agent in targets.items():
        r = wait_done(cli, tid)
        assert (r["agent_id"], r["output"]) == (agent, "from stdin ✓\n")


# -- messages, reports, context ------------------------------------------------------------

def test_send_and_inbox(cli, workers):
    workers.start("w1")
    assert re.fullmatch(r"message \d+ -> w1\n", out(cli("send", "w1", "first ✓")))
    out(cli("send", "w1", "--from", "lead", "second"))
    out(cli("send", "w1", "-", input="third\nline ✓\n".encode()))

    msgs = js(cli("inbox", "w1", "--json"))
    assert [m["body"] for m in msgs] == ["first ✓", "second", "third\nline ✓\n"]
    assert [m["sender"] for m in msgs] == ["orchestrator", "lead", "orchestrator"]
    assert all(m["direction"] == "in" and m["kind"] == "message" and m["agent_id"] == "w1"
               and m["read_at"] is None and recent(m["created_at"]) for m in msgs)
    unread = js(cli("inbox", "w1", "--unread", "--json"))
    assert [m["id"] for m in unread] == [m["id"] for m in msgs]

    def marks():
        return [line[0] for line in out(cli("inbox", "w1")).splitlines()
                if re.match(r"[* ] #\d+ \S+Z \S+ \[message\]$", line)]

    assert marks() == ["*", "*", "*"]  # unread

    acked = js(cli("inbox", "w1", "--unread", "--ack", "--json"))
    assert [m["id"] for m in acked] == [m["id"] for m in msgs]
    assert js(cli("inbox", "w1", "--unread", "--json")) == []
    after = js(cli("inbox", "w1", "--json"))
    assert all(m["read_at"] and ISO.match(m["read_at"]) for m in after)
    assert marks() == [" ", " ", " "]
    out(cli("send", "w1", "fourth"))
    assert [m["body"] for m in js(cli("inbox", "w1", "--unread", "--json"))] == ["fourth"]
    assert js(cli("inbox", "w1", "--outbox", "--json")) == []


def test_report_from_env_and_from_a_task(cli, workers):
    workers.start("w1")
    env = {"PODIUM_AGENT_ID": "w1"}
    assert re.fullmatch(r"report \d+ from w1\n",
                        out(cli("report", "--status", "waiting_input", "--note", "need a key ✓",
                                env=env)))
    a = next(a for a in js(cli("agents", "--json")) if a["id"] == "w1")
    assert a["state"] == "waiting_input" and a["note"] == "waiting_input: need a key ✓"
    # Any other word is reported but leaves the agent's state alone.
    out(cli("report", "-s", "thinking", "-m", "-", env=env, input=b"hmm\n"))
    assert next(a for a in js(cli("agents", "--json")) if a["id"] == "w1")["state"] == \
        "waiting_input"
    out(cli("report", "-s", "idle", env=env))
    assert next(a for a in js(cli("agents", "--json")) if a["id"] == "w1")["state"] == "idle"

    outbox = js(cli("inbox", "w1", "--outbox", "--json"))
    assert [(m["kind"], m["direction"], m["body"], m["sender"]) for m in outbox] == [
        ("report", "out", "waiting_input: need a key ✓", "w1"),
        ("report", "out", "thinking: hmm\n", "w1"),
        ("report", "out", "idle", "w1"),
    ]
    assert js(cli("inbox", "w1", "--json")) == []

    # A task reports through the environment its agent gives it.
    workers.start("sh", backend="shell")
    tid = new_task(cli, "--agent", "sh", f"{PODIUM} report --status compiling --note 'from inside'")
    assert wait_done(cli, tid)["status"] == "completed"
    (m,) = js(cli("inbox", "sh", "--outbox", "--json"))
    assert (m["body"], m["sender"], m["task_id"]) == ("compiling: from inside", "sh", tid)


def test_context_set_get_list_and_injection(cli, workers):
    assert out(cli("context", "set", "style", "be brief")) == "style v1\n"
    assert out(cli("context", "set", "style", "be brief ✓", env={"PODIUM_AGENT_ID": "lead"})) == \
        "style v2\n"
    value = "line one\n  line two ✓\n\n"
    assert out(cli("context", "set", "notes", "-", input=value.encode())) == "notes v1\n"
    assert cli("context", "get", "notes").stdout == value.encode()
    assert out(cli("context", "get", "style")) == "be brief ✓\n"
    e = js(cli("context", "get", "style", "--json"))
    assert ((e["key"], e["value"], e["version"], e["updated_by"])
            == ("style", "be brief ✓", 2, "lead"))
    assert recent(e["updated_at"])
    listed = js(cli("context", "list", "--json"))
    assert [(x["key"], x["version"]) for x in listed] == [("notes", 1), ("style", 2)]
    table = out(cli("context", "list")).splitlines()
    assert table[0].split() == ["KEY", "VERSION", "AGE", "VALUE"]
    assert [r.split()[:2] for r in table[1:]] == [["notes", "v1"], ["style", "v2"]]

    workers.start("w1")  # echo takes context: its output is what an AI agent would be given
    tid = new_task(cli, "--context", "task ctx", "summarize")
    got = wait_done(cli, tid)["output"]
    marks = ["# Shared context", "## notes\nline one\n  line two ✓", "## style\nbe brief ✓",
             "# Task context\ntask ctx", "# Task\nsummarize"]
    positions = [got.index(m) for m in marks]
    assert positions == sorted(positions) and got.endswith("# Task\nsummarize")


# -- watching and status -----------------------------------------------------------------

def test_watch_prints_what_happened(cli, workers, podium, store_url):
    workers.start("sh", backend="shell")
    tid = new_task(cli, "echo hello watcher")
    wait_done(cli, tid)

    p = cli("watch", "--from", "0", "--idle-timeout", "0.5", "--json")
    events = [json.loads(line) for line in out(p).splitlines()]
    assert [e["id"] for e in events] == list(range(1, podium.store.last_event_id() + 1))
    for e in events:
        assert set(e) == {"id", "ts", "kind", "agent_id", "task_id", "data"} and ISO.match(e["ts"])
    assert events[0]["kind"] == "agent.registered" and events[0]["agent_id"] == "sh"
    mine = [e for e in events if e["task_id"] == tid]
    kinds = [e["kind"] for e in mine]
    assert kinds[0] == "task.queued" and kinds[-1] == "task.completed" and "task.claimed" in kinds
    assert "".join(e["data"].get("chunk", "") for e in mine if e["kind"] == "task.output") == \
        "hello watcher\n"
    assert mine[-1]["data"]["exit_code"] == 0 and mine[-1]["agent_id"] == "sh"

    only = [json.loads(x) for x in out(cli("watch", "--from", "0", "--idle-timeout", "0.5",
                                           "--task", tid, "--json")).splitlines()]
    assert only == mine

    text = out(cli("watch", "--from", "0", "--idle-timeout", "0.5", "--task", tid))
    assert re.search(rf"#\d+ task\.queued +- +{tid}", text)
    assert "  | hello watcher" in text

    # From an event id on: only what comes after it, including what happens while watching.
    last = podium.store.last_event_id()
    w = subprocess.Popen([sys.executable, "-m", "podium", "--store", store_url, "watch",
                          "--from", str(last), "--idle-timeout", "1.5", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        later = new_task(cli, "echo later")
        stdout, stderr = w.communicate(timeout=30)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert w.returncode == 0, stderr
    seen = [json.loads(x) for x in stdout.decode().splitlines()]
    assert seen and all(e["id"] > last for e in seen)
    assert ("task.queued", later) in [(e["kind"], e["task_id"]) for e in seen]


def test_status(cli, workers, store_url):
    workers.start("w1")
    done = new_task(cli, "quick")
    wait_done(cli, done)
    new_task(cli, "--role", "nobody", "waits")
    s = js(cli("status", "--json"))
    assert s["store"] == store_url
    assert s["agents"] == {"total": 1, "idle": 1}
    assert s["tasks"] == {"blocked": 0, "queued": 1, "running": 0, "completed": 1, "failed": 0,
                          "cancelled": 0}
    assert ([(a["id"], a["state"], a["backend"]) for a in s["live_agents"]]
            == [("w1", "idle", "echo")])
    assert isinstance(s["last_event_id"], int) and s["last_event_id"] >= 5
    text = out(cli("status")).splitlines()
    assert text[0] == f"store   {store_url}"
    assert text[1] == "agents  1 total, 1 idle"
    assert text[2].startswith("tasks   ") and "1 queued" in text[2] and "1 completed" in text[2]
    assert text[3].split() == ["w1", "idle", "-"]


def test_demo_runs_to_completion(tmp_path):
    p = run_cli("demo", timeout=120)
    text = out(p)
    assert "primes below 300000: 25997" in text
    assert "timeout killed as expected" in text
    assert "stopped 4 agents" in text  # 3 shell agents and the local AI agent
    assert p.returncode == 0, text
    assert "is right for all of 0..999" in text or "is wrong for" in text  # the AI's code, tested
    assert "ai-1     local  2 tasks" in text  # its tokens, from podium costs
    assert files_under(tmp_path) == set()  # the demo's store lives (and dies) elsewhere


# -- a non-UTF-8 locale --------------------------------------------------------------------

@pytest.mark.parametrize("utf8_mode", ["default", "off"])
def test_non_utf8_locale_still_prints_unicode(cli, workers, monkeypatch, utf8_mode):
    for var in ("LC_CTYPE", "LC_MESSAGES", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONCOERCECLOCALE"):
        monkeypatch.delenv(var, raising=False)
    workers.start("w1")
    env = {"LC_ALL": "C", "LANG": "C"}
    if utf8_mode == "off":  # Python's own UTF-8 mode off too: stdio really is ASCII
        env["PYTHONUTF8"] = "0"
    prompt = "héllo ✓ 日本語 🎉"
    piped = "naïve — ünïcode ✓\n"
    t1 = new_task(lambda *a, **k: cli(*a, env=env, **k), prompt)
    t2 = new_task(lambda *a, **k: cli(*a, env=env, **k), "-", input=piped.encode())
    for tid, text in ((t1, prompt), (t2, piped)):
        p = cli("task", "wait", tid, "--timeout", WAIT, "--json", env=env)
        assert p.returncode == 0 and json.loads(p.stdout.decode("utf-8"))["output"] == text
        assert cli("result", tid, "--raw", env=env).stdout == text.encode("utf-8")
        assert json.loads(out(cli("result", tid, env=env)))["output"] == text
        shown = out(cli("task", "show", tid, env=env))
        assert f"prompt:\n{text}" in shown and f"output:\n{text}" in shown
    assert prompt in out(cli("task", "list", env=env))
    assert out(cli("context", "set", "ключ", "значение ✓", env=env)) == "ключ v1\n"
    assert out(cli("context", "get", "ключ", env=env)) == "значение ✓\n"
    events = out(cli("watch", "--from", "0", "--idle-timeout", "0.3", "--json", env=env))
    assert "значение" not in events and '"key": "ключ"' in events
    line = error_line(cli("task", "show", "t-ünknown", env=env))
    assert line == "podium: error: unknown task 't-ünknown'"


# -- errors --------------------------------------------------------------------------------

@pytest.fixture
def seeded(podium):
    """A store with something in every table: a stopped agent, tasks, a message, context."""
    s = podium.store
    s.register_agent("w1", [], "echo", socket.gethostname(), os.getpid(), 30.0, {})
    s.deregister("w1")
    first = podium.add_task("first ✓", role="nobody")
    podium.add_task("second", depends_on=[first.id], priority="high")
    podium.set_context("k", "v")
    podium.send("w1", "hello")
    return {"task": first.id}


BAD_UTF8 = b"ok so far \xff\xfe"
NOPE = "t-0000000000"
ERRORS = [
    # unknown ids
    (["task", "show", NOPE], None, f"unknown task '{NOPE}'"),
    (["task", "show", "--json", NOPE], None, f"unknown task '{NOPE}'"),
    (["result", NOPE], None, f"unknown task '{NOPE}'"),
    (["result", "--raw", NOPE], None, f"unknown task '{NOPE}'"),
    (["task", "wait", NOPE, "--timeout", "5"], None, f"unknown task '{NOPE}'"),
    (["task", "cancel", NOPE], None, f"unknown task '{NOPE}'"),
    (["task", "list", "--agent", "nobody"], None, "unknown agent 'nobody'"),
    (["task", "add", "--agent", "nobody", "x"], None, "unknown agent 'nobody'"),
    (["task", "add", "--depends-on", NOPE, "x"], None, f"unknown task '{NOPE}' (in depends_on)"),
    (["task", "add", "-d", "{task}", "-d", NOPE, "x"], None, f"unknown task '{NOPE}'"),
    (["send", "nobody", "hi"], None, "unknown agent 'nobody'"),
    (["inbox", "nobody"], None, "unknown agent 'nobody'"),
    (["inbox", "nobody", "--unread", "--ack"], None, "unknown agent 'nobody'"),
    (["inbox", "nobody", "--outbox"], None, "unknown agent 'nobody'"),
    (["report", "--agent", "nobody", "-s", "waiting_input"], None, "unknown agent 'nobody'"),
    (["report", "--agent", "nobody", "-s", "thinking"], None, "unknown agent 'nobody'"),
    (["context", "get", "nokey"], None, "unknown context key 'nokey'"),
    (["broadcast", "hi"], None, "no live agents"),
    # malformed input
    (["task", "list", "--state", "bogus"], None, "bad state 'bogus'"),
    (["task", "add", "--timeout", "-1", "x"], None, "bad timeout"),
    (["task", "add", "--timeout", "0", "x"], None, "bad timeout"),
    (["task", "add", "--timeout", "nan", "x"], None, "bad timeout"),
    (["task", "add", "--timeout", "inf", "x"], None, "bad timeout"),
    (["broadcast", "--timeout", "-3", "x"], None, "bad timeout"),
    (["task", "wait", "{task}", "--timeout", "-1"], None, "bad timeout"),
    (["task", "wait", "{task}", "--timeout", "nan"], None, "bad timeout"),
    (["watch", "--idle-timeout", "-1"], None, "bad idle timeout"),
    (["watch", "--idle-timeout", "nan"], None, "bad idle timeout"),
    (["task", "add", "--max-attempts", "0", "x"], None, "bad max_attempts 0"),
    (["task", "add", "--role", "", "x"], None, "role is empty"),
    (["task", "add", ""], None, "prompt is empty"),
    (["task", "add", " \n\t "], None, "prompt is empty"),
    (["task", "add", "-"], b"", "prompt is empty"),
    (["task", "add", "-"], BAD_UTF8, "prompt on stdin is not valid UTF-8"),
    (["broadcast", "-"], BAD_UTF8, "prompt on stdin is not valid UTF-8"),
    (["send", "w1", "-"], BAD_UTF8, "message on stdin is not valid UTF-8"),
    (["send", "w1", "  "], None, "message is empty"),
    (["context", "set", "k", "-"], BAD_UTF8, "value on stdin is not valid UTF-8"),
    (["context", "set", "", "v"], None, "context key is empty"),
    (["report", "--agent", "w1", "-s", "idle", "-m", "-"], BAD_UTF8, "note on stdin is not valid"),
    (["task", "show", b"t-\xff\xfe"], None, "not valid UTF-8"),
    (["task", "add", b"caf\xe9"], None, "argument b'caf\\xe9' is not valid UTF-8"),
    # backends and agents
    (["up", "1", "--option", "novalue"], None, "bad backend option 'novalue': expected KEY=VALUE"),
    (["up", "1", "-o", "=v"], None, "bad backend option '=v'"),
    (["up", "1", "--backend", "nope"], None, "unknown backend 'nope': available backends are"),
    (["up", "0"], None, "at least 1"),
    (["agent", "run", "-n", "a1", "--backend", "nope"], None, "unknown backend 'nope'"),
    (["agent", "run", "-n", "a1", "-b", "echo", "-o", "novalue"], None, "bad backend option"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--lease", "0"], None, "--lease must be from"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--lease", "nan"], None, "--lease must be"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--lease", "inf"], None, "--lease must be"),
    (["agent", "run", "-n", "a1", "-b", "echo", "--lease", "5", "--heartbeat", "9"], None,
     "--heartbeat from 0.05 s to less than the lease"),
]


@pytest.mark.parametrize("args,stdin,expected", ERRORS,
                         ids=[" ".join(a if isinstance(a, str) else repr(a) for a in c[0]) + (
                             " <stdin" if c[1] is not None else "") for c in ERRORS])
def test_error_is_one_line_and_changes_nothing(cli, podium, seeded, tmp_path, args, stdin,
                                               expected):
    args = [a.format(**seeded) if isinstance(a, str) else a for a in args]
    before, files = snapshot(podium), files_under(tmp_path)
    line = error_line(cli(*args, input=stdin, timeout=30))
    assert expected in line, line
    assert snapshot(podium) == before
    assert files_under(tmp_path) == files  # e.g. no logs/ from a refused `up`


USAGE = [
    (["task", "add", "--priority", "urgent", "x"],
     "'urgent' is not one of 'high', 'normal', 'low'"),
    (["task", "add", "--timeout", "soon", "x"], "'soon' is not a valid float"),
    (["task", "add", "--max-attempts", "two", "x"], "'two' is not a valid integer"),
    (["task", "add"], "Missing argument 'PROMPT'"),
    (["up", "many"], "'many' is not a valid integer"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
    (["task", "list", "--bogus-flag"], "No such option"),
]


@pytest.mark.parametrize("args,expected", USAGE, ids=[" ".join(c[0]) for c in USAGE])
def test_usage_error_changes_nothing(cli, podium, seeded, args, expected):
    before = snapshot(podium)
    assert expected in usage_error(cli(*args))
    assert snapshot(podium) == before


@pytest.mark.parametrize("url,expected", [
    ("ftp://x", "bad store URL 'ftp://x'"),
    ("sqlite://host/x.db", "bad store URL 'sqlite://host/x.db': use sqlite:///path"),
    ("sqlite://", "no file path"),
    ("{tmp}/missing/podium.db", "directory {tmp}/missing does not exist"),
    ("sqlite://{tmp}/missing/podium.db", "directory {tmp}/missing does not exist"),
    ("sqlite://{tmp}/p.db?bogus=1", "unknown option(s) bogus"),
    ("sqlite://{tmp}/p.db?synchronous=sometimes", "bad synchronous='sometimes'"),
    ("{tmp}/not-a-store.db", "is not a Podium store"),
    ("{tmp}", "cannot open store"),
    ("postgresql://someone:s3cret@127.0.0.1:1/podium", "PostgreSQL"),
])
@pytest.mark.parametrize("how", ["--store", "PODIUM_STORE"])
def test_bad_store_url(tmp_path, url, expected, how):
    home = tmp_path.resolve()
    not_a_store = b"this is not an SQLite database, just text" * 20
    (home / "not-a-store.db").write_bytes(not_a_store)
    url, expected = url.format(tmp=home), expected.format(tmp=home)
    files = files_under(home)
    for args in (["init"], ["task", "add", "hello"], ["agents", "--json"]):
        if how == "--store":
            p = run_cli(*args, store_url=url, timeout=30)
        else:
            p = run_cli(*args, env={"PODIUM_STORE": url}, timeout=30)
        line = error_line(p)
        assert expected in line, line
        assert "s3cret" not in line
    assert files_under(home) == files  # nothing created, not even ./.podium
    assert (home / "not-a-store.db").read_bytes() == not_a_store


#: A prompt that would set the terminal's title, recolour it and overwrite the line.
NASTY = "title\x1b]0;pwned\x07 red\x1b[31m over\rwrite\ttab\x9bcsi"


def test_one_line_views_escape_control_characters_whole_views_keep_them(store_url):
    out = run_cli("task", "add", "--role", "nobody", NASTY, store_url=store_url)
    task_id = out.stdout.decode().split()[0]
    listed = run_cli("task", "list", store_url=store_url).stdout.decode()
    assert "\x1b" not in listed and "\r" not in listed and "\\x1b]0;pwned" in listed
    shown = run_cli("task", "show", task_id, store_url=store_url).stdout.decode()
    assert NASTY in shown  # (the whole text, byte for byte)
    run_cli("task", "cancel", task_id, "--reason", NASTY, store_url=store_url)
    events = run_cli("watch", "--from", "0", "--idle-timeout", "0",
                     store_url=store_url).stdout.decode()
    assert "\x1b" not in events and "\\x1b]0;pwned" in events
