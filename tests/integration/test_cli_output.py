"""What the ``podium`` command shows, run as a user runs it (``python -m podium``): click's usage
errors as the one ``podium: error:`` line, ``watch`` keeping task output off the terminal's
controls, ``mcp serve`` refusing what it would ignore or expose, the views of ``task show`` and
``task list``, and empty ``--context`` refused."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from conftest import run_cli
from helpers import error_line, files_under, snapshot


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}"
    assert b"Traceback" not in p.stderr, p.stderr
    return p.stdout.decode("utf-8")


# -- click's usage errors: one line, exit 1, nothing made ----------------------------------

USAGE = [
    (["task", "add", "x", "--priority", "urgent"],
     "Invalid value for '--priority' / '-p': 'urgent' is not one of 'high', 'normal', 'low'",
     "podium task add"),
    (["up", "-1"], "No such option '-1'", "podium up"),
    (["up", "abc"], "'abc' is not a valid integer", "podium up"),
    (["task", "list", "--before", "abc"], "Invalid value for '--before': 'abc' is not a valid "
     "integer", "podium task list"),
    (["remember", "x", "--kind", "bogus"], "'bogus' is not one of 'note', 'context'",
     "podium remember"),
    (["memory", "forget"], "give memory ids or --task ID", "podium memory forget"),
    (["task", "add"], "Missing argument 'PROMPT'", "podium task add"),
    (["nosuchcommand"], "No such command 'nosuchcommand'", "podium"),
    (["mcp", "serve", "--bogus"], "No such option '--bogus'", "podium mcp serve"),
    (["hook", "stop"], "Missing option '--agent' (or set $PODIUM_AGENT_ID)", "podium hook"),
]


@pytest.mark.parametrize("args,expected,command", USAGE, ids=[" ".join(c[0]) for c in USAGE])
def test_usage_error_is_one_line_exit_1_and_makes_no_store(tmp_path, store_url, args, expected,
                                                           command):
    files = files_under(tmp_path)
    line = error_line(run_cli(*args, store_url=store_url, input=b"{}"))
    assert expected in line, line
    assert line.endswith(f"(see '{command} --help')"), line
    assert files_under(tmp_path) == files


def test_report_without_an_agent_names_the_variable(store_url):
    line = error_line(run_cli("report", "--status", "busy", store_url=store_url))
    assert "PODIUM_AGENT_ID" in line, line


def test_usage_error_changes_nothing(cli, podium):
    podium.add_task("kept")
    before = snapshot(podium)
    error_line(cli("task", "add", "x", "--priority", "urgent"))
    assert snapshot(podium) == before


def test_help_version_completion_and_a_group_alone_still_work():
    assert ok(run_cli("task", "add", "--help")).startswith("Usage: podium task add ")
    assert ok(run_cli("-h")).startswith("Usage: podium ")
    assert ok(run_cli("--version")).startswith("podium, version ")
    done = run_cli(env={"_PODIUM_COMPLETE": "bash_complete", "COMP_WORDS": "podium task ad",
                        "COMP_CWORD": "2"})
    assert "add" in ok(done)
    alone = run_cli("task")  # a group without its command: its help, as click shows it
    assert b"Traceback" not in alone.stderr and b"Commands:" in alone.stdout + alone.stderr


# -- watch: a task's output cannot drive the terminal ----------------------------------------

def test_watch_shows_task_output_control_characters_as_escapes(cli, workers):
    workers.start("sh", backend="shell")
    # (\302\233: U+009B, the C1 CSI, in UTF-8)
    tid = ok(cli("task", "add", r"printf 'a\377b\033[31mred\033]0;title\007\302\233x\177\r\n"
                                r"next\n'")).strip()
    ok(cli("task", "wait", tid, "--timeout", "30"))
    p = cli("watch", "--from", "0", "--idle-timeout", "0.5", "--task", tid)
    text = ok(p)
    assert b"\x1b" not in p.stdout and b"\x07" not in p.stdout and b"\x7f" not in p.stdout
    assert "\x9b" not in text and "\r" not in text
    # (bytes that are not UTF-8 are U+FFFD, as the worker decoded them for the live output)
    assert "  | a\ufffdb\\x1b[31mred\\x1b]0;title\\x07\\x9bx\\x7f\n  | next\n" in text
    # --json keeps the output as it was
    events = [json.loads(x) for x in ok(cli("watch", "--from", "0", "--idle-timeout", "0.5",
                                            "--task", tid, "--json")).splitlines()]
    chunks = "".join(e["data"].get("chunk", "") for e in events if e["kind"] == "task.output")
    assert "\x1b[31mred" in chunks


# -- mcp serve: no ignored option, no network without --allow-remote -------------------------

@pytest.mark.parametrize("args,expected", [
    (["--port", "9999"], "--port needs --http"),
    (["--host", "127.0.0.1"], "--host needs --http"),
    (["--allow-remote"], "--allow-remote needs --http"),
    (["--http", "--host", "0.0.0.0"], "--host 0.0.0.0 is not a loopback address: the MCP server "
     "would be reachable from the network; add --allow-remote to do that anyway"),
    (["--http", "--host", "::"], "--host :: is not a loopback address"),
    (["--http", "--host", "[]"], "host is empty"),
])
def test_mcp_serve_refuses_in_one_line(tmp_path, store_url, args, expected):
    files = files_under(tmp_path)
    line = error_line(run_cli("mcp", "serve", *args, store_url=store_url, input=b"",
                              timeout=30))
    assert expected in line, line
    assert files_under(tmp_path) == files


def test_mcp_serve_allow_remote_lets_a_non_loopback_host_through(store_url):
    # (A port taken on loopback: binding every interface fails, so nothing is exposed.)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = error_line(run_cli("mcp", "serve", "--http", "--host", "0.0.0.0", "--port",
                                  str(port), "--allow-remote", store_url=store_url, timeout=30))
    assert f"cannot listen on 0.0.0.0 port {port}" in line, line


# -- task show and task list ----------------------------------------------------------------

def test_task_show_without_duration_shows_a_dash_alone(cli):
    tid = ok(cli("task", "add", "no duration yet")).strip()
    lines = ok(cli("task", "show", tid)).splitlines()
    assert "duration   -" in lines
    assert not any(x.startswith("duration") and x.endswith(" ms") for x in lines)


def test_a_long_role_or_agent_does_not_widen_task_list(cli, podium):
    role = "r" * 200
    podium.store.register_agent("a" * 200, [], "echo", socket.gethostname(), 1, 30.0, {})
    ok(cli("task", "add", "for a long role", "--role", role))
    ok(cli("task", "add", "for a long agent", "--agent", "a" * 200))
    lines = ok(cli("task", "list")).splitlines()
    assert len(lines) == 3
    assert max(len(x) for x in lines) < 150, [len(x) for x in lines]
    assert "role:rrrrrrrrrr…rrrrrrrr" in lines[1] and "aaaaaaaaaaaaaaa…aaaaaaaa" in lines[2]
    podium.store.register_agent("b-1", [role], "echo", "h" * 200, 1, 30.0, {})
    lines = ok(cli("agents")).splitlines()
    assert max(len(x) for x in lines) < 200, [len(x) for x in lines]
    assert "rrrrrrrrrrrrrrr…rrrrrrrr" in lines[2] and "hhhhhhhhhhhhhhh…hhhhhhhh" in lines[2]


def test_long_names_are_cut_in_the_middle_so_their_ends_tell_them_apart(cli, podium):
    prefix = "very-long-agent-name-" + "ü" * 40
    for n in (1, 2, 12):
        podium.store.register_agent(f"{prefix}-{n}", [], "echo", socket.gethostname(), 1,
                                    30.0, {})
    lines = ok(cli("agents")).splitlines()[1:]
    shown = [line.split()[0] for line in lines]
    assert shown == ["very-long-agent…üüüüüü-1", "very-long-agent…üüüüüü-2",
                     "very-long-agent…üüüüü-12"], shown


# -- empty --context: refused; an empty context value: a value --------------------------------

@pytest.mark.parametrize("args", [["task", "add", "x", "--context", ""],
                                  ["task", "add", "x", "-c", "  "],
                                  ["broadcast", "x", "--context", ""]])
def test_empty_context_is_refused(cli, podium, args):
    podium.add_task("kept")
    before = snapshot(podium)
    line = error_line(cli(*args))
    assert "--context is empty" in line, line
    assert snapshot(podium) == before


def test_empty_context_value_is_a_value(cli, podium):
    ok(cli("context", "set", "k", "v"))
    ok(cli("context", "set", "k", ""))  # (clears the key's text: there is no other way)
    assert podium.get_context("k").value == ""
