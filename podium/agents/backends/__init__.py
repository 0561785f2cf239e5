"""Backends: how an agent turns a task into work.

A backend is a class registered in the ``podium.backends`` entry point group (the built-in
ones are registered exactly like third-party ones, in Podium's own ``pyproject.toml``)::

    [project.entry-points."podium.backends"]
    mybackend = "mypackage.module:MyBackend"

It subclasses ``Backend`` and implements ``run``; declares the ``--option KEY=VALUE`` settings
it takes as ``options`` (see ``podium.agents.backends.options``) and reads them, typed, from
``self.config``; ``check`` says, before any task, whether it can run here at all (program or
model missing, not logged in) with a message that says how to fix it. ``doctor`` lists what
it needs, each checked cheaply, as ``Finding`` rows for ``podium doctor`` (default: ``check``
as one row), and ``preflight`` is what ``podium up`` asks before it starts any worker (default:
the first failing row of ``doctor``). ``CappedBuffer`` keeps a run's output up to its limit
(``Run.max_output``: the worker's ``PODIUM_MAX_OUTPUT``, 16 MiB by default), and ``describe``
lists every backend for ``podium backends``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium import limits, plugins
from podium.agents.backends.options import Option, Options, invalid_option, parse_options
from podium.errors import BackendUnavailable, InvalidInput, PodiumError
from podium.models import Outcome, Task

__all__ = ["GROUP", "MAX_OUTPUT_BYTES", "Backend", "CappedBuffer", "Finding", "Option",
           "Options", "Run", "available", "describe", "load", "options_markdown",
           "parse_options"]

GROUP = "podium.backends"

#: Output kept whole per task (stdout, and stderr separately) by default; more is cut and marked
#: truncated. A worker keeps ``limits.max_output()`` (``PODIUM_MAX_OUTPUT``, read when it starts).
MAX_OUTPUT_BYTES = limits.DEFAULT_MAX_OUTPUT


class CappedBuffer:
    """Bytes kept up to ``limit``, the rest dropped and marked ``truncated``; what is kept is
    passed on to ``emit`` (when given) as it arrives, so that it can be streamed."""

    def __init__(self, limit: int, emit: Callable[[bytes], None] | None = None):
        self.limit = limit
        self.emit = emit
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        room = self.limit - self.size
        if len(data) > room:
            data = data[:max(room, 0)]
            self.truncated = True
        if not data:
            return
        self.parts.append(data)
        self.size += len(data)
        if self.emit is not None:
            self.emit(data)

    def value(self) -> bytes:
        return b"".join(self.parts)


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


@dataclass(frozen=True)
class Finding:
    """One thing a backend needs, as ``podium doctor`` checked it: ``status`` is ``ok``,
    ``warn`` (it may still work) or ``fail`` (it cannot run); ``detail`` says what was found,
    ``fix`` how to put it right (empty when there is nothing to do)."""

    check: str
    status: str
    detail: str
    fix: str = ""

    STATUSES = ("ok", "warn", "fail")

    def __post_init__(self) -> None:
        if self.status not in self.STATUSES:  # (a mistake in a backend's code)
            raise ValueError(f"finding {self.check!r}: status {self.status!r} is not one of "
                             f"{', '.join(self.STATUSES)}")

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def message(self) -> str:
        """The detail and the fix as one line: what ``podium up`` refuses with."""
        return f"{self.detail}: {self.fix}" if self.fix else self.detail

    @classmethod
    def ok(cls, check: str, detail: str) -> Finding:
        return cls(check, "ok", detail)

    @classmethod
    def warn(cls, check: str, detail: str, fix: str = "") -> Finding:
        return cls(check, "warn", detail, fix)

    @classmethod
    def fail(cls, check: str, detail: str, fix: str = "") -> Finding:
        return cls(check, "fail", detail, fix)


class Backend:
    """Base class of all backends."""

    #: Name in the entry point group (set by the loader).
    name: str = ""
    #: Whether the prompt handed to ``run`` includes shared and task context.
    takes_context: bool = True
    #: Whether ``run`` is quick and in-process, so the worker may call it on its own thread.
    inline: bool = False
    #: The ``--option KEY=VALUE`` settings it takes (none unless a subclass declares them).
    options: Options = Options()

    def __init__(self, given: Mapping[str, str] | None = None, workdir: Path | None = None):
        """``given``: the options as strings (``--option KEY=VALUE``), checked here, before any
        task: a bad one is ``InvalidInput``. Their typed values are ``self.config.KEY``."""
        self.name = self.name or type(self).__name__  # (a backend made without the loader)
        self.config = self.options.parse(self.name, given or {})
        self.workdir = Path(workdir or os.getcwd())

    def invalid_option(self, option: str, raw: str, expected: str) -> InvalidInput:
        """The error for an option value refused by a check of the backend's own (beyond the
        type and bounds it declared), worded like the framework's."""
        return invalid_option(self.name, option, raw, expected)

    def check(self) -> None:
        """Raise ``BackendUnavailable`` with a how-to-fix message if this backend cannot run."""

    def doctor(self) -> list[Finding]:
        """What ``podium doctor`` reports for this backend: each thing it needs (program and
        its version, login or API key, model file), checked cheaply — offline, nothing loaded,
        a few seconds at most. Default: ``check`` as one row. Override to say more; a row that
        ``fail``s means it cannot run (``preflight`` refuses it)."""
        try:
            self.check()
        except PodiumError as e:
            return [Finding.fail("usable", str(e))]
        return [Finding.ok("usable", "its check passed")]

    def preflight(self) -> None:
        """Raise ``BackendUnavailable`` (with ``doctor``'s words) if this backend cannot run:
        what ``podium up`` asks before it starts any worker. Default: the first failing row of
        ``doctor``. Backends whose ``doctor`` also reports what cannot fail (a version) or
        may take long override it with only the checks that decide."""
        for finding in self.doctor():
            if finding.failed:
                raise BackendUnavailable(finding.message())

    def attach(self, store, agent_id: str) -> None:
        """Called by the worker once its agent is registered: the store and the agent's name,
        for backends that keep state with the agent (a session to resume). Default: kept."""
        self.store, self.agent_id = store, agent_id

    def run(self, run: Run) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError


def available() -> list[str]:
    return plugins.names(GROUP)


def load(name: str) -> type[Backend]:
    """The backend class registered under ``name``."""
    return plugins.load(GROUP, name, Backend, "backend")


def describe() -> list[dict[str, Any]]:
    """Every registered backend as plain data (for ``podium backends``)."""
    return [_describe(name) for name in available()]


def _describe(name: str) -> dict[str, Any]:
    """One backend: its options, and whether it can run here (its ``preflight``, with the
    default options: what ``podium up`` asks, which loads no model), with the reason when it
    cannot."""
    try:
        cls = load(name)
    except Exception as e:  # a plugin that cannot even be imported is what a listing must show
        return {"name": name, "options": [], "available": False,
                "reason": f"cannot be loaded: {e}"}
    try:
        cls().preflight()
    except PodiumError as e:
        reason: str | None = str(e)
    else:
        reason = None
    return {"name": name, "options": cls.options.describe(), "available": reason is None,
            "reason": reason}


#: Where ``options_markdown`` says its text comes from (and the README's check finds it).
MARKDOWN_NOTE = ("<!-- generated by `podium backends --markdown` from the backends' declared "
                 "options: do not edit by hand -->")


def options_markdown(builtin_only: bool = True) -> str:
    """Every backend's options as Markdown, one table per backend, from their declarations
    (``builtin_only``: Podium's own backends, as in the README; else every installed one)."""
    out = [MARKDOWN_NOTE, ""]
    for name in available():
        cls = load(name)
        if builtin_only and not cls.__module__.startswith("podium."):
            continue
        out.append(f"**`{name}`**" + ("" if list(cls.options) else ": no options"))
        out.append("")
        if not list(cls.options):
            continue
        out += ["| option | type | default | what it does |", "| --- | --- | --- | --- |"]
        for o in cls.options.describe():
            out.append(f"| `{o['name']}` | {_md(_type_text(o))} | {_md(_default_text(o))} | "
                       f"{_md(o['help'])} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _type_text(o: dict[str, Any]) -> str:
    """An option's type with its bounds: ``float, 0 to 2``."""
    low, high = (None if b is None else _number(b) for b in (o["min"], o["max"]))
    if low is not None and high is not None:
        return f"{o['type']}, {low} to {high}"
    if low is not None:
        return f"{o['type']}, at least {low}"
    if high is not None:
        return f"{o['type']}, at most {high}"
    return str(o["type"])


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _default_text(o: dict[str, Any]) -> str:
    value = o["default"]
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{' '.join(value) if isinstance(value, list) else value}`"


def _md(text: str) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|").replace("\n", " ")
