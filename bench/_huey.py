"""The peer: huey's SqliteHuey with its own consumer, driven the way the benchmarks need.

Run as a script it is one huey consumer process (``python bench/_huey.py consumer ...``); it
forks its worker processes itself (``worker_type='process'``), exactly as ``huey_consumer``
does. The benchmark process imports this module to build the same ``SqliteHuey`` and enqueue.

Measurements without touching huey's timing: a shared file (``Board``, mmap'd by every process)
has one slot per worker — pid, tasks done, first start, last end — written by huey's own
``SIGNAL_EXECUTING`` / ``SIGNAL_COMPLETE`` hooks, and one timestamp per task for the dispatch
benchmark, written by the task body itself. No lock is taken per task: each worker writes
only its own slot.

Durability: ``SyncSqliteStorage`` is huey's ``SqliteStorage`` with ``PRAGMA synchronous`` set to
the level asked for (huey's own knob only offers ``fsync=True`` → FULL and ``False`` → OFF).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

from huey import SqliteHuey
from huey import signals as S
from huey.storage import SqliteStorage

MAX_WORKERS = 128
SLOT = 4  # pid, count, first_start, last_end
HEADER = 1 + MAX_WORKERS * SLOT

#: Consumer polling settings. "default" is huey's own defaults; "tuned" polls every 1 ms and
#: never backs off, which buys low dispatch latency at a constant idle CPU cost.
MODES = {
    "default": dict(initial_delay=0.1, backoff=1.15, max_delay=10.0),
    "tuned": dict(initial_delay=0.001, backoff=1.0, max_delay=0.001),
}


class SyncSqliteStorage(SqliteStorage):
    def __init__(self, *args, synchronous: str = "NORMAL", **kwargs):
        self._synchronous = synchronous
        super().__init__(*args, **kwargs)

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn


class Board:
    """Shared doubles in a file: [slots used] + per-worker slots + per-task timestamps."""

    def __init__(self, path: Path, ntasks: int = 0, create: bool = False):
        self.path = path
        size = 8 * (HEADER + max(ntasks, 1))
        if create:
            with open(path, "wb") as f:
                f.truncate(size)
        self.fd = os.open(path, os.O_RDWR)
        size = os.fstat(self.fd).st_size
        self.mm = mmap.mmap(self.fd, size)
        self.arr = (ctypes.c_double * (size // 8)).from_buffer(self.mm)
        self.ntasks = size // 8 - HEADER
        self.slot = -1

    def claim_slot(self) -> int:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            n = int(self.arr[0])
            self.arr[0] = n + 1
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        base = 1 + n * SLOT
        self.arr[base] = os.getpid()
        self.slot = base
        return n

    # Read side (the benchmark process).
    def workers(self) -> list[tuple[int, int, float, float]]:
        out = []
        for i in range(int(self.arr[0])):
            b = 1 + i * SLOT
            out.append((int(self.arr[b]), int(self.arr[b + 1]), self.arr[b + 2], self.arr[b + 3]))
        return out

    def done(self) -> int:
        return sum(w[1] for w in self.workers())

    def first_start(self) -> float:
        starts = [w[2] for w in self.workers() if w[2] > 0]
        return min(starts) if starts else float("nan")

    def last_end(self) -> float:
        return max((w[3] for w in self.workers()), default=float("nan"))

    def task_time(self, i: int) -> float:
        return self.arr[HEADER + i]

    def set_task_time(self, i: int, t: float) -> None:
        self.arr[HEADER + i] = t

    def close(self) -> None:
        del self.arr
        self.mm.close()
        os.close(self.fd)


BOARD: Board | None = None


def make_huey(db: Path, synchronous: str, board_path: Path | None = None) -> SqliteHuey:
    """The SqliteHuey app with the benchmark's tasks registered."""
    huey = SqliteHuey("bench", filename=str(db), storage_class=SyncSqliteStorage,
                      synchronous=synchronous)

    @huey.task(name="noop")
    def noop():
        return None

    @huey.task(name="record")
    def record(i):
        # The task body starts: that is the moment the benchmark calls "started".
        BOARD.set_task_time(i, time.time())

    @huey.task(name="shell")
    def shell(i, shell_path, command):
        # What Podium's shell backend does: spawn the command, collect its output. The command
        # stamps when it began (bench/_common.py FifoStamps); the board says it is done.
        subprocess.run([shell_path, "-c", command], capture_output=True,
                       stdin=subprocess.DEVNULL, close_fds=True)
        BOARD.set_task_time(i, time.time())

    if board_path is not None:
        @huey.on_startup()
        def _slot():
            global BOARD
            BOARD = Board(board_path)
            BOARD.claim_slot()

        @huey.signal(S.SIGNAL_EXECUTING)
        def _started(signal, task):
            b = BOARD
            if b.arr[b.slot + 2] == 0:
                b.arr[b.slot + 2] = time.time()

        @huey.signal(S.SIGNAL_COMPLETE)
        def _completed(signal, task):
            b = BOARD
            b.arr[b.slot + 1] += 1
            b.arr[b.slot + 3] = time.time()

    huey.noop, huey.record, huey.shell = noop, record, shell  # type: ignore[attr-defined]
    return huey


def enqueue_bulk(huey: SqliteHuey, task_sigs: list) -> None:
    """Insert many tasks in ONE transaction (as Podium's add_tasks does), in huey's own format."""
    rows = [(huey.storage.name, huey.storage.to_blob(huey.serialize_task(t)), t.priority or 0)
            for t in task_sigs]
    with huey.storage.db(commit=True) as cur:
        cur.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)


def consumer_argv(db: Path, synchronous: str, board: Path, workers: int, mode: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "consumer", str(db), synchronous,
            str(board), str(workers), mode]


def wait_ready(board: Board, workers: int, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while int(board.arr[0]) < workers:
        if proc.poll() is not None:
            raise RuntimeError(f"huey consumer exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("huey workers did not start")
        time.sleep(0.02)


def _consumer_main(db: str, synchronous: str, board: str, workers: str, mode: str) -> None:
    huey = make_huey(Path(db), synchronous, Path(board))
    consumer = huey.create_consumer(workers=int(workers), worker_type="process", periodic=False,
                                    check_worker_health=True, **MODES[mode])
    consumer.run()


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "consumer":
        # Import ourselves by name: huey registers tasks as "<module>.<name>", and the
        # benchmark process that enqueues knows this module as "_huey", not "__main__".
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _huey

        _huey._consumer_main(*sys.argv[2:])
    else:
        sys.exit("usage: _huey.py consumer DB SYNCHRONOUS BOARD WORKERS default|tuned")
