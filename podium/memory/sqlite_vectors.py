"""The embedded vector store: float32 BLOBs in the task store's own SQLite file, searched in
process (``podium.memory.matrix``: numpy over a cached matrix per model).

Zero configuration: the vectors live beside the memories they belong to, in the table
``memory_vectors`` (made here when missing; ``memory_vectors_state`` holds the counters that
keep every process's cache in step). It has its own ``sqlite3`` connection in WAL mode, and
writes exactly as the task store does: under the store's writer lock (``flock`` on
``<file>-writer.lock``, see ``podium.store.sqlite``) then ``BEGIN IMMEDIATE``, a few hundred
rows per transaction, with automatic checkpoints off and a passive checkpoint after a commit
once the log has grown, so indexing never makes a claim wait on the disk. A search asks
``PRAGMA data_version`` (has any other connection committed since?) before it looks at the
table at all: with nothing new, a search is the matrix product alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from podium.errors import StoreError, StoreNotFound, StoreUnavailable
from podium.memory.matrix import BlobVectors
from podium.store.sqlite import unchecked_wal_pages

#: Log pages past the last checkpoint after which a writer runs a passive checkpoint (as the
#: task store does: ``podium.store.sqlite.CHECKPOINT_PAGES``).
CHECKPOINT_PAGES = 1000

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS memory_vectors (memory_id TEXT PRIMARY KEY, model_id TEXT NOT "
    "NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS memory_vectors_seq ON memory_vectors (seq)",
    "CREATE INDEX IF NOT EXISTS memory_vectors_model ON memory_vectors (model_id)",
    "CREATE TABLE IF NOT EXISTS memory_vectors_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "seq INTEGER NOT NULL, removals INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO memory_vectors_state (id, seq, removals) VALUES (1, 0, 0)",
)


def _error(e: sqlite3.Error, path: Path) -> StoreError:
    msg = str(e)
    if "full" in msg:
        return StoreUnavailable(f"the disk holding {path} is full; free some space and retry")
    if "locked" in msg or "busy" in msg:
        return StoreUnavailable(f"vector store {path} is locked: {msg}")
    if "not a database" in msg:
        return StoreError(f"{path} is not an SQLite database")
    return StoreError(f"vector store {path}: {msg}")


def _create_private(path: Path) -> None:
    """Make the database file, readable by this user only, when there is none. An existing
    one is never opened here: closing any descriptor of a file drops every POSIX lock this
    process holds on it, SQLite's included, and with them its claim that a connection is open
    (another process's last connection would then delete the write-ahead log from under this
    process's task store: see ``podium.store.sqlite``)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _open_private(path: str, flags: int) -> int:
    """A descriptor on ``path``, which is made readable by this user only if it is new."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size == 0:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


class SQLiteVectors(BlobVectors):
    """Vectors in the SQLite file at ``path`` (the task store's, normally)."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True):
        """``create``: make the file when there is none (not for a task store's file: the
        task store makes its own, and would refuse one that holds only vectors)."""
        super().__init__()
        self.path = Path(path).expanduser().resolve()
        if not self.path.parent.is_dir():
            raise StoreError(f"cannot open vector store {self.path}: directory "
                             f"{self.path.parent} does not exist")
        if not create and not self.path.exists():
            raise StoreNotFound(f"no store at {self.path}: its vectors live in it; 'podium "
                                "init' makes one, or give --store URL")
        self._data_version: int | None = None
        try:
            _create_private(self.path)
            self._lockfile = _open_private(f"{self.path}-writer.lock", os.O_RDWR)
        except OSError as e:
            raise StoreError(f"cannot open vector store {self.path}: {e.strerror}") from None
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = 60000")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"vector store {self.path}: could not switch to WAL mode "
                                 f"(got {mode})")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            have = {r[0] for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if have and not have & {"schema_migrations", "memory_vectors"}:
                raise StoreError(f"{self.path} is an SQLite database of something else (tables "
                                 f"{', '.join(sorted(have)[:5])}), neither a Podium store nor "
                                 "a vector store")
            if not {"memory_vectors", "memory_vectors_state"} <= have:
                with self._write() as cur:
                    for statement in SCHEMA:
                        cur.execute(statement)
        except BaseException as e:
            self._close_files()
            if isinstance(e, sqlite3.Error):
                raise _error(e, self.path) from None
            raise

    # -- the dialect ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Any]:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN")
            try:
                yield cur
            finally:
                cur.execute("COMMIT")
        except sqlite3.Error as e:
            raise _error(e, self.path) from None
        finally:
            cur.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        fcntl.flock(self._lockfile, fcntl.LOCK_EX)  # the store's writer lock: fair to its claims
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise _error(e, self.path) from None
        finally:
            cur.close()
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)

    def _may_have_changed(self) -> bool:
        try:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as e:
            raise _error(e, self.path) from None
        changed = version != self._data_version
        self._data_version = version
        return changed

    def _after_write(self) -> None:
        """A passive checkpoint, outside the writer lock, once the log has grown (see the
        task store's ``CHECKPOINT_PAGES``)."""
        if self._unchecked_pages() >= CHECKPOINT_PAGES:
            with contextlib.suppress(sqlite3.Error):  # housekeeping: the next write tries again
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _unchecked_pages(self) -> int:
        """Pages in the write-ahead log not yet checkpointed (the ``-shm`` file's header; its
        descriptor is the process's one, never closed: see ``podium.store.sqlite``)."""
        return int(unchecked_wal_pages(self.path))

    # -- the rest ------------------------------------------------------------------------
    def describe(self) -> str:
        return f"SQLite {self.path} (table memory_vectors, exact search in process)"

    def size(self) -> int:
        """Bytes the vectors take in the file (their BLOBs; pages and index not counted)."""
        with self._mutex, self._snapshot() as cur:
            cur.execute("SELECT coalesce(sum(length(vector)), 0) FROM memory_vectors")
            return int(cur.fetchone()[0])

    def _close_files(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        fd = getattr(self, "_lockfile", -1)
        if fd is not None and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        with self._mutex:
            self._close_files()
            self._lockfile = -1  # (a closed store's writes fail: no other file's descriptor)
