"""Running a backend's program: no shell, its own process group, output kept exact.

One thread (the caller's) feeds the program's stdin and reads its stdout and stderr as each is
ready, so a huge prompt cannot deadlock against a program that writes before it reads, and no
thread is started per run (a new thread costs 0.25 ms on an idle machine here). Output goes
into byte buffers capped at ``run.max_output``, and stdout is streamed to ``run.emit``. When
the program exits, everything it left running is killed (see ``podium.agents.reaper``): its
process group, and descendants that left it; they would hold the pipes open. A cancel or
timeout kills the whole process group (see ``Run.cancel``), and then the same.

The program is started with ``posix_spawn`` (the C library starts it without copying the
worker's memory map: 0.15-0.2 ms sooner than ``subprocess`` here) when it runs in the worker's
own directory with a path to its file; otherwise with ``subprocess.Popen``. Either way it gets
only its three standard streams: the worker's other descriptors are close-on-exec.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass

from podium.agents import reaper
from podium.agents.backends import CappedBuffer, Run

_CHUNK = 65536
#: Once the program and all it left were killed, its pipes close at once; one still held (by a
#: process that got out of reach, through a server say) is not waited for longer than this.
_DRAIN_S = 0.3


@dataclass
class ProcessResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool


class _Spawned:
    """The part of ``subprocess.Popen`` that ``run_process`` uses, for a posix_spawn'd child."""

    def __init__(self, argv: list[str], env: dict[str, str], with_stdin: bool):
        out_r, out_w = os.pipe()  # (both ends close-on-exec: only the dup2'd copies survive)
        err_r, err_w = os.pipe()
        in_r = in_w = -1
        try:
            actions: list[tuple] = [(os.POSIX_SPAWN_DUP2, out_w, 1),
                                    (os.POSIX_SPAWN_DUP2, err_w, 2)]
            if with_stdin:
                in_r, in_w = os.pipe()
                actions.insert(0, (os.POSIX_SPAWN_DUP2, in_r, 0))
            else:
                actions.insert(0, (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
            self.pid = os.posix_spawn(argv[0], argv, env, file_actions=actions,
                                      setsid=True)  # its own process group, as with Popen
        except BaseException:
            for fd in (out_r, err_r, in_w):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, in_r):
                if fd >= 0:
                    os.close(fd)
        self.stdout = open(out_r, "rb", buffering=0)
        self.stderr = open(err_r, "rb", buffering=0)
        self.stdin = open(in_w, "wb", buffering=0) if in_w >= 0 else None

    returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


# (without /proc the descriptors this process was given cannot be listed: Popen closes them)
_SPAWN = hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_DUP2") and \
    os.path.isdir("/proc/self/fd")
_swept = False


def _no_inherited_fds() -> None:
    """Once per process: descriptors this process was given (by whoever started it) must not
    reach its programs; Python's own and SQLite's and libpq's are close-on-exec already."""
    global _swept
    if _swept:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # (the listing's own descriptor, already closed)
    _swept = True


def _start(argv: list[str], cwd: str, env: dict[str, str], with_stdin: bool):
    if _SPAWN and os.path.isabs(argv[0]) and cwd == os.getcwd():
        _no_inherited_fds()
        return _Spawned(argv, env, with_stdin)
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,  # its own process group, so a kill takes its children too
        close_fds=True,
    )


def run_process(argv: list[str], run: Run, stdin: bytes | None = None,
                cwd: str | None = None, env: dict[str, str] | None = None) -> ProcessResult:
    """Run ``argv`` to completion (or until ``run`` is cancelled) and collect its output."""
    env = env if env is not None else run.env
    proc = reaper.start(lambda: _start(argv, cwd or str(run.workdir), env, stdin is not None))
    run.track(proc.pid)
    out = CappedBuffer(run.max_output, run.emit)
    err = CappedBuffer(run.max_output)
    try:
        code = _communicate(proc, out, err, stdin, env)
    finally:
        run.untrack(proc.pid)
        if proc.returncode is None:  # (_communicate failed) the program ends with the run anyway
            reaper.end(proc, env)
    return ProcessResult(code, out.value(), err.value(), out.truncated or err.truncated)


def _communicate(proc, out: CappedBuffer, err: CappedBuffer, data: bytes | None,
                 env: dict[str, str]) -> int:
    """Feed stdin, collect stdout and stderr until the program exits and its pipes close."""
    sel = selectors.DefaultSelector()
    files = {}
    for f, collector in ((proc.stdout, out), (proc.stderr, err)):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ, collector)
        files[f.fileno()] = f
    view = memoryview(data) if data else None
    stdin = proc.stdin
    if stdin is not None:
        if view:
            os.set_blocking(stdin.fileno(), False)
            sel.register(stdin.fileno(), selectors.EVENT_WRITE, None)
        else:
            stdin.close()
            stdin = None
    exited: int | None
    try:
        exited = os.pidfd_open(proc.pid)  # readable once the program has exited
    except (AttributeError, OSError):
        exited = None  # (an old kernel: look every 50 ms)
    else:
        sel.register(exited, selectors.EVENT_READ, None)
    code: int | None = None
    drain_until = 0.0
    try:
        while files or code is None:
            if code is None:
                timeout = None if exited is not None else 0.05
            else:  # exited, and all it left killed: the pipes close at once, or never
                timeout = drain_until - time.monotonic()
                if timeout <= 0:
                    break
            for key, _ in sel.select(timeout):
                fd = key.fd
                if fd in files:
                    try:
                        chunk = os.read(fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        key.data.feed(chunk)
                    else:
                        sel.unregister(fd)
                        files.pop(fd).close()
                elif fd == exited:
                    sel.unregister(exited)
                    os.close(exited)
                    exited = -1
                elif stdin is not None and fd == stdin.fileno():
                    assert view is not None  # stdin stays open only while data is left to write
                    try:
                        view = view[os.write(fd, view[:_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program stopped reading: its exit code tells the rest
                        view = None
                    if not view:
                        sel.unregister(fd)
                        stdin.close()
                        stdin = None
            if code is None and (exited == -1 or (exited is None and proc.poll() is not None)):
                # What it left running would hold the pipes open: a task's processes end with it.
                code = reaper.end(proc, env)
                drain_until = time.monotonic() + _DRAIN_S
    finally:
        sel.close()
        for f in files.values():
            f.close()
        if stdin is not None:
            stdin.close()
        if exited is not None and exited >= 0:
            os.close(exited)
    return code
