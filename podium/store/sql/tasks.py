"""Reading tasks: one, a listing (newest first, by cursor), their counts by state, the ids
starting with a prefix."""

from __future__ import annotations

from podium.errors import NotFound
from podium.models import Task, TaskState
from podium.store.sql import rows
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
                   before=None) -> list[Task]:
        cols = rows.TASK_SQL if with_output else rows.TASK_SUMMARY_SQL
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
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
            deps: dict[str, list[str]] = {}
            if found:
                ids = [r["id"] for r in found]
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    for d in tx.all(
                        f"SELECT task_id, depends_on FROM task_deps WHERE task_id IN "
                        f"({', '.join('?' * len(chunk))})", chunk):
                        deps.setdefault(d["task_id"], []).append(d["depends_on"])
        return [rows.task(r, deps.get(r["id"], []), with_output) for r in reversed(found)]

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
