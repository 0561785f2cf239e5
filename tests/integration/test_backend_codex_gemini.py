"""The ``codex`` and ``gemini`` backends (and every agent CLI backend's ``check``).

End to end with the real programs from npm (``@openai/codex``, ``@google/gemini-cli``, installed
by ``scripts/test`` into ``.cache/npm``), real worker processes and a real store: a missing
credential fails the task at once with the reason, and a run that cannot reach its API (both
CLIs retry for minutes) is killed, whole process group, at the task's timeout. There is no
network here, and the tests point the CLIs at a closed port on 127.0.0.1 besides, so they never
reach a real API — and no stand-in either: a successful run's output is parsed from JSON lines
recorded from the real CLIs (``tests/fixtures/``, see its README).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent_clis import isolate_env, npm_bin, processes_in
from helpers import wait_for
from podium.agents.backends import codex, gemini
from podium.models import TaskState

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PREFIXES = ("OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_", "ANTHROPIC_", "CLAUDE")


@pytest.fixture
def home(tmp_path, monkeypatch):
    return isolate_env(monkeypatch, tmp_path, PREFIXES)


def closed_port() -> int:
    """A loopback port nobody listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workers, name, backend, **options):
    proc = workers.start(name, backend=backend, wait=False,
                         options=[f"{k}={v}" for k, v in options.items()])
    workers.wait_registered(name, proc)
    return proc


def recorded(name: str, max_output: int = 1 << 20):
    """A fixture's bytes and a run to parse them with (collecting what is streamed)."""
    streamed: list[bytes] = []
    run = SimpleNamespace(max_output=max_output, emit=streamed.append)
    return (FIXTURES / name).read_bytes(), run, streamed


# -- check(): a missing program says how to install it -----------------------------------------

@pytest.mark.parametrize("backend, install", [
    ("claude", "npm install -g @anthropic-ai/claude-code"),
    ("codex", "npm install -g @openai/codex"),
    ("gemini", "npm install -g @google/gemini-cli"),
])
def test_missing_program_says_how_to_install_it(cli, backend, install, tmp_path):
    r = cli("agent", "run", "--name", "x", "--backend", backend,
            "--option", f"bin=no-such-{backend}-program")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"'no-such-{backend}-program' program was not found on PATH" in err
    assert install in err
    r = cli("agent", "run", "--name", "x", "--backend", backend,
            "--option", f"bin={tmp_path / 'missing' / backend}")
    assert r.returncode == 1 and install in r.stderr.decode()
    assert "x" not in [a["id"] for a in json.loads(cli("agents", "--json").stdout or b"[]")]


# -- codex, end to end --------------------------------------------------------------------------

def test_codex_not_logged_in_fails_at_once(podium, workers, home, workdir):
    start(workers, "cx", "codex", bin=npm_bin("codex"))
    began = time.monotonic()
    t = podium.add_task("Summarise the repository.")
    done = podium.wait(t.id, timeout_s=60)
    assert done.state is TaskState.FAILED
    assert done.error.startswith("codex is not logged in (Not logged in)")
    assert "codex login" in done.error and "CODEX_API_KEY" in done.error
    assert time.monotonic() - began < 20


def test_codex_without_network_is_killed_at_the_timeout(podium, workers, home, workdir,
                                                        monkeypatch):
    monkeypatch.setenv("CODEX_API_KEY", "sk-test-not-a-real-key")
    base = f"http://127.0.0.1:{closed_port()}/v1"
    worker = start(workers, "cx", "codex", bin=npm_bin("codex"), model="gpt-test",
                   extra_args=f"-c 'openai_base_url=\"{base}\"'")
    marker = "prompt-marker-" + uuid.uuid4().hex
    t = podium.add_task(f"Explain {marker}.", timeout_s=5)
    # It starts, and keeps retrying a connection that is refused.
    wait_for(lambda: podium.task(t.id).state is TaskState.RUNNING, what="the task to start")
    procs = wait_for(lambda: processes_in(workdir, exclude={worker.pid}), what="codex to run")
    assert any("codex" in cmd for _, cmd in procs), procs
    assert not any(marker in cmd for _, cmd in procs)  # the prompt went on stdin
    done = podium.wait(t.id, timeout_s=60)
    assert done.state is TaskState.FAILED
    assert done.error == "timed out after 5s"
    assert done.duration_ms < 12_000
    # The node wrapper and the native codex it started: the whole group was killed.
    wait_for(lambda: not processes_in(workdir, exclude={worker.pid}), timeout=10,
             what="codex's processes to end")


# -- gemini, end to end -------------------------------------------------------------------------

def test_gemini_missing_credentials_fail_at_once(podium, workers, home, workdir):
    start(workers, "gm", "gemini", bin=npm_bin("gemini"))
    began = time.monotonic()
    t = podium.add_task("Summarise the repository.")
    done = podium.wait(t.id, timeout_s=60)
    assert done.state is TaskState.FAILED
    assert done.error.startswith("gemini exited with code 41: Please set an Auth method")
    assert "GEMINI_API_KEY" in done.error
    assert done.exit_code == 41
    assert time.monotonic() - began < 30


def test_gemini_without_network_is_killed_at_the_timeout(podium, workers, home, workdir,
                                                         monkeypatch):
    # An API key, and the API's address on a closed loopback port (the CLI accepts a base URL
    # for a key set in settings.json).
    (home / ".gemini").mkdir()
    (home / ".gemini" / "settings.json").write_text(
        json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))
    monkeypatch.setenv("GEMINI_API_KEY", "test-not-a-real-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    worker = start(workers, "gm", "gemini", bin=npm_bin("gemini"))
    marker = "prompt-marker-" + uuid.uuid4().hex
    # The CLI takes a few seconds to start in a fresh HOME on a busy machine: give it time to
    # reach its retries.
    t = podium.add_task(f"Explain {marker}.", timeout_s=15)
    procs = wait_for(lambda: processes_in(workdir, exclude={worker.pid}), what="gemini to run")
    assert not any(marker in cmd for _, cmd in procs)  # the prompt went on stdin
    done = podium.wait(t.id, timeout_s=60)
    assert done.state is TaskState.FAILED
    assert done.error == "timed out after 15s"
    assert b"Retrying with backoff" in (done.stderr or b"")  # it was retrying, not stuck
    # It streamed its session start before the kill.
    assert done.session_id and uuid.UUID(done.session_id)
    wait_for(lambda: not processes_in(workdir, exclude={worker.pid}), timeout=10,
             what="gemini's processes to end")


# -- parsing recorded runs ----------------------------------------------------------------------

def test_codex_recorded_success():
    data, run, streamed = recorded("codex_exec_success.jsonl")
    out = codex.outcome_from(run, data)
    assert out.status is TaskState.COMPLETED, out.error
    assert out.output == b"Hello from the scripted Responses API"
    assert (out.tokens_in, out.tokens_out, out.cost_usd) == (120, 9, None)
    assert out.session_id == "01a214d5-f0ad-7702-a67a-466e580e55eb"
    assert b"".join(streamed) == out.output


def test_codex_recorded_failure():
    data, run, _ = recorded("codex_exec_failed.jsonl")
    out = codex.outcome_from(run, data, exit_code=1)
    assert out.status is TaskState.FAILED
    assert out.error.startswith("codex: ")
    assert "API key not valid. Please pass a valid API key." in out.error
    assert out.output == b""


def test_codex_run_with_tools():
    data, run, streamed = recorded("codex_exec_tools.jsonl")
    out = codex.outcome_from(run, data)
    assert out.status is TaskState.COMPLETED
    # Only the agent's messages are output: not its reasoning, commands or file changes.
    assert out.output == b"The tests run with `make test`.\n\nI added that to the README."
    assert (out.tokens_in, out.tokens_out) == (24763, 122)
    assert b"".join(streamed) == out.output


def test_codex_cut_short_without_a_completed_turn():
    data, run, _ = recorded("codex_exec_success.jsonl")
    lines = data.splitlines(keepends=True)
    out = codex.outcome_from(run, b"".join(lines[:3]), exit_code=0)
    assert out.status is TaskState.FAILED
    assert out.error.startswith("codex ended without completing its turn: Reconnecting... 2/5")


def test_gemini_recorded_success():
    data, run, streamed = recorded("gemini_stream_success.jsonl")
    out = gemini.outcome_from(run, data)
    assert out.status is TaskState.COMPLETED, out.error
    assert out.output == b"Hello from the scripted Gemini"  # two deltas, one message
    assert (out.tokens_in, out.tokens_out, out.cost_usd) == (42, 10, None)
    assert out.session_id == "4448b705-37c1-4c1a-823a-917a156079db"
    assert streamed == [b"Hello from ", b"the scripted Gemini"]


def test_gemini_recorded_api_error():
    data, run, _ = recorded("gemini_stream_error.jsonl")
    out = gemini.outcome_from(run, data, exit_code=1)
    assert out.status is TaskState.FAILED
    assert out.error.startswith("gemini: [API Error: ")
    assert "API key not valid" in out.error


def test_gemini_run_with_tools():
    data, run, _ = recorded("gemini_stream_tools.jsonl")
    out = gemini.outcome_from(run, data)
    assert out.status is TaskState.COMPLETED
    assert out.output == b"Let me read the file.\n\nIt says: ship on Friday."
    assert (out.tokens_in, out.tokens_out) == (1500, 150)


def test_gemini_error_on_stderr_only():
    # With -o json (and for startup errors) gemini reports on stderr, as a JSON object.
    stderr = (b"Warning: 256-color support not detected.\n"
              b'{\n  "session_id": "x",\n  "error": {\n    "type": "Error",\n'
              b'    "message": "Please set an Auth method",\n    "code": 41\n  }\n}\n')
    _, run, _ = recorded("gemini_stream_success.jsonl")
    out = gemini.outcome_from(run, b"", exit_code=41, stderr=stderr)
    assert out.status is TaskState.FAILED
    assert out.error == "gemini exited with code 41: Please set an Auth method"


def test_output_is_capped_at_the_limit():
    data, run, streamed = recorded("codex_exec_tools.jsonl", max_output=10)
    out = codex.outcome_from(run, data)
    assert out.output == b"The tests " and out.output_truncated
    assert b"".join(streamed) == out.output
