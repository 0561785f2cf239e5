"""``podium doctor`` and the backend check of ``podium up``, with the real programs.

Real parts: the ``claude`` program from npm (installed by ``scripts/test`` into ``.cache/npm``)
run logged out — HOME a fresh directory, no ANTHROPIC_/CLAUDE variable — so that it tells
itself that it is not logged in; real SQLite stores, a PostgreSQL URL nothing listens on, real
``podium up`` workers and the real ``podium`` command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket

import pytest

from agent_clis import isolate_env
from anthropic_api import ScriptedAnthropic
from conftest import run_cli
from podium.store import open_store

PREFIXES = ("ANTHROPIC_", "CLAUDE", "DISABLE_", "MCP_")
LOGIN_FIX = "run `claude` once and log in, or set ANTHROPIC_API_KEY"
STORE_ROWS = ("store", "store schema", "store writable", "store disk space", "store file modes")


@pytest.fixture
def logged_out(monkeypatch, tmp_path):
    """An empty HOME and no credentials: the real claude CLI is logged out."""
    return isolate_env(monkeypatch, tmp_path, PREFIXES)


def rows(r) -> dict[str, dict]:
    """The checks of a ``doctor --json`` run, by name."""
    doc = json.loads(r.stdout)
    return {c["name"]: c for c in doc["checks"]}


def no_traceback(r) -> None:
    assert b"Traceback" not in r.stderr + r.stdout, r.stderr.decode()


def test_logged_out_claude_fails_with_the_fix(cli, logged_out, claude_bin):
    r = cli("doctor", "--backend", "claude", "-o", f"bin={claude_bin}")
    no_traceback(r)
    assert r.returncode == 1, r.stdout.decode()
    text = r.stdout.decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith("claude login ")]
    assert line.split()[2] == "fail"
    assert "claude is not logged in" in line and LOGIN_FIX in line
    # The program and its version are found and fine: only the login fails.
    assert " ok " in next(ln for ln in text.splitlines() if ln.startswith("claude program "))
    version = next(ln for ln in text.splitlines() if ln.startswith("claude version "))
    assert "ok" in version.split() and "Claude Code" in version

    found = rows(cli("doctor", "--json", "--backend", "claude", "-o", f"bin={claude_bin}"))
    assert found["claude login"] == {
        "name": "claude login", "subject": "backend claude", "check": "login",
        "status": "fail", "detail": "claude is not logged in", "fix": LOGIN_FIX}
    assert found["claude program"]["detail"] == claude_bin


def test_the_backends_of_the_stores_agents_are_checked(cli, store_url, logged_out, claude_bin):
    """Without --backend: shell, and what the store's agents ran (claude, found on PATH)."""
    s = open_store(store_url)
    try:
        s.register_agent("c1", [], "claude", socket.gethostname(), None, 30.0, {})
        s.deregister("c1")
    finally:
        s.close()
    path = f"{os.path.dirname(claude_bin)}{os.pathsep}{os.environ.get('PATH', '')}"
    r = cli("doctor", "--json", env={"PATH": path})
    no_traceback(r)
    assert r.returncode == 1
    found = rows(r)
    assert found["claude login"]["status"] == "fail"
    assert found["claude login"]["fix"] == LOGIN_FIX
    assert found["shell program"]["status"] == "ok"
    assert json.loads(r.stdout)["ok"] is False


def test_shell_only_passes_and_the_store_rows_are_ok(cli, podium):
    r = cli("doctor")
    no_traceback(r)
    assert r.returncode == 0, r.stdout.decode()
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL", "FIX"]
    for name in STORE_ROWS:
        [line] = [ln for ln in lines if ln.startswith(name + "  ")]
        assert line[len(name):].split()[0] == "ok", line
    assert lines[-1].startswith("0 failed")

    found = rows(cli("doctor", "--json"))
    assert found["store"]["detail"] == f"reachable: {podium.url}"
    assert found["store schema"]["detail"].startswith("migrated (")
    assert found["store writable"]["status"] == "ok"
    assert "free in" in found["store disk space"]["detail"]
    assert found["shell program"]["detail"] == "/bin/sh"
    assert not [c for c in found.values() if c["subject"].startswith("backend ")
                and c["subject"] != "backend shell"]
    # Nothing was written that a reader could see: no event, no agent.
    assert podium.agents() == [] and podium.events(0, 10) == []


def test_json_shape(cli, podium):
    r = cli("doctor", "--json", "--backend", "echo", "--backend", "shell")
    assert r.returncode == 0, r.stdout.decode()
    doc = json.loads(r.stdout)
    assert set(doc) == {"ok", "checks"} and doc["ok"] is True
    for c in doc["checks"]:
        assert set(c) == {"name", "subject", "check", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn", "fail")
        assert all(isinstance(v, str) for v in c.values())
    subjects = [c["subject"] for c in doc["checks"]]
    assert subjects[:2] == ["podium", "store"] and "tmux" in subjects
    assert subjects[-2:] == ["backend echo", "backend shell"]


def test_an_unreachable_postgres_store_fails_in_one_clear_line(cli):
    url = "postgresql://127.0.0.1:1/test"
    r = run_cli("doctor", "--store", url)
    no_traceback(r)
    assert r.returncode == 1
    [line] = [ln for ln in r.stdout.decode().splitlines() if ln.startswith("store ")]
    assert line.split()[1] == "fail"
    assert "127.0.0.1" in line and "refused" in line.lower()
    found = rows(run_cli("doctor", "--json", "--store", url))
    assert "\n" not in found["store"]["detail"]
    assert [n for n in found if n.startswith("store")] == ["store"]  # nothing more to check
    assert found["shell program"]["status"] == "ok"


def test_no_store_yet_is_a_warning_and_none_is_made(tmp_path):
    r = run_cli("doctor", "--json")  # (in tmp_path: no .podium here or above)
    no_traceback(r)
    found = rows(r)
    assert found["store"]["status"] == "warn" and "podium init" in found["store"]["fix"]
    assert r.returncode == 0
    assert not (tmp_path / ".podium").exists()


@pytest.mark.parametrize("args, said", [
    (["--backend", "nope"], "unknown backend 'nope': available backends are"),
    (["-o", "model=x"], "--option needs exactly one --backend"),
    (["-o", "novalue", "--backend", "claude"], "bad backend option 'novalue'"),
    (["--all", "--backend", "shell"], "give --backend or --all, not both"),
])
def test_bad_input_is_one_line(cli, args, said):
    r = cli("doctor", *args)
    no_traceback(r)
    assert r.returncode != 0
    assert said in r.stderr.decode()
    assert r.stderr.decode().strip().splitlines() == [r.stderr.decode().strip()]


def test_a_bad_option_is_a_failing_row(cli, podium):
    found = rows(cli("doctor", "--json", "--backend", "openai", "-o", "temperature=hot"))
    assert found["openai options"]["status"] == "fail"
    assert "temperature='hot' must be a number" in found["openai options"]["detail"]


# -- podium up refuses what doctor fails ------------------------------------------------------
def test_up_refuses_a_logged_out_claude_before_starting_anything(cli, store_url, tmp_path,
                                                                  logged_out, claude_bin):
    r = cli("up", "2", "--backend", "claude", "-o", f"bin={claude_bin}")
    no_traceback(r)
    assert r.returncode == 1
    assert r.stderr.decode().strip() == f"podium: error: claude is not logged in: {LOGIN_FIX}"
    # No worker was started: no log, no agent, no process of this store.
    assert not (tmp_path / "logs").exists()
    if (tmp_path / "podium.db").exists():
        s = open_store(store_url)
        try:
            assert s.list_agents() == []
        finally:
            s.close()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _runs_on(p, store_url)]
    # doctor says the same.
    d = rows(cli("doctor", "--json", "--backend", "claude", "-o", f"bin={claude_bin}"))
    assert f"{d['claude login']['detail']}: {d['claude login']['fix']}" in r.stderr.decode()


def _runs_on(pid: str, store_url: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return store_url.encode() in f.read()
    except OSError:
        return False


def test_up_starts_claude_with_the_credentials_the_tests_give_it(cli, logged_out, claude_bin):
    """The check takes what the scripted-API tests set (a key and a base URL on loopback)."""
    server = ScriptedAnthropic().start()
    try:
        r = cli("up", "1", "--backend", "claude", "-o", f"bin={claude_bin}", "--json",
                env=server.env())
        assert r.returncode == 0, r.stderr.decode()
        [agent] = json.loads(r.stdout)
        assert agent["backend"] == "claude"
    finally:
        cli("down")
        server.stop()
    assert server.message_requests == []  # (the check asked no API)


def test_up_refuses_a_missing_program_or_model(cli, tmp_path):
    r = cli("up", "1", "--backend", "claude", "-o", f"bin={tmp_path / 'no-claude'}")
    assert r.returncode == 1 and b"is not an executable file" in r.stderr
    r = cli("up", "1", "--backend", "local", "-o", f"model_path={tmp_path / 'none.gguf'}")
    assert r.returncode == 1 and b"none.gguf not found" in r.stderr
    r = cli("up", "1", "-o", "shell=/no/such/shell")
    assert r.returncode == 1 and b"'/no/such/shell' not found" in r.stderr
    assert not (tmp_path / "logs").exists()


# -- a start-up failure shows this attempt's errors only -------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (./scripts/bootstrap local)")
def test_a_failed_start_up_shows_only_this_attempts_errors(cli, tmp_path):
    """A model file that is there (the check passes) but is no model: the worker fails while
    loading it, twice, into the same appended log."""
    errors = []
    for name in ("first-model.gguf", "second-model.gguf"):
        (tmp_path / name).write_bytes(b"not a GGUF file\n" * 64)
        r = cli("up", "1", "--backend", "local", "-o", f"model_path={tmp_path / name}")
        no_traceback(r)
        assert r.returncode == 1
        errors.append(r.stderr.decode())
    first, second = errors
    assert "during start-up" in first and "first-model.gguf" in first
    assert "during start-up" in second and "second-model.gguf" in second
    assert "first-model.gguf" not in second
    # Both attempts are in the log, which is appended to.
    log = (tmp_path / "logs" / "agent-1.log").read_text()
    assert "first-model.gguf" in log and "second-model.gguf" in log
