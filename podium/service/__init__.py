"""The one API every face calls (CLI, MCP, dashboard, tmux, supervisor) and Python users:
the only door to the store.

It validates input (so a failed call changes nothing; the bounds are in ``podium.limits``),
turns names into store calls, and adds the few things that span several store calls (waiting,
following events, broadcast). It imports no face: typing a message into an agent's pane is
given to it as a ``PaneDelivery`` (``podium.tmux.TmuxPanes``).

Its parts: ``tasks``, ``team`` (agents and their mailboxes), ``context``, ``events`` (one
follower of the event log), ``reports`` (status, costs), ``history`` (pruning), ``memory``
(semantic memory: ``memory_index`` searches, ``memory_text`` says what is remembered, ``recall``
puts memories into prompts and remembers while a worker idles);
``delivery`` is the interface for typing into panes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from podium.service.base import SAFETY_POLL_S
from podium.service.context import ContextCalls
from podium.service.delivery import Delivery, PaneDelivery
from podium.service.events import EventCalls, EventFollower
from podium.service.history import HistoryCalls
from podium.service.memory import MemoryCalls
from podium.service.reports import ReportCalls
from podium.store import (
    WRITER_LOCK_TIMEOUT_S,
    find_default,
    open_store,
    resolve_url,
    sqlite_path,
)
from podium.store.copy import copy_store
from podium.store.pgconnect import without_password

__all__ = ["Podium", "Delivery", "PaneDelivery", "EventFollower", "SAFETY_POLL_S",
           "WRITER_LOCK_TIMEOUT_S"]


class Podium(ReportCalls, EventCalls, ContextCalls, HistoryCalls, MemoryCalls):
    """Service facade over a store; ``panes`` types messages into interactive agents' panes
    (without it, ``send`` puts them in the inbox only, and says so)."""

    @classmethod
    def open(cls, url: str | None = None, init: bool = False,
             panes: PaneDelivery | None = None, create: bool = True,
             lock_timeout_s: float | None = WRITER_LOCK_TIMEOUT_S) -> Podium:
        """The service over the store at ``url`` (see ``open_store``: a store that does not
        exist is made unless ``create`` is false; ``init``: ``podium init``, which may also make
        a store in an empty file; a SQLite store's writes wait up to ``lock_timeout_s`` for
        another process's)."""
        return cls(open_store(url, init, create, lock_timeout_s), panes)

    def close(self) -> None:
        self.close_memory()
        self.store.close()

    # -- the store itself ---------------------------------------------------------------
    def shareable_url(self, with_password: bool = False) -> tuple[str, bool]:
        """The store's URL to write into a file others may read: a PostgreSQL password left
        out unless ``with_password``; and whether one was left out."""
        return (self.url, False) if with_password else without_password(self.url)

    @staticmethod
    def store_for_project(url: str | None, project: Path,
                          with_password: bool = False) -> tuple[str | None, bool, str | None]:
        """How a file committed in ``project`` (``.mcp.json``) names the store at ``url``,
        without opening it: None for the project's own default store (found from the project
        when the server starts there), a path relative to the project for a SQLite file in it,
        else the URL (a PostgreSQL password left out unless ``with_password``). Also: whether
        a password was left out, and a note when what is written holds this machine's paths."""
        found = sqlite_path(url)
        if found is None:
            given = resolve_url(url)
            shared, left_out = (given, False) if with_password else without_password(given)
            return shared, left_out, None
        path = found[0].absolute()
        project = project.resolve()
        explicit = url is not None or bool(os.environ.get("PODIUM_STORE"))
        if path.resolve() == find_default(project).resolve() or \
                not explicit and not path.exists():  # (no store yet: the project's own, then)
            return None, False, None
        try:
            return str(path.resolve().relative_to(project)), False, None
        except ValueError:
            return str(path.resolve()), False, (f"the store {path} is outside {project}: the "
                                                "file names it by this machine's path")

    def migrate(self) -> list[str]:
        """Apply pending schema migrations (opening does it too); returns the names applied."""
        return self.store.migrate()

    @staticmethod
    def copy(source_url: str, dest_url: str,
             progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
        """Copy every agent, task, message, event and context entry of the store at
        ``source_url`` into the empty one at ``dest_url`` (SQLite and PostgreSQL either way);
        returns the rows copied per table (``progress`` hears of each table once copied)."""
        source = open_store(source_url, create=False)
        try:
            dest = open_store(dest_url)
            try:
                return copy_store(source, dest, progress)
            finally:
                dest.close()
        finally:
            source.close()
