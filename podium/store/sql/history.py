"""History: finished tasks counted as they finish, and pruning what is old.

A store that has run for months holds millions of finished tasks and events; what reads the
present (claims, adds, listings, status, dashboards) must not pay for them. Unfinished tasks are
few, so they are counted through the ``tasks_state`` index; finished ones are counted in
``task_counts`` (migration m008) by the transactions that finish them (``count_finished``:
one deferred update per state, which on PostgreSQL runs in the commit's tail, under the events
lock that every such commit takes, so concurrent finishers never wait on each other's counter
rows before their tail).

``prune`` removes what is older than a time in short transactions (a chunk of rows each, so
writers wait at most one chunk): the event log's oldest part, and finished tasks with their
dependency rows and messages, or only their output. ``PODIUM_RETENTION`` (see README) makes
every long-running process look once an hour, after a commit, whether the team's hourly prune
is due, and run it on a thread of its own.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time

from podium import limits
from podium.clock import now
from podium.errors import PodiumError
from podium.models import TaskState
from podium.store.base import Pruned
from podium.store.sql.tx import SqlBase, Tx

_log = logging.getLogger("podium.store")

#: Finished states, as the WHERE term of the ``tasks_finished`` index (the same text, so that
#: both planners use it).
FINISHED_SQL = "state IN ('completed', 'failed', 'cancelled')"
_FINISHED = tuple(s.value for s in TaskState if s.finished)
#: One state's counter change; its parameters ([delta, state]) grow until the commit.
_BUMP_SQL = "UPDATE task_counts SET n = n + ? WHERE state = ?"
#: Rows one prune transaction removes at most (tasks; events are removed by id ranges).
TASK_CHUNK = 500
EVENT_CHUNK = 5000


def count_finished(tx: Tx, state: TaskState | str, n: int = 1) -> None:
    """Count ``n`` tasks more (or fewer) in the finished ``state``, at this transaction's commit.

    Every statement that moves a task into a finished state, or deletes finished tasks, calls
    this in the same transaction. Changes of one state add up in one deferred update.
    """
    value = state if isinstance(state, str) else state.value
    for sql, params, _ in tx.deferred:
        if sql is _BUMP_SQL and params[1] == value:
            params[0] += n
            return
    tx.defer(_BUMP_SQL, [n, value])


class History(SqlBase):
    #: Seconds after a process's first commit before it first looks whether an automatic prune
    #: is due (short commands never do), and between two looks; the team prunes at most once
    #: per ``auto_prune_every_s`` whatever the number of processes (``housekeeping`` table).
    auto_prune_first_s = 60.0
    auto_prune_every_s = 3600.0
    #: Monotonic time of the next look (-1: not yet started; inf: no retention set).
    _prune_next = -1.0
    _prune_thread: threading.Thread | None = None
    _prune_stopping = False
    _retention_setting: tuple[float, bool] | None = None

    # -- counts -------------------------------------------------------------------------
    def _scan_counts(self, tx: Tx) -> dict[str, int]:
        """Tasks by state, read from every row (what ``counts`` must always equal)."""
        out = {s.value: 0 for s in TaskState}
        out.update({r["state"]: r["n"] for r in
                    tx.all("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")})
        return out

    def _after_copy(self, tx: Tx) -> None:
        # Rows were loaded as they are: count the finished ones afresh.
        found = self._scan_counts(tx)
        for state in _FINISHED:
            tx.execute("UPDATE task_counts SET n = ? WHERE state = ?", (found[state], state))
        super()._after_copy(tx)

    # -- pruning ------------------------------------------------------------------------
    def prune(self, before, keep_results=False, dry_run=False) -> Pruned:
        out = Pruned()
        self._prune_events(before, dry_run, out)
        self._prune_tasks(before, keep_results, dry_run, out)
        if not dry_run and (out.events or out.tasks or out.outputs):
            self.add_event("history.pruned", data={"before": before, **vars(out)})
        return out

    def _prune_events(self, before: float, dry_run: bool, out: Pruned) -> None:
        """The log's prefix before its first event stamped at or after ``before``; the newest
        event always stays (SQLite gives a new row the largest id + 1)."""
        with self._reader() as tx:
            span = tx.one("SELECT MIN(id) AS lo, MAX(id) AS hi FROM events")
            if span["lo"] is None:
                return
            first_kept = tx.one("SELECT id FROM events WHERE ts >= ? ORDER BY id LIMIT 1",
                                (before,))
            end = min(first_kept["id"] if first_kept else span["hi"], span["hi"])
            if dry_run:
                out.events = tx.one("SELECT COUNT(*) AS n FROM events WHERE id < ?",
                                    (end,))["n"]
                return
        for lo in range(span["lo"], end, EVENT_CHUNK):
            if self._prune_stopping:
                return
            with self._write() as tx:
                out.events += tx.execute("DELETE FROM events WHERE id >= ? AND id < ?",
                                         (lo, min(lo + EVENT_CHUNK, end))).rowcount

    def _prune_tasks(self, before: float, keep_results: bool, dry_run: bool,
                     out: Pruned) -> None:
        # (output_pruned leads the index: a prune that keeps results skips those it cleared.)
        where = (f"{FINISHED_SQL} AND output_pruned {'= 0' if keep_results else 'IN (0, 1)'} "
                 "AND completed_at < ?")
        if dry_run:
            with self._reader() as tx:
                n = tx.one(f"SELECT COUNT(*) AS n FROM tasks WHERE {where}", (before,))["n"]
                if keep_results:
                    out.outputs = n
                    return
                out.tasks = n
                for table in ("task_deps", "messages"):
                    setattr(out, table, tx.one(
                        f"SELECT COUNT(*) AS n FROM {table} WHERE task_id IN "
                        f"(SELECT id FROM tasks WHERE {where})", (before,))["n"])
            return
        while not self._prune_stopping:
            with self._write() as tx:
                found = tx.all(f"SELECT seq, id, state FROM tasks WHERE {where} "
                               f"LIMIT {TASK_CHUNK}", (before,))
                if not found:
                    return
                seqs = [r["seq"] for r in found]
                marks = ", ".join("?" * len(found))
                if keep_results:
                    out.outputs += tx.execute(
                        "UPDATE tasks SET output = NULL, stderr = NULL, output_pruned = 1 "
                        f"WHERE seq IN ({marks})", seqs).rowcount
                else:
                    ids = [r["id"] for r in found]
                    out.task_deps += tx.execute(
                        f"DELETE FROM task_deps WHERE task_id IN ({marks})", ids).rowcount
                    out.messages += tx.execute(
                        f"DELETE FROM messages WHERE task_id IN ({marks})", ids).rowcount
                    out.tasks += tx.execute(f"DELETE FROM tasks WHERE seq IN ({marks})",
                                            seqs).rowcount
                    for state, n in collections.Counter(r["state"] for r in found).items():
                        count_finished(tx, state, -n)
            if len(found) < TASK_CHUNK:
                return

    # -- automatic pruning --------------------------------------------------------------
    def _after_commit(self) -> None:
        if time.monotonic() >= self._prune_next:
            self._look_for_prune()
        super()._after_commit()

    def _look_for_prune(self) -> None:
        """Start the automatic prune on a thread of its own when it may be due."""
        if self._prune_next < 0:  # this process's first commit: read the setting
            retention = self._retention()
            self._retention_setting = retention
            self._prune_next = (math.inf if retention is None
                                else time.monotonic() + self.auto_prune_first_s)
            return
        self._prune_next = time.monotonic() + self.auto_prune_every_s
        if self._prune_thread is not None and self._prune_thread.is_alive():
            return
        self._prune_thread = threading.Thread(target=self._auto_prune, name="podium-prune",
                                              daemon=True)
        self._prune_thread.start()

    @staticmethod
    def _retention() -> tuple[float, bool] | None:
        """``PODIUM_RETENTION`` (age and whether results are kept), or None when unset; a bad
        value is logged and turns automatic pruning off."""
        value = os.environ.get("PODIUM_RETENTION", "")
        if not value.strip():
            return None
        try:
            return limits.retention(value)
        except PodiumError as e:
            _log.warning("podium: automatic pruning is off: %s", e)
            return None

    def _auto_prune(self) -> None:
        """Prune by the retention setting, unless another process of the team did lately."""
        age, keep_results = self._retention_setting or (math.inf, True)
        try:
            t = now()
            with self._write() as tx:
                due = tx.execute(
                    "UPDATE housekeeping SET done_at = ? WHERE name = 'prune' AND done_at <= ?",
                    (t, t - self.auto_prune_every_s)).rowcount
            if due:
                done = self.prune(t - age, keep_results)
                _log.info("podium: automatic prune: %s", vars(done))
        except Exception as e:  # housekeeping: the store works on, the next look tries again
            _log.warning("podium: automatic prune failed: %s", e)

    def _stop_pruning(self, timeout: float = 5.0) -> None:
        """Stop this process's automatic pruning (the store is closing)."""
        self._prune_next = math.inf
        self._prune_stopping = True
        if self._prune_thread is not None:
            self._prune_thread.join(timeout)

