"""Reading tasks: one, a listing (newest first, by cursor, filtered), the queue in the order it
runs, dependents, their counts by state, cost per time bucket, the ids starting with a prefix."""

from __future__ import annotations

from podium.errors import NotFound
from podium.models import Task, TaskState
from podium.store.sql import rows
from podium.store.sql.history import FINISHED_SQL
from podium.store.sql.tx import SqlBase, Tx


class TaskReads(SqlBase):
    def _load_task(self, tx: Tx, task_id: str | None, seq: int | None = None,
                   with_output: bool = True) -> Task:
        cols = rows.TASK_SQL if with_output else rows.TASK_SUMMARY_SQL
        if seq is not None:
            row = tx.one(f"SELECT {cols} FROM tasks WHERE seq = ?", (seq,))
        else:
            row = tx.one(f"SELECT {cols} FROM tasks WHERE id = ?", (task_id,))
        if row is None:
            raise NotFound(f"unknown task {task_id!r}")
        deps = [r["depends_on"] for r in
                tx.all("SELECT depends_on FROM task_deps WHERE task_id = ?", (row["id"],))]
        return rows.task(row, deps, with_output)

    def get_task(self, task_id) -> Task:
        with self._reader() as tx:
            return self._load_task(tx, task_id)

    def task_state(self, task_id) -> TaskState:
        with self._reader() as tx:
            row = tx.one("SELECT state FROM tasks WHERE id = ?", (task_id,))
        if row is None:
            raise NotFound(f"unknown task {task_id!r}")
        return TaskState(row["state"])

    def list_tasks(self, state=None, agent_id=None, limit=100, with_output=False,
                   before=None, role=None, text=None) -> list[Task]:
        cols = rows.TASK_SQL if with_output else rows.TASK_SUMMARY_SQL
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if role is not None:  # (the tasks_role index, m010)
            where.append("target_role = ?")
            params.append(role)
        if text is not None:
            # ASCII letters in any case; others as given (SQLite's LOWER and LIKE fold ASCII
            # only, PostgreSQL's LOWER folds every letter of the prompt: the second term finds
            # there what the first misses, such as a capital É given as it is written).
            where.append("(LOWER(prompt) LIKE ? ESCAPE '!' OR prompt LIKE ? ESCAPE '!')")
            params += [f"%{_like_escaped(_ascii_lower(text))}%", f"%{_like_escaped(text)}%"]
        if before is not None:
            where.append("seq < ?")
            params.append(before)
        sql = f"SELECT {cols} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        with self._reader() as tx:
            found = tx.all(sql, params)
            return self._with_deps(tx, list(reversed(found)), with_output)

    def _with_deps(self, tx: Tx, found: list, with_output: bool) -> list[Task]:
        """The tasks of ``found`` rows, in that order, with their dependencies."""
        deps: dict[str, list[str]] = {}
        ids = [r["id"] for r in found]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for d in tx.all(
                f"SELECT task_id, depends_on FROM task_deps WHERE task_id IN "
                f"({', '.join('?' * len(chunk))})", chunk):
                deps.setdefault(d["task_id"], []).append(d["depends_on"])
        return [rows.task(r, deps.get(r["id"], []), with_output) for r in found]

    def list_queue(self, limit) -> dict[TaskState, list[Task]]:
        # Unfinished tasks are few; queued ones through tasks_claim (state, priority, seq).
        order = {TaskState.RUNNING: "seq", TaskState.QUEUED: "priority, seq",
                 TaskState.BLOCKED: "priority, seq"}
        out: dict[TaskState, list[Task]] = {}
        with self._reader() as tx:
            for state, by in order.items():
                found = tx.all(f"SELECT {rows.TASK_SUMMARY_SQL} FROM tasks WHERE state = ? "
                               f"ORDER BY {by} LIMIT ?", (state.value, limit))
                out[state] = self._with_deps(tx, found, False)
        return out

    def dependents(self, task_id, limit) -> list[str]:
        with self._reader() as tx:  # (task_deps_reverse)
            found = tx.all("SELECT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id "
                           "WHERE d.depends_on = ? ORDER BY t.seq LIMIT ?", (task_id, limit))
        return [r["task_id"] for r in found]

    def cost_buckets(self, since, until, bucket_s) -> list[tuple[int, str | None, float, int,
                                                                 int]]:
        # Through tasks_finished (output_pruned, completed_at). The bucket is the floor of the
        # offset over the width: CAST truncates on SQLite and rounds on PostgreSQL, so one less
        # where it came out above.
        offset = "((completed_at - ?) / ?)"
        bucket = (f"CAST({offset} AS BIGINT) - CASE WHEN CAST({offset} AS BIGINT) > {offset} "
                  "THEN 1 ELSE 0 END")
        since, bucket_s = float(since), float(bucket_s)
        with self._reader() as tx:
            found = tx.all(
                f"SELECT {bucket} AS bucket, agent_id, SUM(COALESCE(cost_usd, 0)) AS cost, "
                "COUNT(*) AS n, SUM(COALESCE(tokens_in, 0) + COALESCE(tokens_out, 0)) AS tokens "
                f"FROM tasks WHERE {FINISHED_SQL} AND output_pruned IN (0, 1) "
                "AND completed_at >= ? AND completed_at < ? GROUP BY 1, agent_id ORDER BY 1",
                [since, bucket_s] * 3 + [since, float(until)])
        return [(int(r["bucket"]), r["agent_id"], float(r["cost"]), int(r["n"]),
                 int(r["tokens"])) for r in found]

    def counts(self) -> dict[str, int]:
        # Unfinished tasks are few: counted through tasks_state. Finished ones are counted as
        # they finish (podium.store.sql.history). One statement: one snapshot.
        with self._reader() as tx:
            by_state = tx.all(
                "SELECT state, COUNT(*) AS n FROM tasks "
                "WHERE state IN ('blocked', 'queued', 'running') GROUP BY state "
                "UNION ALL SELECT state, n FROM task_counts")
        out = {s.value: 0 for s in TaskState}
        out.update({r["state"]: r["n"] for r in by_state})
        return out

    def queued_targets(self) -> list[tuple[str | None, str | None, int]]:
        with self._reader() as tx:  # (queued tasks are few: through tasks_state)
            found = tx.all("SELECT target_agent, target_role, COUNT(*) AS n FROM tasks "
                           "WHERE state = 'queued' GROUP BY target_agent, target_role")
        return [(r["target_agent"], r["target_role"], r["n"]) for r in found]

    def task_ids_with_prefix(self, prefix, limit) -> list[str]:
        # A range of the id's unique index, [prefix, its successor): byte order on SQLite and
        # under PostgreSQL's C collation (each id found is checked again here, whatever the
        # database's collation).
        upper = _successor(prefix)
        sql, params = "SELECT id FROM tasks WHERE id >= ?", [prefix]
        if upper is not None:
            sql += " AND id < ?"
            params.append(upper)
        with self._reader() as tx:
            found = tx.all(sql + " ORDER BY id LIMIT ?", [*params, limit])
        return [r["id"] for r in found if r["id"].startswith(prefix)]


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: there is
    none, every string from ``prefix`` on starts with it)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            step = 0xE000 if last + 1 == 0xD800 else last + 1  # (no lone surrogates)
            return prefix[:-1] + chr(step)
        prefix = prefix[:-1]
    return None


def _ascii_lower(text: str) -> str:
    """``text`` with its ASCII letters in lower case (and no other letter changed)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _like_escaped(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern with ``ESCAPE '!'``."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
