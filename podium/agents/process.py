"""Running a backend's program: no shell, its own process group, output kept exact.

The program gets its input on stdin (written by a thread, so a huge prompt cannot deadlock
against a program that writes before it reads), stdout and stderr are read by threads into
byte buffers capped at ``run.max_output``, and stdout is streamed to ``run.emit``. A cancel or
timeout kills the whole process group (see ``Run.cancel``).
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass

from podium.agents.backends import Run

_CHUNK = 65536


@dataclass
class ProcessResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool


class _Collector:
    def __init__(self, limit: int, emit=None):
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.truncated = False
        self.emit = emit

    def feed(self, chunk: bytes) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.truncated = True
            return
        if len(chunk) > room:
            chunk = chunk[:room]
            self.truncated = True
        self.parts.append(chunk)
        self.size += len(chunk)
        if self.emit is not None:
            self.emit(chunk)

    def value(self) -> bytes:
        return b"".join(self.parts)


def _pump(fd, collector: _Collector) -> None:
    try:
        while True:
            chunk = os.read(fd.fileno(), _CHUNK)
            if not chunk:
                return
            collector.feed(chunk)
    except OSError:
        return
    finally:
        fd.close()


def _feed_stdin(pipe, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            n = os.write(pipe.fileno(), view[:_CHUNK])
            view = view[n:]
    except (BrokenPipeError, OSError):
        pass  # the program stopped reading; its exit code tells the rest
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def run_process(argv: list[str], run: Run, stdin: bytes | None = None,
                cwd: str | None = None, env: dict[str, str] | None = None) -> ProcessResult:
    """Run ``argv`` to completion (or until ``run`` is cancelled) and collect its output."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd or str(run.workdir),
        env=env if env is not None else run.env,
        start_new_session=True,  # its own process group, so a kill takes its children too
        close_fds=True,
    )
    run.track(proc.pid)
    out = _Collector(run.max_output, run.emit)
    err = _Collector(run.max_output)
    threads = [
        threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True),
    ]
    if stdin is not None:
        threads.append(threading.Thread(target=_feed_stdin, args=(proc.stdin, stdin), daemon=True))
    for t in threads:
        t.start()
    code = proc.wait()
    # Children left behind in the group would hold the pipes open: a task's processes end with it.
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    run.untrack(proc.pid)
    for t in threads:
        t.join(timeout=5)
    return ProcessResult(code, out.value(), err.value(), out.truncated or err.truncated)
