"""Starting a host's helper process (the PostgreSQL host daemon, the memory indexer) so that it
outlives whoever starts it and is nobody's child here.

The process that needs a helper first is often a worker, and a worker is a child subreaper
(``podium.agents.reaper``): what its children leave behind comes back to it, and once a program
ends it kills every child of its own that is not a program it runs. A helper started as its
child, or orphaned to it, would die with the worker's next task. ``start`` runs the helper
through a shell that puts it in the background and exits, while this process is not a subreaper
(the few milliseconds the shell takes): the helper goes to init (or to a subreaper above this
process, such as a service manager), not to this process. A program of this process's that
leaves an orphan in those milliseconds loses it the same way: the worker's reaper will not see
that one. (The switch itself, ``become_subreaper``, is here too: the reaper turns it on.)
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

_PR_SET_CHILD_SUBREAPER = 36  # (from <linux/prctl.h>)
_PR_GET_CHILD_SUBREAPER = 37


def _prctl(option: int, arg: object) -> bool:
    """``prctl(option, arg)`` succeeded (False where there is no such call: not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # (only here: most processes never need it)

    try:
        return ctypes.CDLL(None).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper(on: bool = True) -> bool:
    """Make this process a child subreaper (Linux's ``PR_SET_CHILD_SUBREAPER``: orphaned
    descendants become its children), or no longer one; whether the system did."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, int(on))


def _is_subreaper() -> bool:
    import ctypes

    flag = ctypes.c_int(0)
    return _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag)) and bool(flag.value)


@contextlib.contextmanager
def _not_a_subreaper() -> Iterator[None]:
    """This process is no child subreaper meanwhile (it is again afterwards if it was)."""
    was = _is_subreaper() and become_subreaper(False)
    try:
        yield
    finally:
        if was:
            become_subreaper(True)


def start(argv: list[str], *, env: dict[str, str], log_fd: int, cwd: str | None = None,
          pass_fds: tuple[int, ...] = ()) -> int:
    """Start ``argv`` detached (see the module's docstring), stdin from /dev/null, stdout and
    stderr to ``log_fd``, with ``pass_fds`` open in it; its pid. OSError or
    subprocess.SubprocessError when the shell cannot start it."""
    with _not_a_subreaper():
        shell = subprocess.run(["/bin/sh", "-c", '"$@" </dev/null >&2 & echo $!', "sh", *argv],
                               pass_fds=pass_fds, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=log_fd, start_new_session=True,
                               check=True, timeout=10)
    pid = shell.stdout.strip()
    if not pid.isdigit():
        raise subprocess.SubprocessError(f"the shell that started {argv[0]} said {pid!r}, "
                                         "not its pid")
    return int(pid)
