"""Process ids of this host."""

from __future__ import annotations

import os


def present(pid: int) -> bool:
    """Whether ``pid`` is in this host's process table (an exited process not yet reaped
    included): one system call, for hot paths; ``exists`` is the careful answer."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exists(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited. A zombie nobody has reaped yet (a
    container's PID 1 may never do it) has exited."""
    if not present(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, ``/proc/<pid>/stat`` field 22):
    with the pid, it names one process (a pid reused later has another start time). None when
    there is no such process, or it has exited (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[19])


def tell(pid: object, signum: int) -> bool:
    """Send ``signum`` to ``pid`` (as read from a lock or state file: anything but a process id
    above 1 is refused); whether it was sent."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    try:
        os.kill(pid, signum)
    except OSError:
        return False
    return True
