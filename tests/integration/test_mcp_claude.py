"""The real Claude Code CLI as the orchestrator of a Podium team, through ``podium mcp serve``.

Real parts: the ``claude`` program from npm (``@anthropic-ai/claude-code``, installed by
``scripts/test`` into ``.cache/npm``) run headless (``claude -p``) with ``--mcp-config`` pointing
at ``python -m podium --store URL mcp serve`` over stdio (Claude Code spawns the server itself),
a real ``podium agent run`` worker (echo backend) pulling from a real SQLite store.

The one stand-in is the paid Anthropic API: Claude Code is pointed (``ANTHROPIC_BASE_URL``) at
``tests/anthropic_api.py``, a scripted Messages API server on 127.0.0.1 that plays the model's
turns from canned responses (here: tool_use blocks calling the podium MCP tools, then a final
text) and records every request, so the test can check the tool list and tool results Claude
Code sent. Nothing reaches the network beyond loopback: HOME is a fresh directory and every
inherited ANTHROPIC_/CLAUDE_/MCP_ variable is dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from agent_clis import isolate_env, processes_in
from anthropic_api import ApiError, ScriptedAnthropic, Text, ToolUse
from helpers import wait_for
from podium.models import TaskState

PREFIXES = ("ANTHROPIC_", "CLAUDE", "DISABLE_", "MCP_")
SERVER = "podium"
ASSIGN = f"mcp__{SERVER}__assign_task"
WAIT = f"mcp__{SERVER}__wait_for_task"
RESULT = f"mcp__{SERVER}__get_task_result"
FINAL = "Podium ran the task; its output is back. ✅"

# Quotes, shell metacharacters, backticks, a backslash, newlines (CRLF too), a tab and unicode
# (accents, CJK, RTL, emoji, a combining mark, a line separator) and a JSON-looking tail: the
# assign_task input must reach the store byte for byte.
WEIRD = ("it's \"quoted\" $HOME ${X:-y} `uname -a` $(id) \\ backslash\n"
         "line 2\twith tab\r\nnaïve café 日本語 עברית 🎼🎻 e\u0301 \u2028 — end\n"
         '{"looks": ["like", "json"]}')


class DynamicAPI(ScriptedAnthropic):
    """The scripted API, where a script entry may also be a function of the request body that
    returns the response (a turn that depends on what an earlier tool returned, e.g. a task
    id). A function that raises answers with an API error carrying its message, and keeps it
    in ``problems`` for the test to report."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.problems: list[str] = []

    def _next(self, body: Any):
        r = super()._next(body)
        if callable(r):
            if self.problems:  # the conversation already went wrong: do not pile up errors
                return ApiError(400, "scripted API (test): stopped after an earlier problem")
            try:
                return r(body)
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.problems.append(f"{type(e).__name__}: {e}")
                return ApiError(400, f"scripted API (test): {e}")
        return r


def tool_results(body: dict) -> dict[str, dict]:
    """The tool_result blocks of a request's last user message, by tool_use_id."""
    last = body["messages"][-1]
    assert last["role"] == "user", last
    content = last["content"] if isinstance(last["content"], list) else []
    return {b["tool_use_id"]: b for b in content if b.get("type") == "tool_result"}


def result_json(block: dict) -> dict:
    """The JSON a podium tool returned, from the tool_result block Claude Code sent back (Claude
    Code may append its own ``<system-reminder>`` notes after the tool's text)."""
    assert not block.get("is_error"), f"the tool call failed: {block}"
    c = block.get("content")
    text = c if isinstance(c, str) else "".join(b.get("text", "") for b in c or []
                                               if b.get("type") == "text")
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError as e:
        raise AssertionError(f"the tool_result is not the tool's JSON ({e}): {block!r}") from None
    rest = text[end:].strip()
    assert not rest or rest.startswith("<system-reminder>"), f"unexpected tail: {rest!r}"
    return value


def tool_names(body: dict) -> list[str]:
    return [t.get("name") for t in body.get("tools") or []]


@pytest.fixture
def api(monkeypatch, tmp_path, claude_bin):
    isolate_env(monkeypatch, tmp_path, PREFIXES)
    server = DynamicAPI().start()
    yield server
    server.stop()


def test_claude_code_orchestrates_a_podium_agent_over_mcp(store_url, podium, workers, api,
                                                          claude_bin, tmp_path):
    began = time.monotonic()
    workers.start("w1", backend="echo")

    seen: dict[str, Any] = {}

    def turn1(body: dict):
        """Claude Code offers the podium tools: call assign_task with the awkward prompt."""
        names = tool_names(body)
        missing = sorted({ASSIGN, WAIT, RESULT} - set(names))
        if missing:
            raise AssertionError(f"Claude Code does not offer {missing} (did the podium MCP "
                                 f"server start and connect?); tools offered: {names}")
        return ToolUse(ASSIGN, {"prompt": WEIRD, "priority": "high"}, id="toolu_assign",
                       text="I'll hand this to a Podium agent.")

    def turn2(body: dict):
        """After assign_task: its tool_result holds the new task id; wait for that task."""
        results = tool_results(body)
        if "toolu_assign" not in results:
            raise AssertionError(f"no assign_task result in turn 2: {body['messages'][-1]}")
        task = result_json(results["toolu_assign"])
        seen["assigned"] = task
        seen["procs"] = processes_in(project)  # the MCP server claude started, running now
        return ToolUse(WAIT, {"task_id": task["id"], "timeout_s": 30}, id="toolu_wait",
                       text="Waiting for the agent.")

    def turn3(body: dict):
        """After wait_for_task: read the result once more with get_task_result."""
        return ToolUse(RESULT, {"task_id": seen["assigned"]["id"]}, id="toolu_result")

    api.add(
        turn1,
        turn2,
        turn3,
        Text(FINAL),
    )

    project = tmp_path / "project"  # claude's working directory (and so its MCP server's)
    project.mkdir()
    mcp_config = tmp_path / "mcp.json"
    mcp_config.write_text(json.dumps({"mcpServers": {SERVER: {
        "type": "stdio",
        "command": sys.executable,
        "args": ["-m", "podium", "--store", store_url, "mcp", "serve"],
        "env": {},
    }}}))
    # ENABLE_TOOL_SEARCH=false: Claude Code offers MCP tools with their schemas in the request's
    # tools list (by default it defers them behind its ToolSearch tool when there are many).
    env = {**os.environ, **api.env(), "MCP_TIMEOUT": "30000", "ENABLE_TOOL_SEARCH": "false"}
    argv = [claude_bin, "-p", "Use Podium to run the task, then report its output.",
            "--output-format", "json", "--model", "claude-sonnet-4-5",
            "--mcp-config", str(mcp_config), "--strict-mcp-config",
            "--allowedTools", f"{ASSIGN},{WAIT},{RESULT}"]
    try:
        proc = subprocess.run(argv, cwd=project, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=50)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"claude did not finish in 50s; requests so far: "
                    f"{[tool_names(b)[:3] for b in api.message_requests]}; problems "
                    f"{api.problems}; stderr: {(e.stderr or b'')[-2000:]!r}")
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert not api.problems, f"the scripted turns found problems: {api.problems}\n{out}\n{err}"
    assert proc.returncode == 0, f"claude exited {proc.returncode}\nstdout: {out}\nstderr: {err}"

    # Claude Code offered the podium MCP tools (under the names it gives MCP tools).
    reqs = api.message_requests
    names = tool_names(reqs[0])
    missing = {ASSIGN, WAIT, RESULT} - set(names)
    assert not missing, (f"Claude Code did not expose {sorted(missing)}; the podium MCP server "
                         f"may not have connected. Tools offered: {names}\nstderr: {err}")
    schema = {t["name"]: t for t in reqs[0]["tools"]}[ASSIGN]["input_schema"]
    assert schema["required"] == ["prompt"] and "prompt" in schema["properties"], schema
    assert len(reqs) == 4, [b["messages"][-1] for b in reqs]

    # Claude Code ran the scripted tool calls: each is in the history it sent back.
    calls = [b for m in reqs[3]["messages"] if m["role"] == "assistant"
             for b in (m["content"] if isinstance(m["content"], list) else [])
             if b.get("type") == "tool_use"]
    assert [(c["name"], c["id"]) for c in calls] == [
        (ASSIGN, "toolu_assign"), (WAIT, "toolu_wait"), (RESULT, "toolu_result")], calls
    assert calls[0]["input"]["prompt"] == WEIRD
    assert any("mcp serve" in cmd for _, cmd in seen["procs"]), seen["procs"]

    # Turn 2: Claude Code ran assign_task and sent back the new task's id.
    task_id = seen["assigned"]["id"]
    assert task_id.startswith("t-") and seen["assigned"]["prompt"] == WEIRD
    assert seen["assigned"]["priority"] == "high"
    assert task_id in json.dumps(tool_results(reqs[1])["toolu_assign"])

    # The task really ran on the Podium agent: completed in the store, byte-exact both ways.
    task = podium.task(task_id)
    assert task.state is TaskState.COMPLETED, (task.state, task.error)
    assert task.agent_id == "w1"
    assert task.prompt == WEIRD
    assert task.output == WEIRD.encode("utf-8")
    assert [t.id for t in podium.tasks()] == [task_id]  # one task, no retries or duplicates

    # Turn 3: wait_for_task's result, as Claude Code sent it back to the API, holds the output.
    waited = result_json(tool_results(reqs[2])["toolu_wait"])
    assert waited["finished"] is True and waited["status"] == "completed", waited
    assert waited["task_id"] == task_id and waited["agent_id"] == "w1"
    assert waited["output"] == WEIRD

    # Turn 4: so does get_task_result's.
    got = result_json(tool_results(reqs[3])["toolu_result"])
    assert got["status"] == "completed" and got["task_id"] == task_id
    assert got["output"] == WEIRD

    # claude finished with the model's final text.
    report = json.loads(out)
    assert report.get("is_error") is False and report.get("result") == FINAL, report
    assert not report.get("permission_denials"), report
    assert api.remaining == 0
    # The MCP server Claude Code started (in its working directory) went away with it.
    wait_for(lambda: not processes_in(project), timeout=10, what="podium mcp serve to exit")
    assert time.monotonic() - began < 60
