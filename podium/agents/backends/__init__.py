"""Backends: how an agent turns a task into work.

A backend is a class registered in the ``podium.backends`` entry point group (the built-in
ones are registered exactly like third-party ones, in Podium's own ``pyproject.toml``)::

    [project.entry-points."podium.backends"]
    mybackend = "mypackage.module:MyBackend"

It subclasses ``Backend`` and implements ``run``; ``check`` says, before any task, whether it
can run here at all (program or model missing, not logged in) with a message that says how to
fix it.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from podium.errors import InvalidInput
from podium.models import Outcome, Task

GROUP = "podium.backends"

#: Output kept whole per task (stdout, and stderr separately); more is cut and marked truncated.
MAX_OUTPUT_BYTES = int(os.environ.get("PODIUM_MAX_OUTPUT", 16 * 1024 * 1024))


@dataclass
class Run:
    """One execution of a task by a backend, with the means to stream and to be stopped."""

    task: Task
    prompt: str  # the prompt as the backend should see it (with context, if it takes context)
    workdir: Path
    env: dict[str, str]
    emit: Callable[[bytes], None] = lambda chunk: None
    max_output: int = MAX_OUTPUT_BYTES
    cancel_reason: str | None = None
    timed_out: bool = False
    _cancelled: bool = False  # (set under _lock; an Event costs ~20 µs to make on a cold CPU)
    _pgids: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def track(self, pgid: int) -> None:
        """Register a process group to kill if the run is cancelled or times out."""
        with self._lock:
            self._pgids.add(pgid)
            if self._cancelled:
                _kill_group(pgid)

    def untrack(self, pgid: int) -> None:
        with self._lock:
            self._pgids.discard(pgid)

    def cancel(self, reason: str, timed_out: bool = False) -> None:
        """Stop the run: every tracked process group gets SIGTERM, then SIGKILL 2 s later."""
        with self._lock:
            if self._cancelled:
                return
            self.cancel_reason = reason
            self.timed_out = timed_out
            self._cancelled = True
            groups = list(self._pgids)
        for pgid in groups:
            _kill_group(pgid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return

    def hard() -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    t = threading.Timer(2.0, hard)
    t.daemon = True
    t.start()


class Backend:
    """Base class of all backends."""

    #: Name in the entry point group (set by the loader).
    name: str = ""
    #: Whether the prompt handed to ``run`` includes shared and task context.
    takes_context: bool = True
    #: Whether ``run`` is quick and in-process, so the worker may call it on its own thread.
    inline: bool = False

    def __init__(self, options: dict[str, str] | None = None, workdir: Path | None = None):
        self.options = dict(options or {})
        self.workdir = Path(workdir or os.getcwd())

    def check(self) -> None:
        """Raise ``BackendUnavailable`` with a how-to-fix message if this backend cannot run."""

    def attach(self, store, agent_id: str) -> None:
        """Called by the worker once its agent is registered: the store and the agent's name,
        for backends that keep state with the agent (a session to resume). Default: kept."""
        self.store, self.agent_id = store, agent_id

    def run(self, run: Run) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError


def available() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load(name: str) -> type[Backend]:
    """The backend class registered under ``name``."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Backend)):
                raise InvalidInput(f"backend {name!r} ({ep.value}) is not a podium Backend class")
            cls.name = name
            return cls
    names = ", ".join(available()) or "none (is podium installed with pip?)"
    raise InvalidInput(f"unknown backend {name!r}: available backends are {names}")


def parse_options(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["model=x", "k=v"]`` -> dict; a malformed pair is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"bad backend option {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out
