"""``codex``: OpenAI's Codex CLI, ``codex exec --json``, one run per task.

The prompt (with context) goes on stdin (``-`` as the prompt argument) — never in argv, never
through a shell. The JSON lines are parsed as they come: ``agent_message`` items are the task's
output (streamed into ``task.output`` events), ``turn.completed`` gives the token usage,
``thread.started`` the session (thread) id, ``turn.failed`` (or a non-zero exit) fails the task
with Codex's message. Codex reports no cost.

Credentials: without ``CODEX_API_KEY``, ``OPENAI_API_KEY`` or ``CODEX_ACCESS_TOKEN`` in the
environment, each task first asks ``codex login status``; when that says it is not logged in
the task fails at once with that reason (offline, ``codex exec`` would otherwise retry the
network forever; with credentials but no network it still does, and the task's ``--timeout``
kills its whole process group). ``check_login=false`` skips the question (custom providers).

Options (declared in ``CodexBackend.options``): ``model``, ``sandbox`` (read-only,
workspace-write, danger-full-access), ``profile``, ``extra_args``, ``bin``, ``check_login``
(default true), ``skip_git_repo_check`` (default true: the agent's directory need not be a Git
repository).
"""

from __future__ import annotations

import os
from typing import Any

from podium.agents.backends import Backend, CappedBuffer, Finding, Option, Options, Run
from podium.agents.backends.jsonstream import (
    add_message,
    ask,
    find_program,
    judge_recorded,
    program_findings,
    program_options,
    run_and_judge,
    said_lines,
    stderr_tail,
)
from podium.agents.process import ProcessResult, run_process
from podium.errors import BackendUnavailable
from podium.models import Outcome, TaskState

INSTALL = "install the Codex CLI with `npm install -g @openai/codex`"
CREDENTIAL_VARS = ("CODEX_API_KEY", "OPENAI_API_KEY", "CODEX_ACCESS_TOKEN")
LOGIN_FIX = "run `codex login`, or set CODEX_API_KEY in the agents' environment"


class _Stream:
    def __init__(self, run: Run):
        self.text = CappedBuffer(run.max_output, run.emit)
        self.session_id: str | None = None
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.failed: str | None = None
        self.errors: list[str] = []  # non-fatal: reconnects, fallbacks
        self.completed = False

    def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "thread.started":
            self.session_id = ev.get("thread_id") or self.session_id
        elif kind == "item.completed":
            item = ev.get("item") or {}
            if item.get("type") == "agent_message":
                add_message(self.text, item.get("text") or "", separate=True)
            elif item.get("type") == "error" and item.get("message"):
                self.errors.append(str(item["message"]))
        elif kind == "turn.completed":
            self.completed = True
            usage = ev.get("usage") or {}
            self.tokens_in = (self.tokens_in or 0) + int(usage.get("input_tokens") or 0)
            self.tokens_out = (self.tokens_out or 0) + int(usage.get("output_tokens") or 0)
        elif kind == "turn.failed":
            err = ev.get("error") or {}
            self.failed = str(err.get("message") or err or "turn failed")
        elif kind == "error" and ev.get("message"):
            self.errors.append(str(ev["message"]))


class CodexBackend(Backend):
    takes_context = True
    options = Options(
        Option("model", str, None, "the model (codex --model)"),
        Option("sandbox", str, None, "read-only, workspace-write or danger-full-access"),
        Option("profile", str, None, "a profile of codex's config.toml (--profile)"),
        Option("check_login", bool, True, "fail a task at once when codex is not logged in"),
        Option("skip_git_repo_check", bool, True,
               "run in a directory that is not a Git repository"),
        *program_options("codex"),
    )

    def check(self) -> None:
        self._program()

    def _program(self) -> str:
        return find_program(self.config.bin, "codex", INSTALL)

    # -- podium doctor / podium up ---------------------------------------------------------
    def doctor(self) -> list[Finding]:
        program, found = program_findings(self.config.bin, "codex", INSTALL)
        if program is not None:
            found.append(self._login(program))
        return found

    def preflight(self) -> None:
        login = self._login(self._program())
        if login.failed:
            raise BackendUnavailable(login.message())

    def _login(self, program: str) -> Finding:
        """What each task would ask first (``_not_logged_in``), asked now."""
        given = [k for k in CREDENTIAL_VARS if os.environ.get(k)]
        if given:
            return Finding.ok("login", f"{given[0]} is set")
        if not self.config.check_login:
            return Finding.warn("login", "not checked (option check_login=false)")
        code, said = ask([program, "login", "status"])
        lines = said_lines(said)
        if code == 0:
            return Finding.ok("login", lines[-1][:200] if lines else "logged in")
        if code is None:
            return Finding.warn("login", f"`codex login status`: {said.strip()}", LOGIN_FIX)
        return Finding.fail("login", "codex is not logged in", LOGIN_FIX)

    def _argv(self) -> list[str]:
        c = self.config
        argv = [self._program(), "exec", "--json", "--color", "never"]
        if c.skip_git_repo_check:
            argv.append("--skip-git-repo-check")
        if c.model:
            argv += ["--model", c.model]
        if c.sandbox:
            argv += ["--sandbox", c.sandbox]
        if c.profile:
            argv += ["--profile", c.profile]
        return argv + c.extra_args + ["-"]  # "-": the prompt is on stdin

    def _not_logged_in(self, run: Run) -> str | None:
        """Why codex cannot authenticate, or None when it can (or we cannot tell)."""
        if not self.config.check_login:
            return None
        if any(run.env.get(k) for k in CREDENTIAL_VARS):
            return None
        res = run_process([self._program(), "login", "status"], run)
        if res.exit_code == 0 or run.cancelled:
            return None
        said = stderr_tail(res.stderr + b"\n" + res.stdout, 300) or f"exit code {res.exit_code}"
        return (f"codex is not logged in ({said}): run `codex login`, or set CODEX_API_KEY "
                "in the agent's environment")

    def run(self, run: Run) -> Outcome:
        argv = self._argv()
        why = self._not_logged_in(run)
        if why:
            return Outcome(TaskState.FAILED, error=why)
        return run_and_judge(argv, run, _Stream(run), _outcome)


def outcome_from(run: Run, stdout: bytes, exit_code: int = 0, stderr: bytes = b"") -> Outcome:
    """The outcome of a finished ``codex exec --json`` run from its recorded output."""
    return judge_recorded(_Stream(run), _outcome, stdout, exit_code, stderr)


def _outcome(stream: _Stream, res: ProcessResult, other: list[str]) -> Outcome:
    out = Outcome(
        TaskState.COMPLETED, output=stream.text.value(), stderr=res.stderr or None,
        exit_code=res.exit_code, tokens_in=stream.tokens_in, tokens_out=stream.tokens_out,
        session_id=stream.session_id, output_truncated=stream.text.truncated,
    )
    if stream.failed:
        out.status, out.error = TaskState.FAILED, f"codex: {stream.failed}"
    elif res.exit_code != 0 or not stream.completed:
        out.status = TaskState.FAILED
        why = (stream.errors[-1] if stream.errors else "") or stderr_tail(res.stderr) \
            or "\n".join(other[-5:])
        head = (f"codex exited with code {res.exit_code}" if res.exit_code
                else "codex ended without completing its turn")
        out.error = head + (f": {why}" if why else "")
    return out
