"""The ``claude`` backend, end to end with the real Claude Code CLI.

Real parts: the ``claude`` program from npm (``@anthropic-ai/claude-code``, installed by
``scripts/test`` into ``.cache/npm``), real ``podium agent run`` worker processes, a real SQLite
store, the real ``podium`` command. The one stand-in is the paid Anthropic API: Claude Code is
pointed (``ANTHROPIC_BASE_URL``) at ``tests/anthropic_api.py``, a scripted Messages API server on
127.0.0.1 that answers canned responses and records every request. Nothing here reaches the
network beyond loopback: HOME is a fresh directory and every inherited ANTHROPIC_/CLAUDE_
variable is dropped.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from agent_clis import isolate_env, processes_in
from anthropic_api import ApiError, Hang, ScriptedAnthropic, Text, ToolUse
from helpers import wait_for
from podium.agents.backends.claude import session_uuid
from podium.models import TaskState

PREFIXES = ("ANTHROPIC_", "CLAUDE", "DISABLE_", "MCP_")


@pytest.fixture
def api(monkeypatch, tmp_path, claude_bin):
    """The scripted API, with the environment the workers (and so claude) inherit."""
    isolate_env(monkeypatch, tmp_path, PREFIXES)
    server = ScriptedAnthropic().start()
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    yield server
    server.stop()


def start(workers, workdir, claude_bin, name="c1", **options):
    opts = [f"bin={claude_bin}"] + [f"{k}={v}" for k, v in options.items()]
    proc = workers.start(name, backend="claude", options=opts, wait=False)
    workers.wait_registered(name, proc)
    return proc


def run_task(podium, prompt, timeout=60, **kw):
    t = podium.add_task(prompt, **kw)
    done = podium.wait(t.id, timeout_s=timeout)
    assert done.state.finished, f"task {t.id} still {done.state.value}"
    return done


def chunks(podium, task_id):
    return "".join(e.data["chunk"] for e in podium.events(0, 10_000, task_id=task_id)
                   if e.kind == "task.output")


def test_task_completes_with_output_tokens_and_cost(podium, workers, api, workdir, claude_bin):
    api.add(Text("The answer is 42.", input_tokens=1000, output_tokens=500))
    start(workers, workdir, claude_bin, model="claude-sonnet-4-5",
          append_system_prompt="Answer in one sentence.")
    podium.set_context("style", "Be terse.")
    t = run_task(podium, "What is six times seven?", context="Arithmetic only.")

    assert t.state is TaskState.COMPLETED, (t.error, t.stderr)
    assert t.output == b"The answer is 42."
    assert (t.tokens_in, t.tokens_out) == (1000, 500)
    # Claude Code prices the usage itself: Sonnet 4.5 is $3 in / $15 out per million tokens.
    assert t.cost_usd == pytest.approx(1000 * 3e-6 + 500 * 15e-6)
    assert uuid.UUID(t.session_id)
    assert chunks(podium, t.id) == "The answer is 42."  # streamed as it came

    # What claude sent: our model and system prompt, and the prompt with its context in front.
    [req] = api.message_requests
    assert req["model"] == "claude-sonnet-4-5"
    assert "Answer in one sentence." in json.dumps(req["system"])
    user_text = "\n".join(api.texts(req, "user"))
    assert "# Shared context\n\n## style\nBe terse." in user_text
    assert "# Task context\nArithmetic only." in user_text
    assert "# Task\nWhat is six times seven?" in user_text

    agent = podium.agent("c1")
    assert agent.meta["session_id"] == t.session_id
    assert (agent.tokens_in, agent.tokens_out) == (1000, 500)
    assert agent.cost_usd == pytest.approx(t.cost_usd)


def test_keep_session_resumes_the_agents_session(podium, workers, api, workdir, claude_bin):
    api.add(Text("Noted: the colour is teal."), Text("You told me teal."),
            Text("Still teal."))
    start(workers, workdir, claude_bin, keep_session="true")
    first = run_task(podium, "Remember this colour: teal.")
    second = run_task(podium, "Which colour did I tell you?")
    assert first.state is second.state is TaskState.COMPLETED, (first.error, second.error)
    assert second.output == b"You told me teal."
    assert second.session_id == first.session_id
    assert podium.agent("c1").meta["session_id"] == first.session_id

    # The second request carried the first task's turns: the conversation was resumed.
    req = api.message_requests[1]
    said = "\n".join(api.texts(req))
    assert "Remember this colour: teal." in said and "Noted: the colour is teal." in said
    assert "Which colour did I tell you?" in said

    # The session is kept with the agent: a restarted agent resumes it.
    workers.stop("c1")
    start(workers, workdir, claude_bin, keep_session="true")
    third = run_task(podium, "And now?")
    assert third.state is TaskState.COMPLETED, third.error
    assert third.session_id == first.session_id
    said = "\n".join(api.texts(api.message_requests[2]))
    assert "Remember this colour: teal." in said and "You told me teal." in said


def test_without_keep_session_each_task_is_fresh(podium, workers, api, workdir, claude_bin):
    api.add(Text("one"), Text("two"))
    start(workers, workdir, claude_bin)
    a = run_task(podium, "first task")
    b = run_task(podium, "second task")
    assert (a.output, b.output) == (b"one", b"two")
    assert a.session_id != b.session_id
    assert "first task" not in "\n".join(api.texts(api.message_requests[1]))


def test_named_session_from_the_cli(podium, workers, api, workdir, claude_bin, cli):
    api.add(Text("Plan: step 1."), Text("Continuing the plan."))
    start(workers, workdir, claude_bin, name="c1")
    start(workers, workdir, claude_bin, name="c2")
    first = cli("task", "add", "Draft a plan.", "--session", "release-plan", "--agent", "c1")
    assert first.returncode == 0, first.stderr
    a = podium.wait(first.stdout.decode().strip(), timeout_s=60)
    second = cli("task", "add", "Continue it.", "--session", "release-plan", "--agent", "c2")
    b = podium.wait(second.stdout.decode().strip(), timeout_s=60)
    assert a.state is b.state is TaskState.COMPLETED, (a.error, b.error)
    # The name maps to one Claude session, created by the first task, resumed by the second
    # (on another agent of the same home and workdir).
    assert a.session_id == b.session_id == session_uuid("release-plan")
    said = "\n".join(api.texts(api.message_requests[-1]))
    assert "Draft a plan." in said and "Plan: step 1." in said
    # A named session is not the agent's own.
    assert "session_id" not in podium.agent("c1").meta


def test_progress_streams_while_it_runs_and_tools_run(podium, workers, api, workdir,
                                                      claude_bin):
    (workdir / "notes.txt").write_text("the launch code is 0000\n")
    api.add(ToolUse("Read", {"file_path": str(workdir / "notes.txt")}, text="Reading the notes."),
            Hang(3.0, then=Text("The notes hold the launch code.")))
    start(workers, workdir, claude_bin)
    t = podium.add_task("What do the notes say?")
    # The first turn's text is in the events while the task still runs (the API is hanging).
    wait_for(lambda: "Reading the notes." in chunks(podium, t.id), what="streamed progress")
    assert podium.task(t.id).state is TaskState.RUNNING
    done = podium.wait(t.id, timeout_s=60)
    assert done.state is TaskState.COMPLETED, done.error
    assert done.output == b"Reading the notes.\n\nThe notes hold the launch code."
    assert chunks(podium, t.id) == done.output.decode()
    # claude ran the tool and sent its result back in the second request.
    assert "the launch code is 0000" in "\n".join(api.texts(api.message_requests[1]))


def test_api_error_fails_the_task_with_the_message(podium, workers, api, workdir, claude_bin):
    api.fallback = ApiError(400, "scripted refusal: this request is not allowed")
    start(workers, workdir, claude_bin)
    t = run_task(podium, "Do something.")
    assert t.state is TaskState.FAILED
    assert "scripted refusal: this request is not allowed" in t.error
    assert t.error.startswith("claude: ")
    assert t.output == b""


def test_not_logged_in_fails_the_task_with_the_reason(podium, workers, api, workdir, claude_bin,
                                                      monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    start(workers, workdir, claude_bin)
    t = run_task(podium, "Hello?", timeout=60)
    assert t.state is TaskState.FAILED
    assert "Not logged in" in t.error and "ANTHROPIC_API_KEY" in t.error
    assert api.message_requests == []  # it never called the API


def test_hung_api_is_cut_off_by_the_task_timeout(podium, workers, api, workdir, claude_bin):
    api.add(Hang(600))
    worker = start(workers, workdir, claude_bin)
    marker = "prompt-marker-" + uuid.uuid4().hex
    began = time.monotonic()
    t = podium.add_task(f"Think about {marker} for a long time.", timeout_s=4)
    wait_for(lambda: api.message_requests, what="claude to call the API")
    # While it runs: claude got the prompt on stdin, not in its argv.
    procs = processes_in(workdir, exclude={worker.pid})
    assert any("claude" in cmd for _, cmd in procs), procs
    assert not any(marker in cmd for _, cmd in procs)
    done = podium.wait(t.id, timeout_s=30)
    assert done.state is TaskState.FAILED
    assert done.error == "timed out after 4s"
    assert time.monotonic() - began < 15
    # The whole process group is gone.
    wait_for(lambda: not processes_in(workdir, exclude={worker.pid}), timeout=10,
             what="claude's processes to end")
