"""The memory of one store at work: remembering finished work, embedding what has no vector
yet, and hybrid search. The service (``podium.service.memory``) and workers
(``podium.service.recall``) both go through it.

Remembering is two steps. First the finished tasks and context versions past the memory
cursor become memory rows (``remember_work``: SQL only, no model; keyword search finds them
at once). Then the rows that have no vector from the current model get one
(``embed_pending``): the embedder and the vector store (``podium.memory``) are opened on first
need, and a missing model is an error (``MemoryUnavailable``), never a quiet fall-back.

Hybrid search takes candidates from both rankings — the store's full-text search (stemmed
words; FTS5's bm25 or PostgreSQL's ts_rank) and the vector store's nearest neighbours to the
query's embedding — and scores each ``cosine + KEYWORD_WEIGHT * coverage``, divided by
``1 + KEYWORD_WEIGHT`` (so 1.0 is the most a memory can score), where ``coverage`` is the share
of the query's words (common words left out; a word counts when the memory has a word
starting with its stem, ``memory_text.stem``) that the memory contains. A keyword candidate
that is not among the nearest vectors counts the lowest cosine among them.

Why not reciprocal-rank fusion: it counts the keyword ranking's weak matches (one ordinary
word of the query) as much as its strong ones, and on the labelled set in ``tests/data`` it
was worse than vectors alone (top-1 36 of 42 against 40, for k = 60; 36-37 for k = 1-20); the
coverage term lets a keyword match count for as much of the query as it matched (top-1 41 of
42, top-5 42; the same for weights 0.1-0.5). Keyword-only search ranks by the store's relevance
(shown divided by the best's), vector-only by cosine.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podium.errors import InvalidInput, PodiumError
from podium.models import Memory
from podium.service.memory_text import (
    OUTPUT_HEAD_BYTES,
    OUTPUT_TAIL_BYTES,
    context_memories,
    query_terms,
    snippet,
    stem,
    task_memories,
)
from podium.store.base import MemoryFilter, Store

if TYPE_CHECKING:
    from podium.memory.base import Embedder, Matrix, VectorStore

_log = logging.getLogger("podium.memory")

MODES = ("hybrid", "keyword", "vector")
#: How much a memory that contains every word of the query gains over one that contains none.
KEYWORD_WEIGHT = 0.3
#: Candidates each ranking contributes to a search, at least (or four times k).
CANDIDATES = 50
#: Finished tasks (or context versions) turned into memories per transaction.
WORK_BATCH = 100
#: Memories embedded per model run while catching up.
EMBED_BATCH = 16
#: Memory ids a filtered vector search restricts itself to at most.
ONLY_LIMIT = 100_000
#: ``PODIUM_MEMORY_INDEX``: how finished tasks are remembered (see ``index_setting``).
INDEX_SETTINGS = ("on", "lazy", "off")


def index_setting() -> str:
    """``PODIUM_MEMORY_INDEX``: ``on`` (default: finished tasks are remembered in the background
    by the host's memory indexer, ``podium.service.indexer``, and whatever is left when memory
    is read), ``lazy`` (only when memory is read) or ``off`` (finished tasks are not
    remembered; notes still are)."""
    value = (os.environ.get("PODIUM_MEMORY_INDEX") or "on").strip().lower()
    if value not in INDEX_SETTINGS:
        raise InvalidInput(f"bad PODIUM_MEMORY_INDEX {value!r}: expected on, lazy or off")
    return value


@dataclass
class MemoryHit:
    """One search result: the memory, its score (see the module's docstring), the share of
    the query's words it contains (``keyword``) and its cosine similarity (``vector``; None:
    not among the nearest), its places in the keyword and vector rankings (None: not in it),
    and a snippet."""

    memory: Memory
    score: float
    keyword: float | None
    vector: float | None
    keyword_rank: int | None
    vector_rank: int | None
    snippet: str

    def to_dict(self) -> dict[str, Any]:
        m = self.memory.to_dict()
        return {**m, "score": round(self.score, 4),
                "keyword": None if self.keyword is None else round(self.keyword, 4),
                "vector": None if self.vector is None else round(self.vector, 4),
                "keyword_rank": self.keyword_rank, "vector_rank": self.vector_rank,
                "snippet": self.snippet}


def coverage_of(terms: list[str]) -> Callable[[str], float]:
    """A function giving the share of ``terms`` a text contains (a word of the text that
    starts with the term's stem, ``memory_text.stem``)."""
    if not terms:
        return lambda text: 0.0
    patterns = [re.compile(r"\b" + re.escape(stem(t)), re.IGNORECASE) for t in terms]
    return lambda text: sum(1 for p in patterns if p.search(text)) / len(patterns)


def passes(m: Memory, where: MemoryFilter | None) -> bool:
    """Whether ``m`` is one that ``where`` lets through (as the store's SQL decides)."""
    if where is None:
        return True
    return ((where.kind is None or m.kind == where.kind)
            and (where.role is None or m.role == where.role)
            and (where.since is None or m.created_at >= where.since)
            and (where.not_task is None or m.task_id != where.not_task))


def _restricts(where: MemoryFilter | None) -> bool:
    return where is not None and any(v is not None for v in vars(where).values())


class MemoryIndex:
    """The memories of ``store`` with their embedder and vector store (opened on first need:
    ``memory_url`` as ``--memory``, ``embedder`` as ``PODIUM_EMBEDDER``). Safe to share
    between threads: the embedder runs for one at a time."""

    def __init__(self, store: Store, memory_url: str | None = None,
                 embedder: str | Embedder | None = None):
        self.store = store
        self.memory_url = memory_url
        self.embedder_name = embedder if isinstance(embedder, str) else None
        #: (an embedder given as an object is the caller's: not closed here)
        self._callers_embedder = not (embedder is None or isinstance(embedder, str))
        self._embedder: Embedder | None = None if isinstance(embedder, str) else embedder
        self._vectors: VectorStore | None = None
        self._open_lock = threading.Lock()
        self._embed_lock = threading.Lock()

    # -- the parts, opened on first need --------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from podium.memory import open_embedder

            with self._open_lock:
                if self._embedder is None:
                    self._embedder = open_embedder(self.embedder_name)
        return self._embedder

    @property
    def vectors(self) -> VectorStore:
        """The vector store, made if it does not exist yet (for a write)."""
        return self.open_vectors(create=True)

    def open_vectors(self, create: bool) -> VectorStore:
        """The vector store, opened on first need; without ``create``, one that does not exist
        is ``StoreNotFound`` and nothing is made (a read: a search, a count)."""
        if self._vectors is None:
            from podium.memory import open_vectors

            with self._open_lock:
                if self._vectors is None:
                    self._vectors = open_vectors(self.memory_url, self.store.url, create)
        return self._vectors

    def embed(self, texts: Sequence[str]) -> Matrix:
        with self._embed_lock:
            return self.embedder.embed(texts)

    def close(self) -> None:
        for part in (self._vectors, None if self._callers_embedder else self._embedder):
            if part is not None:
                try:
                    part.close()
                except PodiumError as e:
                    _log.warning("podium: closing memory: %s", e)
        self._vectors = self._embedder = None

    # -- remembering ------------------------------------------------------------------------
    def remember_work(self, max_rounds: int | None = None, batch: int = WORK_BATCH) -> int:
        """Turn the finished tasks and context versions past the memory cursor into memories,
        ``batch`` of them per transaction; returns how many memories were added
        (``max_rounds``: at most that many transactions)."""
        added = rounds = 0
        while max_rounds is None or rounds < max_rounds:
            moved, n = self.remember_batch(batch)
            if not moved:
                break
            added += n
            rounds += 1
        return added

    def remember_batch(self, batch: int = WORK_BATCH) -> tuple[bool, int]:
        """One transaction of ``remember_work``: whether the cursor moved (there was work past
        it), and how many memories were added."""
        while True:
            cursor = self.store.memory_cursor()
            work = self.store.work_to_remember(cursor, batch, OUTPUT_HEAD_BYTES,
                                               OUTPUT_TAIL_BYTES)
            if work.read_to <= cursor:
                return False, 0
            memories = [m for f in work.tasks for m in task_memories(f)]
            memories += [m for c in work.contexts for m in context_memories(c)]
            removed = self.store.add_memories(memories, [f.task.id for f in work.tasks],
                                              cursor=(cursor, work.read_to))
            if removed is None:
                continue  # another process remembered this batch meanwhile: read on from there
            if removed:
                self._remove_vectors(removed)
            return True, len(memories)

    def _remove_vectors(self, ids: list[str]) -> None:
        try:
            self.vectors.remove(ids)
        except PodiumError as e:  # (a vector without its memory is never shown: searches skip it)
            _log.warning("podium: could not remove %d vectors: %s", len(ids), e)

    def embed_pending(self, deadline: float | None = None, batch: int = EMBED_BATCH,
                      keep_going: Callable[[], bool] | None = None,
                      progress: Callable[[int], None] | None = None,
                      claim_s: float | None = None) -> int:
        """Give a vector to every memory that has none from the current model (until the
        monotonic ``deadline``, or while ``keep_going()``); returns how many got one.
        ``claim_s``: claim each batch for that long first (``claim_memories_to_embed``), so
        that the indexers of other hosts embed other memories meanwhile."""
        model = self.embedder.model_id
        done = after = 0
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if keep_going is not None and not keep_going():
                break
            found = (self.store.claim_memories_to_embed(model, batch, claim_s) if claim_s else
                     self.store.memories_to_embed(model, batch, after))
            if not found:
                break
            ids = [m.id for m in found]
            self.vectors.add(ids, self.embed([m.text for m in found]), model)
            self.store.mark_embedded(ids, model)
            after = found[-1].seq
            done += len(found)
            if progress is not None:
                progress(done)
        return done

    def add_notes(self, memories: list[Memory]) -> list[Memory]:
        """Store memories that someone added, with their vectors: embedded first (a missing
        model changes nothing), then their vectors, then the rows that say they have one."""
        model = self.embedder.model_id
        vectors = self.embed([m.text for m in memories])
        for m in memories:
            m.model_id = model
        self.vectors.add([m.id for m in memories], vectors, model)
        self.store.add_memories(memories)
        return memories

    def forget(self, ids: Sequence[str] = (), task_id: str | None = None) -> list[str]:
        removed = self.store.forget_memories(ids, task_id)
        if removed:
            self._remove_vectors(removed)
        return removed

    # -- searching --------------------------------------------------------------------------
    def search(self, text: str, k: int, where: MemoryFilter | None = None,
               mode: str = "hybrid", per_task: bool = True) -> list[MemoryHit]:
        """The ``k`` best memories for ``text`` (see the module's docstring); ``per_task``:
        the best chunk of each task only."""
        n = max(CANDIDATES, 4 * k)
        terms = query_terms(text)
        keyword = self.store.keyword_search(terms, n, where) if mode != "vector" else []
        vector = self._vector_candidates(text, n, where) if mode != "keyword" else []
        kw = {mid: (rank, score) for rank, (mid, score) in enumerate(keyword, 1)}
        vec = {mid: (rank, score) for rank, (mid, score) in enumerate(vector, 1)}
        found = self.store.get_memories([*kw, *vec])
        coverage = coverage_of(terms)
        shares = {mid: coverage(m.text) for mid, m in found.items()} if mode != "vector" else {}
        if mode == "keyword":
            top = keyword[0][1] if keyword and keyword[0][1] > 0 else 1.0
            scores = {mid: score / top for mid, score in keyword}
        elif mode == "vector":
            scores = dict(vector)
        else:
            floor = min((c for _, c in vector), default=0.0)
            scores = {mid: (vec[mid][1] if mid in vec else floor)
                      + KEYWORD_WEIGHT * shares.get(mid, 0.0) for mid in found}
            scores = {mid: v / (1.0 + KEYWORD_WEIGHT) for mid, v in scores.items()}
        hits: list[MemoryHit] = []
        seen: set[tuple[str, str]] = set()
        for mid in sorted(scores, key=lambda i: (-scores[i], i)):
            m = found.get(mid)
            if m is None or not passes(m, where):
                continue  # (forgotten since its vector was read; or left out by the filter)
            group = ("task", m.task_id) if per_task and m.kind == "task" and m.task_id \
                else ("id", m.id)
            if group in seen:
                continue
            seen.add(group)
            hits.append(MemoryHit(
                memory=m, score=scores[mid],
                keyword=shares.get(mid) if mode != "vector" else None,
                vector=vec[mid][1] if mid in vec else None,
                keyword_rank=kw[mid][0] if mid in kw else None,
                vector_rank=vec[mid][0] if mid in vec else None,
                snippet=snippet(m.text, terms)))
            if len(hits) == k:
                break
        return hits

    def _vector_candidates(self, text: str, n: int,
                           where: MemoryFilter | None) -> list[tuple[str, float]]:
        """The ``n`` nearest memories to the query that ``where`` lets through. Filtered: the
        nearest 4n, filtered here; when too few of those pass, a search among the ids that do."""
        with self._embed_lock:
            query = self.embedder.embed_query(text)
        model = self.embedder.model_id
        if not _restricts(where):
            return self.vectors.search(query, n, model)
        wide = self.vectors.search(query, 4 * n, model)
        rows = self.store.get_memories([mid for mid, _ in wide])
        kept = [(mid, s) for mid, s in wide if mid in rows and passes(rows[mid], where)]
        if len(kept) >= n or len(wide) < 4 * n:
            return kept[:n]
        assert where is not None
        return self.vectors.search(query, n, model, only=self.store.memory_ids(where, ONLY_LIMIT))
