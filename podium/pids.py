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
