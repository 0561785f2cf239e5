"""Shared plumbing of the backends that drive an agent CLI printing JSON lines.

``claude``, ``codex`` and ``gemini`` all run a program (no shell, prompt on stdin, its own
process group — see ``podium.agents.process``) whose stdout is a stream of JSON objects, one a
line. ``run_json_cli`` runs it and hands every object to a callback *as it arrives*, so the
backend can stream the agent's text into ``task.output`` events while the program still runs;
``add_message`` puts one message of that text into the run's capped output, which streams it;
``program_options`` are the options every such backend takes (the program, more arguments);
``find_program`` resolves the program or raises ``BackendUnavailable`` saying how to install it;
``program_findings`` and ``ask`` are what their ``doctor`` checks are made of.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from podium.agents.backends import CappedBuffer, Finding, Option, Run
from podium.agents.process import ProcessResult, run_process
from podium.errors import BackendUnavailable
from podium.models import Outcome

#: Raw stdout kept per run at most (the JSON stream is larger than the text it carries).
STREAM_LIMIT_BYTES = 256 * 1024 * 1024


def program_options(program: str) -> tuple[Option, Option]:
    """``bin`` (the program) and ``extra_args`` (more arguments, after Podium's own)."""
    return (Option("bin", str, program, f"the {program} program: a path, or a name on PATH"),
            Option("extra_args", list[str], [],
                   f"more arguments for {program}, split like a shell line (never run by one)"))


def find_program(name: str, program: str, install: str) -> str:
    """The executable to run for option ``bin`` = ``name`` (a path or a name on PATH)."""
    if os.sep in name:
        if os.path.isfile(name) and os.access(name, os.X_OK):
            return os.path.abspath(name)
        raise BackendUnavailable(f"{name} is not an executable file; {install}, "
                                 f"or point --option bin= at the {program} program")
    found = shutil.which(name)
    if found is None:
        raise BackendUnavailable(f"the {name!r} program was not found on PATH; {install}, "
                                 f"or pass --option bin=/path/to/{program}")
    return found


#: Seconds a doctor's question to an agent CLI (``--version``, a login status) may take.
ASK_TIMEOUT_S = 15.0


def ask(argv: list[str], timeout: float = ASK_TIMEOUT_S,
        env: Mapping[str, str] | None = None) -> tuple[int | None, str]:
    """Run a short question to a program (stdin closed, its own process group, killed with its
    group at ``timeout``): (exit code, stdout and stderr as text); exit code None when it did
    not answer in time or could not be started (the text says why)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(env) if env is not None else None)
    except OSError as e:
        return None, f"cannot run {argv[0]}: {e.strerror or e}"
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.communicate()
        return None, f"no answer within {timeout:g}s"
    try:  # (what it left in its group: nothing of a question outlives it)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode, out.decode("utf-8", "replace")


def program_findings(name: str, program: str, install: str,
                     version: bool = True) -> tuple[str | None, list[Finding]]:
    """The program for option ``bin`` = ``name``, and its rows for ``podium doctor``: where it
    is and (``version``) what ``PROGRAM --version`` says. The path is None when it is missing
    (then the one row says how to install it)."""
    try:
        path = find_program(name, program, install)
    except BackendUnavailable:
        if os.sep in name:
            return None, [Finding.fail("program", f"{name} is not an executable file",
                                       f"{install}, or point --option bin= at the {program} "
                                       "program")]
        return None, [Finding.fail("program", f"the {name!r} program was not found on PATH",
                                   f"{install}, or pass --option bin=/path/to/{program}")]
    found = [Finding.ok("program", path)]
    if version:
        code, said = ask([path, "--version"])
        lines = said_lines(said)
        if code == 0 and lines:
            found.append(Finding.ok("version", lines[-1][:200]))
        else:
            why = (lines[-1][:200] if lines else said.strip()[:200]) or f"exit code {code}"
            found.append(Finding.warn("version", f"`{program} --version` failed: {why}",
                                      f"reinstall it: {install}"))
    return path, found


def said_lines(text: str) -> list[str]:
    """A program's answer as its lines, blank ones and known noise (warnings) left out."""
    return [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.strip().startswith(_NOISE)]


class JsonLines:
    """Splits a byte stream into lines and hands each JSON object to ``on_event``.

    Lines that are not JSON objects are kept (the last few) in ``other`` for error messages.
    """

    def __init__(self, on_event: Callable[[dict[str, Any]], None]):
        self.on_event = on_event
        self.buf = b""
        self.other: list[str] = []
        self.events = 0

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                return
            line, self.buf = self.buf[:nl], self.buf[nl + 1:]
            self._line(line)

    def close(self) -> None:
        if self.buf.strip():
            self._line(self.buf)
        self.buf = b""

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            self.other = (self.other + [text])[-20:]
            return
        self.events += 1
        self.on_event(obj)


def replay(stdout: bytes, on_event: Callable[[dict[str, Any]], None]) -> list[str]:
    """Feed recorded JSON-lines output to ``on_event`` as if it had just streamed; returns the
    lines that were not JSON objects (for error messages), as ``JsonLines.other``."""
    lines = JsonLines(on_event)
    lines.feed(stdout)
    lines.close()
    return lines.other


def add_message(output: CappedBuffer, text: str, separate: bool = False) -> None:
    """Append the agent's text; ``separate`` puts a blank line between it and earlier text
    (a new message rather than the rest of the current one)."""
    if not text:
        return
    if separate and output.size:
        text = "\n\n" + text
    output.feed(text.encode("utf-8"))


class _Tap:
    """The run as ``run_process`` sees it, with stdout going to the JSON parser instead."""

    def __init__(self, run: Run, emit: Callable[[bytes], None]):
        self._run = run
        self.emit = emit
        self.max_output = max(run.max_output, STREAM_LIMIT_BYTES)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)


def run_json_cli(argv: list[str], run: Run, stdin: bytes | None,
                 on_event: Callable[[dict[str, Any]], None],
                 env: dict[str, str] | None = None) -> tuple[ProcessResult, JsonLines]:
    """Run ``argv`` (prompt bytes on stdin), parsing its stdout's JSON lines as they come."""
    lines = JsonLines(on_event)
    # A _Tap is a Run by delegation (__getattr__), which a type checker cannot see.
    res = run_process(argv, _Tap(run, lines.feed), stdin=stdin, env=env)  # type: ignore[arg-type]
    lines.close()
    return res, lines


#: Turns what a stream saw, the finished process and its non-JSON lines into the outcome.
Judge = Callable[[Any, ProcessResult, "list[str]"], Outcome]


def run_and_judge(argv: list[str], run: Run, stream: Any, judge: Judge) -> Outcome:
    """Run a JSON-lines CLI with the prompt on stdin, its events going to ``stream.on_event``."""
    res, lines = run_json_cli(argv, run, run.prompt.encode("utf-8"), stream.on_event)
    return judge(stream, res, lines.other)


def judge_recorded(stream: Any, judge: Judge, stdout: bytes, exit_code: int,
                   stderr: bytes) -> Outcome:
    """The same judgement of a run's recorded stdout (fixtures of real CLI output)."""
    other = replay(stdout, stream.on_event)
    return judge(stream, ProcessResult(exit_code, stdout, stderr, False), other)


_NOISE = ("Warning: ", "Ripgrep is not available", "[STARTUP]", "WARNING: proceeding")


def stderr_tail(stderr: bytes, limit: int = 1500) -> str:
    """The informative end of a program's stderr (stack frames and known noise dropped)."""
    lines = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        s = line.strip()
        if not s or s.startswith("at ") or s.startswith(_NOISE):
            continue
        lines.append(s)
    text = "\n".join(lines).strip()
    return text[-limit:]
