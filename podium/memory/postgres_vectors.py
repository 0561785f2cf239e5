"""Vectors in PostgreSQL: with the ``vector`` extension (pgvector) when the server has it, else
float32 ``bytea`` rows searched in process exactly as the SQLite store does.

With pgvector, ``memory_vectors.vector`` is a ``vector`` column; each model gets a partial
HNSW index on ``vector::vector(dim)`` with cosine distance (``vector_cosine_ops``) when its
first vector arrives, and a search is ``ORDER BY vector <=> query LIMIT k`` on the server
(``hnsw.ef_search`` raised to ``k`` when ``k`` is larger than its default 40). A process that
has added ANALYZE_ROWS rows runs ``ANALYZE``: until the statistics count the rows, the planner
sorts them all instead of using the index. A search limited to some ids (``only``) is exact: it
skips the index. The extension's objects are named with
their schema, so a store whose ``search_path`` is its own schema finds them wherever
``CREATE EXTENSION`` put them.

Without it (``CREATE EXTENSION`` fails: not installed on the server, as in Debian's packages
here, or no right to create it), the table is the SQLite store's: ``bytea`` rows and the
``memory_vectors_state`` counters, searched with numpy over a cached matrix per model
(``podium.memory.matrix``); a search costs one round trip to read the counters. Which of the
two a database uses is decided once, when the table is made; ``describe`` says which.

One connection per instance (made when it is opened, and again after a lost connection),
direct to the server (not through the host's PgBouncer), with the task store's keepalives and
lock timeout: open the store only when memory is used.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from podium.errors import InvalidInput, StoreError, StoreUnavailable
from podium.memory.matrix import BlobVectors, as_matrix, as_query
from podium.store.pgconnect import KEEPALIVES, redact, session_settings

if TYPE_CHECKING:
    from podium.memory.base import Matrix, Vector

#: Serialises making the tables across processes (pg_advisory_xact_lock's key).
SCHEMA_LOCK = int(hashlib.sha256(b"podium memory_vectors schema").hexdigest()[:15], 16)
BLOB_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS memory_vectors (memory_id TEXT PRIMARY KEY, model_id TEXT NOT "
    "NULL, dim INTEGER NOT NULL, vector BYTEA NOT NULL, seq BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS memory_vectors_seq ON memory_vectors (seq)",
    "CREATE INDEX IF NOT EXISTS memory_vectors_model ON memory_vectors (model_id)",
    "CREATE TABLE IF NOT EXISTS memory_vectors_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "seq BIGINT NOT NULL, removals BIGINT NOT NULL)",
    "INSERT INTO memory_vectors_state (id, seq, removals) VALUES (1, 0, 0) "
    "ON CONFLICT (id) DO NOTHING",
)
#: The default ``hnsw.ef_search``: a search for more results raises it to ``k``.
EF_SEARCH = 40
EF_SEARCH_MAX = 1000  # (pgvector's upper bound)
#: Rows a process adds before it runs ``ANALYZE`` on the pgvector table (see ``add``).
ANALYZE_ROWS = 1000


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("PostgreSQL vector stores need psycopg: pip install "
                         "'podium[postgres]'") from None
    return psycopg


def _text(vector: Any) -> str:
    """pgvector's text form of a vector: ``[0.1,0.2,...]``."""
    return "[" + ",".join(map(repr, vector.tolist())) + "]"


class PostgresVectors(BlobVectors):
    """Vectors in the PostgreSQL database at ``url`` (the task store's, normally)."""

    mark = "%s"

    def __init__(self, url: str, use_pgvector: bool = True):
        """``use_pgvector``: false makes a new table the bytea one even where the server has
        the extension (an existing table stays what it is)."""
        super().__init__()
        self.url = url
        self._psycopg = _psycopg()
        self._conn: Any = None
        #: The schema of the vector extension when this database's vectors use it, else None.
        self._ext: str | None = None
        self._ext_version = ""
        self._indexed: set[str] = set()
        self._unanalysed = 0  # rows this process added since it last ran ANALYZE
        self._use_pgvector = use_pgvector
        with self._mutex:
            self._setup()

    # -- connecting ----------------------------------------------------------------------
    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            psycopg = self._psycopg
            try:
                conn = psycopg.connect(self.url, autocommit=True, **KEEPALIVES)
                for name, value in session_settings().items():
                    conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            except psycopg.Error as e:
                raise self._error(e) from None
            self._conn = conn
        return self._conn

    def _error(self, e: Exception) -> StoreError:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, self._psycopg.OperationalError):
            return StoreUnavailable(f"vector store {redact(self.url)}: {msg}")
        return StoreError(f"vector store {redact(self.url)}: {msg}")

    @contextlib.contextmanager
    def _cursor(self, isolation: str | None = None) -> Iterator[Any]:
        """A cursor in one transaction on this process's connection."""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                if isolation:
                    cur.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                yield cur
        except self._psycopg.Error as e:
            raise self._error(e) from None

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Any]:
        with self._cursor("REPEATABLE READ") as cur:
            yield cur

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        with self._cursor() as cur:
            yield cur

    def _may_have_changed(self) -> bool:
        try:
            row = self._connection().execute(
                "SELECT seq, removals FROM memory_vectors_state WHERE id = 1").fetchone()
        except self._psycopg.Error as e:
            raise self._error(e) from None
        return row is None or (int(row[0]), int(row[1])) != (self._seq, self._removals)

    # -- the table -----------------------------------------------------------------------
    def _setup(self) -> None:
        """Find or make the table; decide pgvector or bytea (once per database)."""
        psycopg = self._psycopg
        with self._cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cur.execute("SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = "
                        "a.atttypid WHERE a.attrelid = to_regclass('memory_vectors') "
                        "AND a.attname = 'vector'")
            have = cur.fetchone()
            if have is not None and have[0] == "vector" or have is None and self._use_pgvector:
                ext = None
                try:
                    with cur.connection.transaction():  # (a savepoint: a refusal is no error)
                        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    cur.execute("SELECT n.nspname, e.extversion FROM pg_extension e JOIN "
                                "pg_namespace n ON n.oid = e.extnamespace "
                                "WHERE e.extname = 'vector'")
                    ext = cur.fetchone()
                except psycopg.Error as e:
                    # Not installed on the server, or no right to create it: the bytea table.
                    # (A lost connection, or a pgvector table whose extension is gone, is not
                    # a reason to change the table.)
                    if have is not None or isinstance(e, psycopg.OperationalError):
                        raise
                if ext is not None:
                    self._ext, self._ext_version = ext[0], ext[1]
                    self._make_pgvector_table(cur)
                    return
            for statement in BLOB_SCHEMA:
                cur.execute(statement)

    def _make_pgvector_table(self, cur: Any) -> None:
        sql = self._psycopg.sql
        cur.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS memory_vectors (memory_id TEXT PRIMARY KEY, model_id "
            "TEXT NOT NULL, dim INTEGER NOT NULL, vector {}.vector NOT NULL)").format(
                sql.Identifier(self._ext)))
        cur.execute("CREATE INDEX IF NOT EXISTS memory_vectors_model "
                    "ON memory_vectors (model_id)")

    def _index(self, cur: Any, model_id: str, dim: int) -> None:
        """The model's HNSW index, made when its first vector arrives."""
        key = f"{model_id}\0{dim}"
        if key in self._indexed:
            return
        sql = self._psycopg.sql
        name = "memory_vectors_hnsw_" + hashlib.sha256(key.encode()).hexdigest()[:16]
        cur.execute(sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON memory_vectors USING hnsw "
            "((vector::{ext}.vector({dim})) {ext}.vector_cosine_ops) WHERE model_id = {model}"
        ).format(sql.Identifier(name), ext=sql.Identifier(self._ext), dim=sql.Literal(dim),
                 model=sql.Literal(model_id)))
        self._indexed.add(key)

    # -- the store, with pgvector ----------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: Matrix, model_id: str) -> None:
        if self._ext is None:
            return super().add(ids, vectors, model_id)
        ids = list(ids)
        matrix = as_matrix(ids, vectors, model_id)
        if not ids:
            return
        dim = int(matrix.shape[1])
        latest = {memory_id: row for row, memory_id in enumerate(ids)}
        sql = self._psycopg.sql
        insert = sql.SQL(
            "INSERT INTO memory_vectors (memory_id, model_id, dim, vector) "
            "VALUES (%s, %s, %s, %s::{}.vector) ON CONFLICT (memory_id) DO UPDATE SET "
            "model_id = excluded.model_id, dim = excluded.dim, vector = excluded.vector"
        ).format(sql.Identifier(self._ext))
        with self._mutex, self._write() as cur:
            cur.execute("SELECT dim FROM memory_vectors WHERE model_id = %s LIMIT 1",
                        (model_id,))
            have = cur.fetchone()
            if have is not None and int(have[0]) != dim:
                raise InvalidInput(f"model {model_id!r} has vectors of {have[0]} dimensions "
                                   f"here; these have {dim}")
            cur.executemany(insert, [(memory_id, model_id, dim, _text(matrix[row]))
                                     for memory_id, row in latest.items()])
            self._index(cur, model_id, dim)
        self._unanalysed += len(latest)
        if self._unanalysed >= ANALYZE_ROWS:
            # Until the table's statistics count its rows, the planner sorts them all rather
            # than use the HNSW index; autovacuum's ANALYZE may come much later.
            with self._mutex, self._write() as cur:
                cur.execute("ANALYZE memory_vectors")
            self._unanalysed = 0

    def remove(self, ids: Collection[str]) -> int:
        if self._ext is None:
            return super().remove(ids)
        wanted = list({i for i in ids if isinstance(i, str)})
        with self._mutex, self._write() as cur:
            cur.execute("DELETE FROM memory_vectors WHERE memory_id = ANY(%s)", (wanted,))
            return int(cur.rowcount)

    def clear(self, model_id: str | None = None) -> int:
        if self._ext is None:
            return super().clear(model_id)
        with self._mutex, self._write() as cur:
            if model_id is None:
                cur.execute("DELETE FROM memory_vectors")
            else:
                cur.execute("DELETE FROM memory_vectors WHERE model_id = %s", (model_id,))
            return int(cur.rowcount)

    def search(self, vector: Vector, k: int, model_id: str,
               only: Collection[str] | None = None) -> list[tuple[str, float]]:
        if self._ext is None:
            return super().search(vector, k, model_id, only)
        query = as_query(vector)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidInput(f"k must be a whole number of results, got {k!r}")
        if k == 0 or (only is not None and not only):
            return []
        sql = self._psycopg.sql
        with self._mutex, self._write() as cur:
            cur.execute("SELECT dim FROM memory_vectors WHERE model_id = %s LIMIT 1",
                        (model_id,))
            have = cur.fetchone()
            if have is None:
                return []
            dim = int(have[0])
            if dim != query.shape[0]:
                raise InvalidInput(f"the query vector has {query.shape[0]} dimensions; this "
                                   f"model's vectors have {dim}")
            parts = {"ext": sql.Identifier(self._ext), "dim": sql.Literal(dim),
                     "model": sql.Literal(model_id)}
            distance = sql.SQL("vector::{ext}.vector({dim}) OPERATOR({ext}.<=>) "
                               "%s::{ext}.vector({dim})").format(**parts)
            if only is None:
                if k > EF_SEARCH:
                    cur.execute("SELECT set_config('hnsw.ef_search', %s, true)",
                                (str(min(k, EF_SEARCH_MAX)),))
                statement = sql.SQL(
                    "SELECT memory_id, {d} FROM memory_vectors WHERE model_id = {model} "
                    "ORDER BY {d} LIMIT %s").format(d=distance, **parts)
                cur.execute(statement, (_text(query), _text(query), k))
            else:  # exact, on the ids given (OFFSET 0 keeps the index out of it)
                statement = sql.SQL(
                    "SELECT memory_id, d FROM (SELECT memory_id, {d} AS d FROM memory_vectors "
                    "WHERE model_id = {model} AND memory_id = ANY(%s) OFFSET 0) AS near "
                    "ORDER BY d LIMIT %s").format(d=distance, **parts)
                cur.execute(statement, (_text(query), list(set(only)), k))
            return [(str(memory_id), 1.0 - float(d)) for memory_id, d in cur.fetchall()]

    # -- the rest ------------------------------------------------------------------------
    @property
    def uses_pgvector(self) -> bool:
        return self._ext is not None

    def describe(self) -> str:
        if self._ext is not None:
            return (f"PostgreSQL {redact(self.url)} (pgvector {self._ext_version}: HNSW cosine "
                    "index per model)")
        return (f"PostgreSQL {redact(self.url)} (no pgvector on the server: float32 bytea rows, "
                "exact search in process)")

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
