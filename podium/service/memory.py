"""Semantic memory for every face: remember, search (hybrid, keyword or vector), similar tasks,
forget, reindex, stats.

What is remembered (``podium.service.memory_text``): every finished task (completed or failed:
its prompt and output, cut to a documented size and chunked), every version of a shared
context document that is still the newest when it is remembered (the store keeps no older
ones), and notes that a person (``podium remember``), an agent (the same command
inside a task, which finds its task and agent in ``$PODIUM_TASK_ID`` and ``$PODIUM_AGENT_ID``)
or an MCP client adds. Each keeps its provenance: task, agent, role, time and who added it.
Finished work is remembered in the background by the host's memory indexer, a process that
a worker starts (``podium.service.indexer``), and, for whatever is left, by the call that
reads memory: a search, ``similar_tasks`` and
recall remember and embed what is new first (embedding for at most ``CATCH_UP_S``: what is
left is still found by its keywords, and ``memory_stats`` says how much), ``memory_stats``
remembers without embedding. ``PODIUM_MEMORY_INDEX`` (``on``, ``lazy``, ``off``) sets this;
``PODIUM_MEMORY`` / ``use_memory`` the vector store, ``PODIUM_EMBEDDER`` the embedder. The reads
(searches, ``similar_tasks``, ``memory_stats``) make no vector store: one that does not exist is
``StoreNotFound``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from podium import limits
from podium.clock import now
from podium.errors import InvalidInput, NotFound
from podium.models import MEMORY_KINDS, MEMORY_SOURCES, Memory
from podium.service import indexer
from podium.service.base import ServiceBase
from podium.service.memory_index import MODES, MemoryHit, MemoryIndex, index_setting
from podium.service.memory_text import MAX_NOTE_CHARS, note_memories
from podium.service.tasks import task_id_of
from podium.store.base import MemoryFilter

if TYPE_CHECKING:
    from podium.memory.base import Embedder

__all__ = ["MemoryCalls", "MemoryHit", "MemoryStats", "ReindexReport"]

#: How long a search (or similar tasks) embeds memories that have none yet before it answers.
CATCH_UP_S = 5.0
#: The most results one search returns.
MAX_K = 100
#: What looks like a task id, for ``similar_tasks`` (anything else is text).
_TASK_ID = re.compile(r"t-[0-9a-z]{4,14}")


@dataclass
class MemoryStats:
    """What ``podium memory stats`` shows."""

    memories: int
    by_kind: dict[str, int]
    #: Memories whose vector is the current model's; the rest have none (or another model's).
    embedded: int
    not_embedded: int
    embedder: str
    model_id: str
    dimension: int | None
    vector_store: str
    #: Vectors per model id in the vector store.
    vectors: dict[str, int]
    text_bytes: int
    vector_bytes: int
    indexing: str
    #: The event the memory cursor stands at, and the last event.
    cursor: int
    last_event_id: int
    other_models: dict[str, int] = field(default_factory=dict)
    #: The pid of this host's memory indexer of the store (None: none runs here).
    indexer_pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReindexReport:
    """What ``reindex`` did."""

    memories: int
    embedded: int
    cleared_vectors: int
    model_id: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _since(value: Any) -> float | None:
    """``since``: a time (seconds since the epoch), an ISO date or time, or an age such as
    ``7d`` (that long ago)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    bad = InvalidInput(f"bad since {value!r}: expected an age such as 7d or 12h, or an ISO "
                       "date such as 2026-11-30")
    if not isinstance(value, str) or not value.strip():
        raise bad
    text = value.strip()
    if limits.is_age_text(text):  # (else: "1 m", "١٢d" get the since message)
        return now() - limits.age(text, "since")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


#: Held while a service opens its memory index (rarely: once per service).
_OPENING = threading.Lock()


class MemoryCalls(ServiceBase):
    _memory: MemoryIndex | None = None
    _memory_url: str | None = None
    _embedder: str | Embedder | None = None

    def use_memory(self, url: str | None = None, embedder: str | Embedder | None = None) -> None:
        """Keep vectors in the store at ``url`` (``--memory``; None: ``PODIUM_MEMORY``, else
        beside the task store), made by ``embedder`` (a name, as ``PODIUM_EMBEDDER``, or an
        ``Embedder`` of the caller's, which stays the caller's to close; None: the default).
        Every process of a team must use the same."""
        if url is not None and (not isinstance(url, str) or not url.strip()):
            raise InvalidInput("the memory URL is empty: give one, or leave it out (the "
                               "vectors then follow the task store)")
        self.close_memory()
        self._memory_url, self._embedder = url, embedder

    @property
    def memory(self) -> MemoryIndex:
        """The memory index, opened on first use (by one thread: faces such as the web server
        call the service from several)."""
        if self._memory is None:
            with _OPENING:
                if self._memory is None:
                    self._memory = MemoryIndex(self.store, self._memory_url, self._embedder)
        return self._memory

    def close_memory(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    def _catch_up(self, embed: bool) -> None:
        if index_setting() != "off":
            self.memory.remember_work()
        if embed:
            self.memory.embed_pending(deadline=time.monotonic() + CATCH_UP_S)

    # -- adding ---------------------------------------------------------------------------
    def remember(self, text: Any, kind: str = "note", task_id: str | None = None,
                 agent: str | None = None, role: str | None = None,
                 source: str = "api") -> list[Memory]:
        """Remember a note (one memory per chunk of a long one) with its provenance; embedded
        at once (a missing model is an error, and nothing is stored)."""
        text = limits.text(text, "memory text")
        if len(text) > MAX_NOTE_CHARS:
            raise InvalidInput(f"memory text has {len(text)} characters: at most "
                               f"{MAX_NOTE_CHARS} (remember a summary, or several notes)")
        if kind not in ("note", "context"):
            raise InvalidInput(f"bad memory kind {kind!r}: a note or context (finished tasks "
                               "are remembered on their own)")
        if source not in MEMORY_SOURCES or source == "auto":
            raise InvalidInput(f"bad memory source {source!r}: expected one of "
                               f"{', '.join(s for s in MEMORY_SOURCES if s != 'auto')}")
        if task_id is not None:
            task_id = task_id_of(self.store, task_id, "of the memory")
            self.store.task_state(task_id)  # (NotFound)
        agent = limits.optional_name(agent, "agent id")
        role = limits.optional_name(role, "role")
        if agent is not None and role is None:
            try:
                roles = self.store.get_agent(agent).roles
            except NotFound:
                roles = []
            role = roles[0] if roles else None
        memories = note_memories(text, kind, source, task_id, agent, role)
        return self.memory.add_notes(memories)

    # -- searching ------------------------------------------------------------------------
    def memory_search(self, text: Any, k: int = 5, kind: str | None = None,
                      role: str | None = None, since: Any = None,
                      mode: str = "hybrid") -> list[MemoryHit]:
        """The ``k`` memories most relevant to ``text``, best first, with their scores,
        provenance and a snippet (``kind``, ``role``, ``since``: only those)."""
        text = limits.text(text, "query")
        k = limits.integer(k, "k", 1, MAX_K)
        if kind is not None and kind not in MEMORY_KINDS:
            raise InvalidInput(f"bad memory kind {kind!r}: expected one of "
                               f"{', '.join(MEMORY_KINDS)}")
        if mode not in MODES:
            raise InvalidInput(f"bad search mode {mode!r}: expected one of {', '.join(MODES)}")
        where = MemoryFilter(kind=kind, role=limits.optional_name(role, "role"),
                             since=_since(since))
        self.memory.open_vectors(create=False)  # (a read makes no vector store)
        self._catch_up(embed=mode != "keyword")
        return self.memory.search(text, k, where, mode)

    def similar_tasks(self, task_or_text: Any, k: int = 5) -> list[MemoryHit]:
        """Finished tasks like this one ("has the team solved this before?"): given a task
        id (or a unique prefix of one), those like its prompt, itself left out; given any
        other text, those like it. The best chunk of each task, best first."""
        text = limits.text(task_or_text, "task or text")
        k = limits.integer(k, "k", 1, MAX_K)
        where = MemoryFilter(kind="task")
        if _TASK_ID.fullmatch(text.strip()):
            task = self.store.get_task(task_id_of(self.store, text.strip()))
            text, where.not_task = task.prompt, task.id
        self.memory.open_vectors(create=False)  # (a read makes no vector store)
        self._catch_up(embed=True)
        return self.memory.search(text, k, where, "hybrid")

    # -- forgetting -----------------------------------------------------------------------
    def forget(self, memory_ids: str | list[str]) -> list[str]:
        """Forget memories by id (their vectors too); NotFound when none of them exists."""
        ids = [memory_ids] if isinstance(memory_ids, str) else list(memory_ids)
        if not ids:
            raise InvalidInput("give the id of a memory to forget")
        ids = [limits.name(i, "memory id") for i in ids]
        removed = self.memory.forget(ids)
        if not removed:
            raise NotFound(f"unknown memory {ids[0]!r}" if len(ids) == 1
                           else f"none of these memories exists: {', '.join(ids)}")
        return removed

    def forget_task(self, task_id: str) -> list[str]:
        """Forget every memory of a task (it is not remembered again unless it runs again)."""
        task_id = task_id_of(self.store, task_id)
        removed = self.memory.forget(task_id=task_id)
        if not removed:
            raise NotFound(f"no memories of task {task_id}")
        return removed

    # -- upkeep ---------------------------------------------------------------------------
    def reindex(self, progress: Callable[[int, int], None] | None = None) -> ReindexReport:
        """Embed every memory again with the current model (after changing it), first
        remembering what finished meanwhile; the vector store's old vectors are cleared."""
        started = time.monotonic()
        index = self.memory
        if index_setting() != "off":
            index.remember_work()
        model = index.embedder.model_id
        index.embedder.embed_query("podium")  # (a missing model says so before anything goes)
        cleared = index.vectors.clear()
        self.store.forget_embeddings()
        total = sum(self.store.memory_counts().by_kind.values())
        embedded = index.embed_pending(
            progress=None if progress is None else (lambda n: progress(n, total)))
        return ReindexReport(memories=total, embedded=embedded, cleared_vectors=cleared,
                             model_id=model, seconds=round(time.monotonic() - started, 3))

    def memory_stats(self) -> MemoryStats:
        """How much is remembered, by kind; how much is embedded by the current model; the
        embedder, the vector store and their sizes. Remembers new work first (no embedding)."""
        setting = index_setting()
        self.memory.open_vectors(create=False)  # (a count makes no vector store)
        if setting != "off":
            self.memory.remember_work()
        counts = self.store.memory_counts()
        index = self.memory
        embedder = index.embedder
        model = embedder.model_id
        vectors = index.vectors.counts()
        dimension = getattr(embedder, "dimension", None)
        size = getattr(index.vectors, "size", None)
        vector_bytes = int(size()) if callable(size) else sum(vectors.values()) * (
            dimension or 0) * 4
        total = sum(counts.by_kind.values())
        embedded = counts.by_model.get(model, 0)
        return MemoryStats(
            memories=total, by_kind=counts.by_kind, embedded=embedded,
            not_embedded=total - embedded, embedder=embedder.name or "?", model_id=model,
            dimension=dimension, vector_store=index.vectors.describe(), vectors=vectors,
            text_bytes=counts.text_bytes, vector_bytes=vector_bytes, indexing=setting,
            cursor=counts.cursor, last_event_id=counts.last_event_id,
            other_models={m: n for m, n in counts.by_model.items()
                          if m is not None and m != model},
            indexer_pid=indexer.running_indexer(self.store.url))

    def index_memory(self, progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """Remember the finished work not remembered yet and embed every memory that has no
        vector (``podium memory index``); returns how many of each."""
        remembered = self.memory.remember_work() if index_setting() != "off" else 0
        return {"remembered": remembered, "embedded": self.memory.embed_pending(progress=progress)}

    def follow_memory(self, lock_fd: int | None = None,
                      say: Callable[[str], None] = print) -> int:
        """Be this host's memory indexer of the store (``podium memory index --follow``,
        ``podium.service.indexer``) until stopped; ``lock_fd``: the election lock a worker
        handed over (it then exits once the host's agents are gone). Conflict when another
        runs."""
        return indexer.HostIndexer(self.memory, lock_fd, linger=lock_fd is not None,
                                   say=say).run()
