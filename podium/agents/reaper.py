"""Everything a program started ends with it: the process that runs programs adopts and kills it.

A program's descendants can leave its process group and session (``setsid``, a daemon's double
fork): a group kill misses them, and when their parents exit they go to init and run on. So a
worker makes itself a child subreaper (``adopt_orphans``, Linux's ``PR_SET_CHILD_SUBREAPER``):
orphaned descendants become its children instead of init's. Once a program has exited (or is
being stopped), ``end`` kills its process group, then every child of this process that is not
a program still running here, with all their descendants, and reaps those children: no zombie
stays.

Only a process whose children are all its tasks' programs may adopt (a worker, which runs one
task's programs at a time): anywhere else a child that is not a running program may be
anything. There, and without Linux, ``end`` kills the group and the programs marked with the
task in their environment (``podium.orphans``, a scan of this user's processes).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from podium import detach, orphans

#: How long ``end`` waits for killed children to die: one stuck in the kernel may never; it is
#: reaped, without waiting again, when a later program ends after it died.
_END_WITHIN_S = 1.0


class Program(Protocol):
    pid: int

    def wait(self) -> int: ...


P = TypeVar("P", bound=Program)

_lock = threading.Lock()  # (held while starting a program and while killing strays)
_running: set[int] = set()  # programs started through ``start`` that were not waited for yet
_adopting: bool | None = None  # whether this process is a subreaper (None: not tried yet)
_stuck: set[int] = set()  # children that outlived a SIGKILL for _END_WITHIN_S


def adopt_orphans() -> bool:
    """Make this process the one that orphaned descendants go to (see the module's docstring);
    False where the system cannot."""
    global _adopting
    with _lock:
        if _adopting is None:
            _adopting = detach.become_subreaper()
        return _adopting


def start(spawn: Callable[[], P]) -> P:
    """Start a program with ``spawn``, as one of this process's own (not a stray to kill)."""
    with _lock:
        program = spawn()
        _running.add(program.pid)
    return program


def end(program: Program, env: dict[str, str]) -> int:
    """Kill the program (if it still runs) and everything it started, reap them; return its exit
    code. ``env`` is the environment it was started with: its task's markers."""
    for kill in (os.kill, os.killpg):  # (its group has its pid; the program may have left it)
        try:
            kill(program.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    code = program.wait()
    with _lock:
        _running.discard(program.pid)
    if _adopting:
        _end_strays()
    else:
        store, agent, task = (env.get(k) for k in
                              ("PODIUM_STORE", "PODIUM_AGENT_ID", "PODIUM_TASK_ID"))
        if store and agent and task:
            orphans.kill(store, agent, {task})
    return code


def _end_strays() -> None:
    """SIGKILL this process's children that are not running programs, with their descendants,
    and reap them. A reaped parent hands its (killed) children over to this process, so this
    repeats until none is left that can die."""
    me = os.getpid()
    deadline = time.monotonic() + _END_WITHIN_S
    while _has_children():
        with _lock:
            parents = _parents()
            strays = [pid for pid, parent in parents.items()
                      if parent == me and pid not in _running]
            killed = {pid for pid in _with_descendants(strays, parents) if _sigkill(pid)}
        reaped = [pid for pid in strays if _reap(pid)]
        _stuck.difference_update(reaped)
        # (one this user may not signal, a setuid program's, is not waited for: nor is one that
        # outlived a SIGKILL before, stuck in the kernel)
        dying = [pid for pid in strays if pid in killed and pid not in reaped and pid not in _stuck]
        if not reaped and not dying:
            return
        if time.monotonic() >= deadline:
            _stuck.update(dying)
            return
        if dying:
            time.sleep(0.005)  # (a SIGKILL takes effect soon, not at once)


def _sigkill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap(pid: int) -> bool:
    """Whether the child ``pid`` had exited, and is reaped now."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False  # (not this process's child any more)


def _has_children() -> bool:
    """Whether this process has a child at all (one system call, reaping nothing): after a
    program that left nothing, the search through /proc is skipped."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _parents() -> dict[int, int]:
    """Each process's parent, from /proc."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                # (after the command name, which may hold anything: state, then parent)
                parents[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass  # (exited meanwhile)
    return parents


def _with_descendants(pids: list[int], parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found
