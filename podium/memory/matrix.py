"""Exact nearest-neighbour search in process: each model's vectors as one numpy matrix, kept in
step with a table of float32 BLOBs that other processes write too.

The table (SQLite's, or PostgreSQL's when the server has no pgvector) holds
``memory_vectors (memory_id, model_id, dim, vector, seq)`` and one counter row,
``memory_vectors_state (seq, removals)``: every write takes the next ``seq`` numbers from the
counter inside its transaction (so writers are serialised on that row, and a reader that sees
the counter at S sees every row up to S), and every remove or clear adds one to ``removals``.
A search first brings its cache up to date in one read snapshot: rows with a ``seq`` newer
than the cache's are applied (a replaced id moves, an id re-made by another model leaves the
old model's matrix), and when ``removals`` moved, the ids still there are read back and the
others dropped. Nothing is re-read when nothing changed; a search at 10,000 vectors of 384 is
one matrix-vector product on the calling thread (~0.5 ms; see ``dot_rows``).

``BlobVectors`` is that logic once; the dialects give it their SQL through ``_snapshot`` and
``_write`` (a transaction each) and say cheaply whether anything may have changed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from podium.errors import InvalidInput
from podium.memory.base import VectorStore

if TYPE_CHECKING:
    from podium.memory.base import Matrix, Vector

#: Rows written per transaction: each holds the writer's lock for a few milliseconds only.
WRITE_CHUNK = 512


def as_matrix(ids: Sequence[str], vectors: Any, model_id: str) -> Matrix:
    """``vectors`` checked against ``ids`` and L2-normalised (float32, one row per id)."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise InvalidInput("a vector's model id must be a non-empty string")
    for i in ids:
        if not isinstance(i, str) or not i:
            raise InvalidInput(f"memory ids must be non-empty strings, got {i!r}")
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1 and len(ids) == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise InvalidInput(f"{len(ids)} ids need {len(ids)} vectors (an (n, dimension) "
                           f"array), got shape {matrix.shape}")
    if len(ids) and (matrix.shape[1] == 0 or not np.isfinite(matrix).all()):
        raise InvalidInput("vectors must have at least one dimension and finite values")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if len(ids) and (norms == 0).any():
        raise InvalidInput("a zero vector has no direction: it cannot be searched by cosine")
    normed: Matrix = np.ascontiguousarray(matrix / np.where(norms == 0, 1, norms),
                                          dtype=np.float32)
    return normed


def as_query(vector: Any) -> Vector:
    query = np.asarray(vector, dtype=np.float32)
    if query.ndim != 1 or not query.size or not np.isfinite(query).all():
        raise InvalidInput(f"a query vector must be one row of finite numbers, got shape "
                           f"{query.shape}")
    norm = float(np.linalg.norm(query))
    out: Vector = query / norm if norm else query
    return out


def dot_rows(matrix: Any, query: Vector) -> Any:
    """Each row's dot product with ``query``, on this thread only.

    Not ``matrix @ query``: that goes to OpenBLAS, whose worker threads spin for a while after
    every product (8-20 % of a core measured over the idle second after a search, here); einsum
    runs numpy's own SIMD loop on the calling thread (0.6 ms at 10,000 x 384, ~5-10 ms at
    100,000), and nothing is left running."""
    return np.einsum("ij,j->i", matrix, query)


def top_k(scores: Any, k: int) -> Any:
    """Indices of the ``k`` highest scores, highest first."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


class ModelMatrix:
    """One model's vectors: rows of a matrix that grows by doubling, and their ids. Its
    dimension is its vectors' (set by the first one put while it is empty)."""

    def __init__(self) -> None:
        self.dim = 0
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.float32)

    def put(self, memory_id: str, vector: Vector) -> None:
        if not self.ids and len(vector) != self.dim:
            self.dim = len(vector)
            self.matrix = np.zeros((0, self.dim), dtype=np.float32)
        elif len(vector) != self.dim:
            return  # (the writers refuse a second dimension for one model)
        row = self.rows.get(memory_id)
        if row is None:
            row = len(self.ids)
            if row == len(self.matrix):
                grown = np.zeros((max(64, 2 * row), self.dim), dtype=np.float32)
                grown[:row] = self.matrix[:row]
                self.matrix = grown
            self.ids.append(memory_id)
            self.rows[memory_id] = row
        self.matrix[row] = vector

    def drop(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        if row is None:
            return
        last = len(self.ids) - 1
        if row != last:  # the last row takes the freed place
            moved = self.ids[last]
            self.matrix[row] = self.matrix[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()

    def keep_only(self, present: set[str]) -> None:
        for memory_id in [i for i in self.ids if i not in present]:
            self.drop(memory_id)

    def search(self, query: Vector, k: int,
               only: Collection[str] | None) -> list[tuple[str, float]]:
        if query.shape[0] != self.dim:
            raise InvalidInput(f"the query vector has {query.shape[0]} dimensions; this "
                               f"model's vectors have {self.dim}")
        n = len(self.ids)
        if only is None:
            scores = dot_rows(self.matrix[:n], query)
            return [(self.ids[r], float(scores[r])) for r in top_k(scores, k)]
        rows = np.fromiter((r for r in (self.rows.get(i) for i in set(only)) if r is not None),
                           dtype=np.intp)
        if not len(rows):
            return []
        scores = dot_rows(self.matrix[rows], query)
        return [(self.ids[rows[j]], float(scores[j])) for j in top_k(scores, k)]


class BlobVectors(VectorStore):
    """Vectors as float32 BLOBs in a SQL table, searched in process (see the module's
    docstring); a dialect supplies the transactions."""

    #: The SQL placeholder of the dialect's driver.
    mark = "?"

    def __init__(self) -> None:
        self._cache: dict[str, ModelMatrix] = {}
        self._seq = 0  # the newest row the caches hold
        self._removals = 0
        self._stale = True  # this process wrote (or nothing was read yet)
        self._mutex = threading.RLock()

    # -- the dialect's part ------------------------------------------------------------
    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """A cursor reading one consistent snapshot."""
        raise NotImplementedError
        yield

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """A cursor in a write transaction (committed on leaving)."""
        raise NotImplementedError
        yield

    def _may_have_changed(self) -> bool:
        """False only when no other connection can have written since the last refresh."""
        return True

    def _after_write(self) -> None:  # noqa: B027 - optional (SQLite checkpoints here)
        """Called after each write transaction commits."""

    def _blob(self, data: Any) -> bytes:
        return bytes(data)

    # -- writing -----------------------------------------------------------------------
    def _take_seq(self, cur: Any, count: int, removal: bool) -> int:
        """Reserve ``count`` seq numbers (and count a removal); the first reserved."""
        m = self.mark
        cur.execute(f"UPDATE memory_vectors_state SET seq = seq + {m}, "
                    f"removals = removals + {m} WHERE id = 1", (count, 1 if removal else 0))
        cur.execute("SELECT seq FROM memory_vectors_state WHERE id = 1")
        return int(cur.fetchone()[0]) - count + 1

    def add(self, ids: Sequence[str], vectors: Matrix, model_id: str) -> None:
        ids = list(ids)
        matrix = as_matrix(ids, vectors, model_id)
        if not ids:
            return
        latest = {memory_id: row for row, memory_id in enumerate(ids)}  # (the last one wins)
        unique = list(latest)
        m = self.mark
        with self._mutex:
            for start in range(0, len(unique), WRITE_CHUNK):
                chunk = unique[start:start + WRITE_CHUNK]
                with self._write() as cur:
                    cur.execute(f"SELECT dim FROM memory_vectors WHERE model_id = {m} LIMIT 1",
                                (model_id,))
                    have = cur.fetchone()
                    if have is not None and int(have[0]) != matrix.shape[1]:
                        raise InvalidInput(
                            f"model {model_id!r} has vectors of {have[0]} dimensions here; "
                            f"these have {matrix.shape[1]}")
                    cur.execute(f"SELECT count(*) FROM memory_vectors WHERE model_id <> {m} "
                                f"AND memory_id IN ({', '.join([m] * len(chunk))})",
                                (model_id, *chunk))
                    moved = int(cur.fetchone()[0]) > 0  # ids re-made by another model
                    first = self._take_seq(cur, len(chunk), removal=moved)
                    cur.executemany(
                        f"INSERT INTO memory_vectors (memory_id, model_id, dim, vector, seq) "
                        f"VALUES ({m}, {m}, {m}, {m}, {m}) ON CONFLICT (memory_id) DO UPDATE "
                        f"SET model_id = excluded.model_id, dim = excluded.dim, "
                        f"vector = excluded.vector, seq = excluded.seq",
                        [(memory_id, model_id, matrix.shape[1],
                          matrix[latest[memory_id]].tobytes(), first + n)
                         for n, memory_id in enumerate(chunk)])
                self._stale = True
                self._after_write()

    def remove(self, ids: Collection[str]) -> int:
        wanted = list(dict.fromkeys(i for i in ids if isinstance(i, str)))
        removed = 0
        with self._mutex:
            for start in range(0, len(wanted), WRITE_CHUNK):
                chunk = wanted[start:start + WRITE_CHUNK]
                with self._write() as cur:
                    cur.execute(f"DELETE FROM memory_vectors WHERE memory_id IN "
                                f"({', '.join([self.mark] * len(chunk))})", chunk)
                    gone = cur.rowcount
                    if gone:
                        self._take_seq(cur, 0, removal=True)
                removed += gone
                self._stale = True
                self._after_write()
        return removed

    def clear(self, model_id: str | None = None) -> int:
        with self._mutex:
            with self._write() as cur:
                if model_id is None:
                    cur.execute("DELETE FROM memory_vectors")
                else:
                    cur.execute(f"DELETE FROM memory_vectors WHERE model_id = {self.mark}",
                                (model_id,))
                gone = cur.rowcount
                if gone:
                    self._take_seq(cur, 0, removal=True)
            self._stale = True
            self._after_write()
        return int(gone)

    # -- reading -----------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._mutex, self._snapshot() as cur:
            cur.execute("SELECT model_id, count(*) FROM memory_vectors GROUP BY model_id")
            return {str(model): int(n) for model, n in cur.fetchall()}

    def search(self, vector: Vector, k: int, model_id: str,
               only: Collection[str] | None = None) -> list[tuple[str, float]]:
        query = as_query(vector)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidInput(f"k must be a whole number of results, got {k!r}")
        if k == 0:
            return []
        with self._mutex:
            self._refresh(model_id)
            matrix = self._cache.get(model_id)
            if matrix is None or not matrix.ids:
                return []
            return matrix.search(query, k, only)

    def _refresh(self, model_id: str) -> None:
        """Bring the caches (and ``model_id``'s, loading it if new) up to date."""
        if not self._stale and model_id in self._cache and not self._may_have_changed():
            return
        m = self.mark
        with self._snapshot() as cur:
            cur.execute("SELECT seq, removals FROM memory_vectors_state WHERE id = 1")
            seq, removals = (int(x) for x in cur.fetchone())
            if removals != self._removals:
                for model, matrix in self._cache.items():
                    cur.execute(f"SELECT memory_id FROM memory_vectors WHERE model_id = {m}",
                                (model,))
                    matrix.keep_only({r[0] for r in cur.fetchall()})
            if seq != self._seq and self._cache:
                cur.execute(f"SELECT memory_id, model_id, vector FROM memory_vectors "
                            f"WHERE seq > {m} AND seq <= {m} ORDER BY seq", (self._seq, seq))
                for memory_id, model, blob in cur.fetchall():
                    for other, matrix in self._cache.items():
                        if other != model:
                            matrix.drop(memory_id)
                    target = self._cache.get(model)
                    if target is not None:
                        target.put(memory_id, np.frombuffer(self._blob(blob), dtype=np.float32))
            if model_id not in self._cache:
                cur.execute(f"SELECT memory_id, vector FROM memory_vectors "
                            f"WHERE model_id = {m} AND seq <= {m}", (model_id, seq))
                matrix = self._cache[model_id] = ModelMatrix()
                for memory_id, blob in cur.fetchall():
                    matrix.put(memory_id, np.frombuffer(self._blob(blob), dtype=np.float32))
            self._seq, self._removals = seq, removals
            self._stale = False

