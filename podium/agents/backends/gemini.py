"""``gemini``: Google's Gemini CLI in headless mode, one run per task.

Runs ``gemini -p "" -o stream-json`` with the prompt (with context) on stdin — the CLI appends
``-p``'s (empty) text to its stdin, so the prompt is never in argv and never goes through a
shell. The JSON lines are parsed as they come: the assistant's ``message`` chunks are the task's
output (streamed into ``task.output`` events), the ``result`` event gives the status, its error
and the token stats, ``init`` the session id. Gemini reports no cost.

Gemini writes its errors to stderr — a missing credential ("Please set an Auth method ..."),
a bad flag — and exits non-zero without a result event; the task then fails with the end of its
stderr (the CLI's chatter and stack frames left out). Offline, it retries the API with backoff
for a long while: the task's ``--timeout`` kills its whole process group.

Options (declared in ``GeminiBackend.options``): ``model``, ``approval_mode`` (default,
auto_edit, yolo, plan), ``extra_args``, ``bin``, ``skip_trust`` (default true: the CLI refuses
to run headless in a folder not marked trusted; Podium runs it in the agent's directory, which
the user chose).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from podium.agents.backends import Backend, CappedBuffer, Finding, Option, Options, Run
from podium.agents.backends.jsonstream import (
    add_message,
    find_program,
    judge_recorded,
    program_findings,
    program_options,
    run_and_judge,
    stderr_tail,
)
from podium.agents.process import ProcessResult
from podium.errors import BackendUnavailable
from podium.models import Outcome, TaskState

INSTALL = "install the Gemini CLI with `npm install -g @google/gemini-cli`"
LOGIN_FIX = ("set GEMINI_API_KEY, or run `gemini` once and choose how to log in (it is kept in "
             "~/.gemini/settings.json)")
#: How the CLI picks its credentials from the environment (its getAuthTypeFromEnv), in order.
_ENV_AUTH = (("GOOGLE_GENAI_USE_GCA", "true"), ("GOOGLE_GENAI_USE_VERTEXAI", "true"),
             ("GOOGLE_GEMINI_BASE_URL", None), ("GEMINI_API_KEY", None),
             ("GOOGLE_API_KEY", None), ("CLOUD_SHELL", "true"),
             ("GEMINI_CLI_USE_COMPUTE_ADC", "true"))


class _Stream:
    def __init__(self, run: Run):
        self.text = CappedBuffer(run.max_output, run.emit)
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.errors: list[str] = []
        self._in_message = False

    def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "init":
            self.session_id = ev.get("session_id") or self.session_id
        elif kind == "message":
            if ev.get("role") != "assistant":
                self._in_message = False
                return
            content = ev.get("content")
            if isinstance(content, str) and content:
                # Deltas continue the current message; a new message starts after a blank line.
                add_message(self.text, content,
                            separate=not (ev.get("delta") and self._in_message))
                self._in_message = bool(ev.get("delta"))
        elif kind in ("tool_use", "tool_result"):
            self._in_message = False
        elif kind == "error":
            self.errors.append(str(ev.get("message") or ev.get("error") or ev))
        elif kind == "result":
            self.result = ev


class GeminiBackend(Backend):
    takes_context = True
    options = Options(
        Option("model", str, None, "the model (gemini --model)"),
        Option("approval_mode", str, None, "default, auto_edit, yolo or plan"),
        Option("skip_trust", bool, True, "run in a folder the CLI has not been told to trust"),
        *program_options("gemini"),
    )

    def check(self) -> None:
        self._program()

    def _program(self) -> str:
        return find_program(self.config.bin, "gemini", INSTALL)

    # -- podium doctor / podium up ---------------------------------------------------------
    def doctor(self) -> list[Finding]:
        program, found = program_findings(self.config.bin, "gemini", INSTALL)
        if program is not None:
            found.append(login_finding(self.workdir))
        return found

    def preflight(self) -> None:
        self._program()
        login = login_finding(self.workdir)
        if login.failed:
            raise BackendUnavailable(login.message())

    def _argv(self) -> list[str]:
        c = self.config
        argv = [self._program(), "-p", "", "-o", "stream-json"]
        if c.skip_trust:
            argv.append("--skip-trust")
        if c.model:
            argv += ["--model", c.model]
        if c.approval_mode:
            argv += ["--approval-mode", c.approval_mode]
        return argv + c.extra_args

    def run(self, run: Run) -> Outcome:
        return run_and_judge(self._argv(), run, _Stream(run), _outcome)


def login_finding(workdir: Path) -> Finding:
    """Whether the Gemini CLI has credentials, read where it reads them (offline; the CLI has
    no status command): the environment, then the ``.env`` files it loads, then the auth type
    chosen in its settings (and, for a Google login, the login it saved)."""
    for key, value in _ENV_AUTH:
        got = os.environ.get(key)
        if got and (value is None or got == value):
            return Finding.ok("login", f"{key} is set")
    home = Path(os.environ.get("GEMINI_CLI_HOME") or Path.home())
    for env_file in (workdir / ".gemini" / ".env", workdir / ".env",
                     home / ".gemini" / ".env", home / ".env"):
        try:
            text = env_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key = line.strip().removeprefix("export ").partition("=")[0].strip()
            if key in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI",
                       "GOOGLE_GENAI_USE_GCA"):
                return Finding.ok("login", f"{key} in {env_file}")
    settings = home / ".gemini" / "settings.json"
    chosen = _auth_type(settings)
    if chosen == "oauth-personal":
        creds = home / ".gemini" / "oauth_creds.json"
        if creds.is_file():
            return Finding.ok("login", f"logged in with Google ({creds})")
        return Finding.fail("login", "gemini is set to log in with Google but has no saved "
                                     f"login ({creds} is missing)",
                            "run `gemini` once and log in, or set GEMINI_API_KEY")
    if chosen == "gemini-api-key":  # (and no key in the environment or a .env file)
        return Finding.fail("login", f"gemini is set to use an API key ({settings}) but "
                                     "GEMINI_API_KEY is not set", "set GEMINI_API_KEY")
    if chosen:
        return Finding.ok("login", f"auth type {chosen} ({settings})")
    return Finding.fail("login", "gemini has no credentials", LOGIN_FIX)


def _auth_type(settings: Path) -> str | None:
    """The auth type chosen in the CLI's settings file (either of its layouts), if any."""
    try:
        doc = json.loads(settings.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    auth = ((doc.get("security") or {}).get("auth") or {}) \
        if isinstance(doc.get("security"), dict) else {}
    chosen = (auth.get("selectedType") if isinstance(auth, dict) else None) \
        or doc.get("selectedAuthType")
    return chosen if isinstance(chosen, str) and chosen else None


def outcome_from(run: Run, stdout: bytes, exit_code: int = 0, stderr: bytes = b"") -> Outcome:
    """The outcome of a finished ``gemini -o stream-json`` run from its recorded output."""
    return judge_recorded(_Stream(run), _outcome, stdout, exit_code, stderr)


def _outcome(stream: _Stream, res: ProcessResult, other: list[str]) -> Outcome:
    out = Outcome(
        TaskState.COMPLETED, output=stream.text.value(), stderr=res.stderr or None,
        exit_code=res.exit_code, session_id=stream.session_id,
        output_truncated=stream.text.truncated,
    )
    r = stream.result
    if r is not None:
        stats = r.get("stats") or {}
        if "input_tokens" in stats or "output_tokens" in stats:
            out.tokens_in = int(stats.get("input_tokens") or 0)
            out.tokens_out = int(stats.get("output_tokens") or 0)
    if r is not None and r.get("status") not in (None, "success"):
        err = r.get("error") or {}
        message = err.get("message") if isinstance(err, dict) else err
        out.status = TaskState.FAILED
        out.error = f"gemini: {message or r.get('status')}"
    elif r is None or res.exit_code != 0:
        out.status = TaskState.FAILED
        why = _stderr_error(res.stderr) or (stream.errors[-1] if stream.errors else "") \
            or "\n".join(other[-5:])
        head = (f"gemini exited with code {res.exit_code}" if res.exit_code
                else "gemini ended without a result")
        out.error = head + (f": {why}" if why else "")
    return out


def _stderr_error(stderr: bytes) -> str:
    """Gemini's error from stderr: its JSON error object when there is one, else the tail."""
    text = stderr[-65536:].decode("utf-8", "replace")
    start = text.find("{")
    while start >= 0:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            return str(obj["error"].get("message") or obj["error"])
        start = text.find("{", start + 1)
    return stderr_tail(stderr)
