"""``claude``: Claude Code in print mode, one run per task.

Runs ``claude -p --output-format stream-json --verbose`` in the agent's directory with the
prompt (shared and task context in front: ``takes_context``) on stdin — never in argv, never
through a shell. The stream is parsed as it arrives: the assistant's text is the task's output
(messages separated by a blank line) and is streamed into ``task.output`` events; the final
``result`` event gives the tokens (input counts cache reads and writes too), ``total_cost_usd``,
the session id and ``is_error`` (a failed task with Claude's message: API errors, "Not logged in",
budget or turn limits).

Options (``--option key=value``, declared in ``ClaudeBackend.options``): ``model``,
``permission_mode``, ``allowed_tools``, ``disallowed_tools``, ``append_system_prompt``,
``mcp_config`` (a file or JSON), ``extra_args`` (more arguments, split like a shell line),
``bin`` (the claude program), ``keep_session``.

Sessions. Every run's Claude session id is recorded with the result and with the agent
(``meta.session_id``, kept when the agent restarts). With ``keep_session=true`` a task resumes
the agent's previous session (``--resume``), so the agent remembers earlier tasks. A task added
with ``--session NAME`` runs in that named session whatever the agent: the name maps to a fixed
UUID (uuid5), created with ``--session-id`` on first use and resumed after; named sessions do
not change the agent's own. Claude keeps sessions per user and working directory, so tasks
sharing a session should run on agents with the same home and workdir, one at a time. (A task
retried after a failed attempt continues the session that attempt recorded.)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from podium.agents.backends import Backend, CappedBuffer, Finding, Option, Options, Run
from podium.agents.backends.jsonstream import (
    add_message,
    ask,
    find_program,
    program_findings,
    program_options,
    run_json_cli,
    stderr_tail,
)
from podium.errors import BackendUnavailable, PodiumError
from podium.models import Outcome, TaskState

INSTALL = "install Claude Code with `npm install -g @anthropic-ai/claude-code`"
#: Named sessions map to UUIDs in this namespace (stable across hosts and versions).
SESSION_NAMESPACE = uuid.UUID("5f0c8a52-3d3e-4f55-9a57-6f64b0d1c1a7")
LOGIN_FIX = "run `claude` once and log in, or set ANTHROPIC_API_KEY"
#: Variables with which Claude Code needs no login of its own (a key, a token, another cloud).
CREDENTIAL_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                   "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")


def session_uuid(name: str) -> str:
    """The Claude session id for a task's session name (a UUID is used as it is)."""
    try:
        return str(uuid.UUID(name))
    except ValueError:
        return str(uuid.uuid5(SESSION_NAMESPACE, name))


class _Stream:
    """What one ``claude`` run said, gathered from its events as they come."""

    def __init__(self, run: Run):
        self.text = CappedBuffer(run.max_output, run.emit)
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None

    def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if ev.get("session_id") and not self.session_id:
            self.session_id = ev["session_id"]
        if kind == "assistant":
            if ev.get("parent_tool_use_id") or ev.get("is_api_error_message"):
                return  # a subagent's turn, or an error the result event reports
            message = ev.get("message") or {}
            texts = [b.get("text", "") for b in message.get("content") or []
                     if isinstance(b, dict) and b.get("type") == "text"]
            joined = "".join(texts)
            if joined.strip():
                add_message(self.text, joined, separate=True)
        elif kind == "result":
            self.result = ev
            if ev.get("session_id"):
                self.session_id = ev["session_id"]


class ClaudeBackend(Backend):
    takes_context = True
    options = Options(
        Option("model", str, None, "the model (claude --model), e.g. sonnet"),
        Option("permission_mode", str, None, "claude --permission-mode, e.g. acceptEdits"),
        Option("allowed_tools", str, None, "tools allowed without asking (--allowedTools)"),
        Option("disallowed_tools", str, None, "tools refused (--disallowedTools)"),
        Option("append_system_prompt", str, None, "text appended to the system prompt"),
        Option("mcp_config", str, None, "MCP servers for claude: a file or JSON (--mcp-config)"),
        Option("keep_session", bool, False, "each task resumes the agent's previous session"),
        *program_options("claude"),
    )

    def check(self) -> None:
        self._program()

    def _program(self) -> str:
        return find_program(self.config.bin, "claude", INSTALL)

    # -- podium doctor / podium up ---------------------------------------------------------
    def doctor(self) -> list[Finding]:
        program, found = program_findings(self.config.bin, "claude", INSTALL)
        if program is not None:
            found.append(login_finding(program))
        return found

    def preflight(self) -> None:
        login = login_finding(self._program())
        if login.failed:
            raise BackendUnavailable(login.message())

    # -- the agent's own session ----------------------------------------------------------
    def attach(self, store, agent_id: str) -> None:
        super().attach(store, agent_id)
        self._session = store.get_agent(agent_id).meta.get("session_id")

    def _remember(self, session_id: str) -> None:
        self._session = session_id
        store = getattr(self, "store", None)
        if store is not None:
            try:
                store.set_agent_session(self.agent_id, session_id)
            except PodiumError:
                pass  # best effort: the result keeps the session id too

    # -- a run --------------------------------------------------------------------------
    def _argv(self) -> list[str]:
        c = self.config
        argv = [self._program(), "-p", "--output-format", "stream-json", "--verbose"]
        if c.model:
            argv += ["--model", c.model]
        if c.permission_mode:
            argv += ["--permission-mode", c.permission_mode]
        # The list options take several values: the "--flag=value" form keeps them to one.
        if c.allowed_tools:
            argv.append("--allowedTools=" + c.allowed_tools)
        if c.disallowed_tools:
            argv.append("--disallowedTools=" + c.disallowed_tools)
        if c.mcp_config:
            argv.append("--mcp-config=" + c.mcp_config)
        if c.append_system_prompt:
            argv += ["--append-system-prompt", c.append_system_prompt]
        return argv + c.extra_args

    def run(self, run: Run) -> Outcome:
        named = run.task.session_id  # the session the task asked for (--session NAME)
        if named:
            sid = session_uuid(named)
            plans = [["--resume", sid], ["--session-id", sid], ["--resume", sid]]
        elif self.config.keep_session and getattr(self, "_session", None):
            plans = [["--resume", self._session], []]
        else:
            plans = [[]]
        base = self._argv()
        stdin = run.prompt.encode("utf-8")
        for i, session_args in enumerate(plans):
            stream = _Stream(run)
            res, lines = run_json_cli(base + session_args, run, stdin, stream.on_event)
            last = i == len(plans) - 1
            if not last and not run.cancelled and _session_missing_or_taken(stream, res.stderr):
                continue  # first use of a named session, or the agent's session is gone
            break
        outcome = self._outcome(stream, res, lines.other)
        if outcome.session_id and not named and outcome.status is TaskState.COMPLETED:
            self._remember(outcome.session_id)
        return outcome

    def _outcome(self, stream: _Stream, res, other: list[str]) -> Outcome:
        r = stream.result
        out = Outcome(
            TaskState.COMPLETED, output=stream.text.value(), stderr=res.stderr or None,
            exit_code=res.exit_code, session_id=stream.session_id,
            output_truncated=stream.text.truncated,
        )
        if r is not None:
            usage = r.get("usage") or {}
            if usage:
                out.tokens_in = sum(int(usage.get(k) or 0) for k in (
                    "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
                out.tokens_out = int(usage.get("output_tokens") or 0)
            if r.get("total_cost_usd") is not None:
                out.cost_usd = float(r["total_cost_usd"])
            if not out.output and not r.get("is_error") and isinstance(r.get("result"), str):
                out.output = r["result"].encode("utf-8")  # no assistant events: the final text
        if r is not None and r.get("is_error"):
            out.status = TaskState.FAILED
            out.error = "claude: " + _result_error(r)
        elif r is None:
            out.status = TaskState.FAILED
            why = stderr_tail(res.stderr) or "\n".join(other[-5:])
            out.error = (f"claude exited with code {res.exit_code}" if res.exit_code
                         else "claude ended without a result") + (f": {why}" if why else "")
        elif res.exit_code:
            out.status = TaskState.FAILED
            out.error = f"claude exited with code {res.exit_code}"
        if out.error and "not logged in" in out.error.lower():
            out.error += " (log in by running `claude` once, or set ANTHROPIC_API_KEY)"
        return out


def login_finding(program: str) -> Finding:
    """Whether Claude Code can authenticate, as it says itself: ``claude auth status`` (offline,
    JSON, exit 1 when logged out); for a CLI without that command, the credentials it reads
    (a variable, or ``~/.claude/.credentials.json``)."""
    env = {**os.environ, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    code, said = ask([program, "auth", "status", "--json"], env=env)
    status = _json_object(said)
    if status is not None and "loggedIn" in status:
        if status["loggedIn"] is True:
            how = status.get("apiKeySource") or status.get("authMethod") or "yes"
            provider = status.get("apiProvider")
            extra = f", {provider}" if provider and provider != "firstParty" else ""
            return Finding.ok("login", f"logged in ({how}{extra})")
        return Finding.fail("login", "claude is not logged in", LOGIN_FIX)
    # An older CLI (no ``auth status``), or one that did not answer: what it would read.
    given = [k for k in CREDENTIAL_VARS if os.environ.get(k)]
    if given:
        return Finding.ok("login", f"{given[0]} is set")
    config = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")
    if (config / ".credentials.json").is_file():
        return Finding.ok("login", f"credentials in {config / '.credentials.json'}")
    why = "no answer in time" if code is None else "`claude auth status` gave no status"
    return Finding.warn("login", f"cannot tell whether claude is logged in ({why}; no "
                                 "ANTHROPIC_API_KEY, no ~/.claude/.credentials.json)", LOGIN_FIX)


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a program's output (after any warning lines), or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _result_error(r: dict[str, Any]) -> str:
    errors = [str(e) for e in r.get("errors") or [] if e]
    message = r.get("result") if isinstance(r.get("result"), str) else None
    text = message or "; ".join(errors) or str(r.get("subtype") or "error")
    return text.strip()


def _session_missing_or_taken(stream: _Stream, stderr: bytes) -> bool:
    """The run stopped at once because the session to resume does not exist (or the one to
    create already does): worth the next plan."""
    if stream.text.size:
        return False
    said = " ".join(str(e) for e in (stream.result or {}).get("errors") or [])
    said += " " + stderr.decode("utf-8", "replace")
    return "No conversation found" in said or "already in use" in said
