"""``shell``: the prompt is a shell command, run by ``/bin/sh`` in the agent's directory.

This is the one backend whose prompt goes through a shell, on purpose. A prompt too long for
one argument (Linux caps one at 128 KiB) is written to a private script file instead of
``sh -c``. The command sees ``PODIUM_TASK_ID``, ``PODIUM_AGENT_ID``, ``PODIUM_STORE`` and
``PODIUM_TASK_CONTEXT`` (the task's context) in its environment, so it can call ``podium`` back.
stdout is the output, stderr is kept apart, the exit code decides completed or failed. Option
``shell`` names another shell (a path, or a name on PATH).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from podium.agents.backends import Backend, Finding, Option, Options, Run
from podium.agents.process import run_process
from podium.models import Outcome, TaskState

_ARG_MAX = 100_000


class ShellBackend(Backend):
    takes_context = False
    options = Options(Option("shell", str, "/bin/sh", "the shell that runs each task's command"))

    def doctor(self) -> list[Finding]:
        """The shell is there and can be run (a lookup, nothing started)."""
        shell = self.config.shell
        found = (shell if os.path.isfile(shell) and os.access(shell, os.X_OK) else None) \
            if os.sep in shell else shutil.which(shell)
        if found is None:
            return [Finding.fail("program", f"shell {shell!r} not found or not executable",
                                 "install it, or choose another with --option shell=PATH")]
        return [Finding.ok("program", found)]

    def run(self, run: Run) -> Outcome:
        shell = self.config.shell
        if "\x00" in run.prompt:
            return Outcome(TaskState.FAILED, error="the command contains a NUL byte")
        script = None
        if len(run.prompt.encode("utf-8")) < _ARG_MAX:
            argv = [shell, "-c", run.prompt]
        else:
            fd, script = tempfile.mkstemp(prefix="podium-task-", suffix=".sh")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(run.prompt)
            argv = [shell, script]
        try:
            res = run_process(argv, run)
        finally:
            if script:
                os.unlink(script)
        ok = res.exit_code == 0
        error = None
        if not ok:
            tail = res.stderr[-2000:].decode("utf-8", "replace").strip()
            error = f"exit code {res.exit_code}" + (f": {tail}" if tail else "")
        return Outcome(
            TaskState.COMPLETED if ok else TaskState.FAILED,
            output=res.stdout, stderr=res.stderr or None, error=error,
            exit_code=res.exit_code, output_truncated=res.truncated,
        )
