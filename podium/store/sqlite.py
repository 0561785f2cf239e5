"""The embedded store: one SQLite file in WAL mode.

Writers take a kernel file lock (``flock``) before ``BEGIN IMMEDIATE``: SQLite's own busy
handler sleeps and retries, so with many writer processes one can starve for seconds; a writer
blocked in flock is woken as soon as the lock is released and races only the other waiters
(bench/fairness.py: worst claim wait ~0.2 s instead of ~3 s with 16 writers on 2 cores). Claims
are atomic because the whole claim runs inside that one immediate transaction. After a commit,
waiting processes are woken through the store's wake channel (``podium.wake``).

A process that holds the lock for ever (stopped, or hung on a dead disk) must not hang every
command behind it: a store opened with ``lock_timeout_s`` (``open_store`` gives one by default)
gives up waiting after that long (``StoreUnavailable``). Workers open theirs without (a worker
has its own stop watchdog), so their contended waits stay one blocking ``flock``; only a timed
wait pays for a waiting thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from podium.errors import StoreError, StoreUnavailable
from podium.store.migrations import MIGRATIONS
from podium.store.sql import SqlStore, Tx
from podium.wake import Listener, WakeChannel

TYPES = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "float": "REAL",
         "dialect": "sqlite"}
#: A write-ahead log checkpoint copies the log's pages into the database and waits for the disk
#: (twice). SQLite's automatic one runs inside the COMMIT of whichever writer crosses 1000
#: pages, i.e. while that writer still holds Podium's writer lock (every other writer waits for
#: the disk too) and before it can wake the agent it queued a task for, or start the task it
#: claimed. Instead, after each commit (and its wake-ups) a process reads how many pages the
#: log holds beyond the last checkpoint (the wal-index header in the ``-shm`` file: ``mxFrame``
#: at byte 16, ``nBackfill`` at byte 96, see sqlite.org/walformat.html) and, past
#: CHECKPOINT_PAGES, asks its own background thread for a PASSIVE checkpoint, which blocks
#: neither writers nor readers.
#: Writers that keep coming can keep a passive checkpoint from ever reaching the end of the log,
#: and the log only starts over once one does: past WAL_LIMIT_PAGES the thread checkpoints
#: inside the writer lock instead, where it catches up.
CHECKPOINT_PAGES = 1000
WAL_LIMIT_PAGES = 16384  # 64 MiB of 4 KiB pages
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _same(sql: str) -> str:
    return sql


def _null(value: None) -> None:
    return value


# sqlite3 binds an int, float, str or bytes as it is, and first asks any other value how to
# adapt itself: for None, with no adapter of its own, two failed attribute look-ups each time.
# A new task's row holds a dozen NULLs; this adapter answers for None at once. That was a fifth
# of the instructions of a 10,000-task add (callgrind, bench/README.md finding 12).
sqlite3.register_adapter(type(None), _null)


def _store_error(e: sqlite3.Error, path: Path) -> StoreError:
    msg = str(e)
    if "full" in msg:
        return StoreUnavailable(f"the disk holding {path} is full; free some space and retry")
    if "readonly" in msg or "read-only" in msg:
        return StoreError(f"store {path} is read-only")
    if "unable to open" in msg:
        return StoreError(f"cannot open store {path}: {msg}")
    if "not a database" in msg:
        return StoreError(f"{path} is not a Podium store (not an SQLite database)")
    return StoreError(f"store {path}: {msg}")


def _create_private(path: Path) -> None:
    """Create the store's file readable by this user only, whatever the umask (SQLite gives
    its ``-wal`` and ``-shm`` files the database's mode). An empty file already there (``podium
    init`` makes a store in it) is made so too, with any ``-wal`` or ``-shm`` it has."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for p in (path, *(Path(f"{path}{end}") for end in ("-wal", "-shm"))):
            try:
                if stat.S_IMODE(os.stat(p).st_mode) != 0o600:
                    os.chmod(p, 0o600)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StoreError(f"cannot make store {path} private (chmod 600 {p}): "
                                 f"{e.strerror}") from None
        return
    except OSError as e:
        raise StoreError(f"cannot create store {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


#: What ``stat`` calls the files a store cannot be, for the message refusing them.
_NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISSOCK, "a socket"))


def _check_parent(path: Path) -> None:
    """The directory a new store at ``path`` goes in is one."""
    parent = path.parent
    try:
        is_dir = stat.S_ISDIR(os.stat(parent).st_mode)
    except FileNotFoundError:
        raise StoreError(f"cannot create store {path}: directory {parent} does not "
                         "exist") from None
    except OSError as e:
        raise StoreError(f"cannot open store {path}: {e.strerror}") from None
    if not is_dir:
        raise StoreError(f"cannot create store {path}: {parent} is not a directory")


def check_path(path: Path) -> None:
    """Refuse, with one line and before anything is created, a store path that cannot be one:
    a directory, a FIFO, a device or a socket; one in a directory that does not exist (or is
    no directory); one this user may not read. Nothing there yet is fine (a new store)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _check_parent(path)
        return
    except NotADirectoryError:
        file = next((d for d in reversed(path.parents) if d.exists() and not d.is_dir()),
                    path.parent)
        raise StoreError(f"cannot open store {path}: {file} is not a directory") from None
    except OSError as e:
        raise StoreError(f"cannot open store {path}: {e.strerror}") from None
    for test, kind in _NOT_FILES:
        if test(st.st_mode):
            raise StoreError(f"cannot open store {path}: it is {kind}, not a Podium store "
                             "(give a file path)")
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot open store {path}: permission denied (this user may not "
                         "read it)")


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """An SQLite database with tables but none of Podium's is somebody else's: not a store."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if names and "schema_migrations" not in names:
        raise StoreError(f"{path} is an SQLite database of something else (tables "
                         f"{', '.join(sorted(names)[:5])}), not a Podium store")


#: One read-only descriptor of each ``-shm`` file this process reads the header of, kept open
#: for the life of the process. Never closed: closing any descriptor of a file drops every
#: POSIX lock the process holds on it -- SQLite's own included, whose lock on the ``-shm`` says
#: "a connection is open here". Without it, another process's last connection to close takes
#: itself for the last one anywhere and deletes the write-ahead log from under this process's
#: other connections, which then write to a log no other process reads (a store opened and
#: closed beside another of the same file, as the web server and the memory index do).
_SHM_FDS: dict[str, int] = {}
_SHM_OPENING = threading.Lock()


def unchecked_wal_pages(db_path: str | os.PathLike) -> int:
    """Pages in the write-ahead log of the database at ``db_path`` that no checkpoint has
    copied yet: the wal-index header in its ``-shm`` file (``mxFrame`` at byte 16,
    ``nBackfill`` at byte 96, sqlite.org/walformat.html); 0 when it cannot be read."""
    path = f"{os.fspath(db_path)}-shm"
    fd = _SHM_FDS.get(path)
    try:
        if fd is None:
            with _SHM_OPENING:
                fd = _SHM_FDS.get(path)
                if fd is None:
                    fd = _SHM_FDS[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        header = os.pread(fd, 100, 0)
    except OSError:
        return 0
    if len(header) < 100:
        return 0
    return struct.unpack_from("=I", header, 16)[0] - struct.unpack_from("=I", header, 96)[0]


class SQLiteStore(SqlStore):
    def __init__(self, path: str | os.PathLike, synchronous: str = "NORMAL", migrate: bool = True,
                 create_in_empty_file: bool = False,
                 lock_timeout_s: float | None = None):
        """Open the store at ``path``, creating it (0600) when there is no file. An existing
        empty file is refused (it is no store: a truncated or mistaken one) unless
        ``create_in_empty_file`` (``podium init``), which makes it 0600 too. A path that cannot
        be a store (``check_path``: a directory, a FIFO, a device...) is refused before
        anything is created. A write waits up to ``lock_timeout_s`` for the writer lock (None:
        for as long as it takes)."""
        self.path = Path(path).resolve()
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS:
            raise StoreError(f"bad synchronous={synchronous!r}: "
                             f"expected one of {', '.join(SYNCHRONOUS)}")
        self.synchronous = sync
        self.url = f"sqlite://{self.path}"
        self.home = self.path.parent
        check_path(self.path)
        self.lock_timeout_s = lock_timeout_s
        lock_path = self._lock_path = str(self.path) + "-writer.lock"
        made_lock = not os.path.exists(lock_path)
        try:
            self._lockfile = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open store {self.path}: {e.strerror}") from None
        self._lock = threading.RLock()
        try:
            if self._is_new():
                # Whoever creates the file holds the writer lock until it is migrated: another
                # process that finds it empty meanwhile waits, then finds a store.
                fcntl.flock(self._lockfile, fcntl.LOCK_EX)
                if self._is_new():
                    if self.path.exists() and not create_in_empty_file:
                        raise StoreError(
                            f"{self.path} is an empty file, not a Podium store; remove it, or "
                            "make a new store in it with 'podium init'")
                    _create_private(self.path)
                    migrate = True
            self._conn = sqlite3.connect(
                str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA busy_timeout = 60000")
            _refuse_foreign(self._conn, self.path)
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"store {self.path}: could not switch to WAL mode (got {mode})")
            self._conn.execute(f"PRAGMA synchronous = {sync}")
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_PAGES * 4096}")
            self._checkpointer: _Checkpointer | None = None
            self._channel = WakeChannel(str(self.path))
            if migrate:
                self.migrate()
        except BaseException as e:
            os.close(self._lockfile)  # (and with it the lock)
            refused = isinstance(e, StoreError) or "not a database" in str(e) \
                or "unable to open" in str(e)
            if made_lock and refused:  # (nobody uses it as a store: no one else holds the lock)
                os.unlink(lock_path)  # a refused file is left as it was found
            if isinstance(e, sqlite3.Error):
                raise _store_error(e, self.path) from None
            if isinstance(e, OSError):
                raise StoreError(f"cannot open store {self.path}: {e.strerror}") from None
            raise
        fcntl.flock(self._lockfile, fcntl.LOCK_UN)

    def _is_new(self) -> bool:
        try:
            return self.path.stat().st_size == 0
        except FileNotFoundError:
            return True

    # -- dialect hooks --------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._lock:
            # The writer lock (see the module's docstring), taken inline: a context manager
            # less to run on the cold CPU a dispatch wakes up to.
            try:
                fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = self._lockfile
            except BlockingIOError:
                held = self._wait_for_writer_lock()
            cur = None
            try:
                cur = self._conn.cursor()
                try:
                    cur.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as e:
                    raise _store_error(e, self.path) from None
                tx = Tx(cur, _same)
                try:
                    yield tx
                    cur.execute("COMMIT")
                except BaseException as exc:
                    try:
                        cur.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    if isinstance(exc, sqlite3.Error):
                        raise _store_error(exc, self.path) from None
                    raise
            finally:
                if cur is not None:
                    cur.close()
                fcntl.flock(held, fcntl.LOCK_UN)
                if held != self._lockfile:
                    os.close(held)

    def _wait_for_writer_lock(self) -> int:
        """Wait for the writer lock another process holds; the descriptor that holds it.

        Without a timeout, one blocking ``flock`` on the store's own descriptor. With one, a
        thread blocks in ``flock`` on a descriptor of its own (the kernel wakes waiters as
        fairly as before) while this one waits for it up to the timeout; a thread given up on
        releases the lock as soon as it gets it. (Its own open file: a lock taken through the
        store's descriptor would be the store's, and its release would end a later
        transaction's hold.)
        """
        if self.lock_timeout_s is None:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            return self._lockfile
        try:
            fd = os.open(self._lock_path, os.O_RDWR)
        except OSError as e:
            raise StoreUnavailable(f"store {self.path}: cannot open its writer lock: "
                                   f"{e.strerror}") from None
        got = threading.Event()
        decided = threading.Lock()
        given_up = False

        def wait() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                return
            with decided:
                if given_up:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                    return
                got.set()

        threading.Thread(target=wait, name="podium-writer-lock", daemon=True).start()
        if not got.wait(self.lock_timeout_s):
            with decided:
                if not got.is_set():
                    given_up = True
                    raise StoreUnavailable(
                        f"store {self.path} is locked: another process has held its writer "
                        f"lock for {self.lock_timeout_s:g} s (a stopped or hung podium "
                        "process?); nothing was changed")
        return fd

    def _after_commit(self) -> None:
        if self._unchecked_pages() >= CHECKPOINT_PAGES:
            if self._checkpointer is None or self._checkpointer.pid != os.getpid():
                # (a forked child has the object but not the thread)
                self._checkpointer = _Checkpointer(self.path, self.synchronous)
            self._checkpointer.request()
        super()._after_commit()  # (the automatic prune's look: podium.store.sql.history)

    def _unchecked_pages(self) -> int:
        """Pages in the write-ahead log that no checkpoint has copied yet (see above)."""
        return unchecked_wal_pages(self.path)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Tx]:
        # Each statement reads its own snapshot (autocommit): the reads that span several
        # statements only add immutable details (a task's dependencies), so no BEGIN is needed.
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield Tx(cur, _same)
            except sqlite3.Error as e:
                raise _store_error(e, self.path) from None
            finally:
                cur.close()

    def _wake(self, agents, watchers, handed) -> None:
        self._channel.notify(agents, watchers, handed)

    def agent_waiter(self, agent_id: str) -> Listener:
        return self._channel.agent_listener(agent_id)

    def event_waiter(self) -> Listener:
        return self._channel.watch_listener()

    # -- lifecycle ------------------------------------------------------------------
    def migrate(self) -> list[str]:
        with self._lock:
            try:
                have = {r[0] for r in self._conn.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name = 'schema_migrations'")}
                if have:
                    done = {r[0] for r in self._conn.execute("SELECT name FROM schema_migrations")}
                    if all(name in done for name, _ in MIGRATIONS):
                        return []
            except sqlite3.Error as e:
                raise _store_error(e, self.path) from None
            with self._transaction() as tx:
                return self._apply_migrations(tx, MIGRATIONS, TYPES)

    def compact(self) -> tuple[int, int]:
        """``VACUUM`` (the file is rewritten without its free pages) under the writer lock,
        then a checkpoint that truncates the write-ahead log: the file shrinks."""
        before = self._size()
        with self._lock:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            try:
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                raise _store_error(e, self.path) from None
            finally:
                fcntl.flock(self._lockfile, fcntl.LOCK_UN)
        return before, self._size()

    def _size(self) -> int:
        """Bytes of the database file and its write-ahead log."""
        total = 0
        for path in (self.path, Path(f"{self.path}-wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def exposure(self) -> list[str]:
        """Files of an older store, or chmod'ed since, that other users may read or write."""
        found = []
        for path in (self.path.parent, self.path, *(Path(f"{self.path}{end}") for end in
                     ("-wal", "-shm", "-writer.lock")), self.home / "logs",
                     *sorted((self.home / "logs").glob("*.log"))):
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except OSError:
                continue
            if path.is_dir() and path == self.path.parent and mode & 0o022 == 0:
                continue  # (a project directory others may read, but not change, is fine)
            if mode & 0o077:
                found.append(f"{path} is open to other users (mode {mode:o}): "
                             f"chmod {'700' if path.is_dir() else '600'} {path}")
        return found

    def close(self) -> None:
        self._stop_pruning()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._channel.close()
            try:
                self._conn.close()
            finally:
                os.close(self._lockfile)


class _Checkpointer:
    """A process's background checkpoints (see CHECKPOINT_PAGES), on a connection of its own."""

    def __init__(self, path: Path, synchronous: str):
        self.path, self.synchronous = path, synchronous
        self.pid = os.getpid()
        self.wanted = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="podium-checkpoint", daemon=True)
        self.thread.start()

    def request(self) -> None:
        self.wanted.set()

    def stop(self) -> None:
        self.stopping = True
        self.wanted.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # fsyncs as the writers
            # Its own open file for the writer lock: flock excludes other open files, so this
            # process's own transactions wait for a locked checkpoint too.
            lockfile = os.open(str(self.path) + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except (sqlite3.Error, OSError):
            return  # housekeeping only: the store still works, the log just grows
        locked = False
        try:
            while True:
                self.wanted.wait()
                self.wanted.clear()
                if self.stopping:
                    return
                try:
                    if locked:
                        fcntl.flock(lockfile, fcntl.LOCK_EX)
                        try:
                            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        finally:
                            fcntl.flock(lockfile, fcntl.LOCK_UN)
                    else:
                        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue  # the next request tries again
                # row: (busy, pages in the log since it last started over, pages copied)
                locked = row[1] > WAL_LIMIT_PAGES
        finally:
            conn.close()
            os.close(lockfile)
