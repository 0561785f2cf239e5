"""A worker's memory: recalling memories into a task's prompt, and starting the host's memory
indexer.

**Recall.** A task added with ``--recall K``, or run by an agent started with ``--recall K``
(``PODIUM_RECALL``; the task's own setting wins, 0 turning it off), gets the K memories that a
hybrid search for its prompt ranks best (none of its own) in its prompt's "Recalled memories"
section (``podium.prompt``), each marked with where it came from, within a budget of
``RECALL_TOKENS`` tokens (about four characters each) shared equally: a longer memory is cut.
Only backends that take context receive them (as shared context). Off by default: a task that
does not ask costs one attribute test. One that does pays for the search (and the model's load,
once per worker). A recall that cannot be made (no model) is logged and recorded as a
``memory.recall_failed`` event, and the task runs without it.

**Indexing.** A worker starting up, with ``PODIUM_MEMORY_INDEX`` at ``on`` (the default), starts
the host's memory indexer when none runs (``podium.service.indexer``): a separate process, so
that remembering adds nothing to any worker's dispatch path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from typing import TYPE_CHECKING

from podium import limits
from podium.clock import iso
from podium.errors import PodiumError
from podium.models import Memory, Task
from podium.prompt import Recalled
from podium.service import indexer
from podium.service.memory_index import MemoryHit, MemoryIndex, index_setting
from podium.store.base import MemoryFilter

if TYPE_CHECKING:
    from podium.store import Store

_log = logging.getLogger("podium.memory")

#: Tokens of recalled text in one prompt at most (a token taken as four characters).
RECALL_TOKENS = 1500
CHARS_PER_TOKEN = 4
#: Batches of finished work a recall remembers first, at most (each WORK_BATCH tasks).
RECALL_ROUNDS = 20
#: How long a recall may spend embedding memories that have no vector yet.
RECALL_CATCH_UP_S = 1.0


def source_line(m: Memory) -> str:
    """Where a memory came from, in one line (a recalled memory's heading)."""
    when = iso(m.created_at)
    if m.kind == "task":
        who = ", ".join(x for x in (f"agent {m.agent_id}" if m.agent_id else "",
                                    f"role {m.role}" if m.role else "") if x)
        chunk = f", part {m.meta['chunk']} of {m.meta['chunks']}" \
            if m.meta.get("chunks", 1) > 1 else ""
        return (f"task {m.task_id} ({who + ', ' if who else ''}{m.meta.get('state', 'finished')} "
                f"{when}{chunk}): {m.title}")
    if m.kind == "context":
        return f"shared context {m.meta.get('key')} version {m.meta.get('version')} ({when})"
    by = m.agent_id or m.source
    return f"note {m.id} (by {by}{f' in task {m.task_id}' if m.task_id else ''}, {when})"


def recalled_memories(hits: list[MemoryHit], tokens: int = RECALL_TOKENS) -> list[Recalled]:
    """The hits as a prompt's recalled memories, each text cut to its equal share of the
    budget."""
    if not hits:
        return []
    share = max(80, tokens * CHARS_PER_TOKEN // len(hits))
    out = []
    for h in hits:
        text = h.memory.text.strip()
        if len(text) > share:
            text = text[:share - 1].rstrip() + "…"
        out.append(Recalled(source_line(h.memory), text))
    return out


def recall(index: MemoryIndex, task: Task, k: int) -> list[Recalled]:
    """The ``k`` memories recalled for ``task`` (see the module's docstring)."""
    hits = index.search(task.prompt, k, MemoryFilter(not_task=task.id), "hybrid")
    return recalled_memories(hits)


class WorkerMemory:
    """One worker's use of memory: ``start_indexer`` as it starts, ``recalled`` on its thread
    before each task runs, ``close`` as it stops."""

    def __init__(self, store_url: str, recall: int = 0):
        self.store_url = store_url
        self.recall = limits.recall(recall)
        self._store: Store | None = None
        self._index: MemoryIndex | None = None

    def index(self) -> MemoryIndex:
        """The memory, over a store connection of its own (opened on first use)."""
        if self._index is None:
            from podium.store import open_store

            self._store = open_store(self.store_url, create=False)
            self._index = MemoryIndex(self._store)
        return self._index

    def start_indexer(self) -> None:
        """Start this host's memory indexer for the store unless one runs (or indexing is not
        ``on``); a failure is logged, and finished work is remembered when memory is read."""
        try:
            if index_setting() != "on":
                return
            fd = indexer.try_lock(self.store_url)
            if fd is None:
                return
            try:
                indexer.spawn(self.store_url, fd)
            finally:
                os.close(fd)
        except (OSError, PodiumError, subprocess.SubprocessError) as e:
            _log.warning("podium: the memory indexer did not start (finished tasks are "
                         "remembered when memory is read): %s", e)

    def recalled(self, task: Task) -> list[Recalled]:
        k = task.recall if task.recall is not None else self.recall
        if not k:
            return []
        try:
            index = self.index()
            if index_setting() != "off":
                index.remember_work(max_rounds=RECALL_ROUNDS)
            index.embed_pending(deadline=time.monotonic() + RECALL_CATCH_UP_S)
            return recall(index, task, k)
        except PodiumError as e:
            _log.warning("podium: task %s runs without recalled memories: %s", task.id, e)
            with contextlib.suppress(PodiumError):
                self.index().store.add_event("memory.recall_failed", task.agent_id, task.id,
                                             {"error": str(e)})
            return []

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._store is not None:
            self._store.close()
        self._index = self._store = None
