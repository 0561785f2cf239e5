"""Moving a team's whole history from one store to another (SQLite <-> PostgreSQL).

Rows are copied table by table with their ids, in one transaction on the destination, which
must be empty. Export and backup come for free: ``podium store copy postgresql://... backup.db``.
The copy's agents are all stopped: the processes of those live in the source serve the source
(``podium down`` on the copy must not signal them); its tasks are as they were, and a task
that was running is taken back by the copy's lease recovery, as after a crash.
"""

from __future__ import annotations

from collections.abc import Callable

from podium.errors import Conflict, InvalidInput
from podium.models import AgentState
from podium.store.base import Store
from podium.store.sql import SqlStore

#: Tables in an order that keeps references meaningful while loading.
TABLES = ["agents", "tasks", "task_deps", "messages", "events", "context", "memories"]
#: Tables that a new store's migrations fill with rows of their own: the copied rows replace
#: them (the memory cursor: how far the copied events were remembered).
SEEDED = ["memory_cursor"]
#: Columns that a dialect computes itself (PostgreSQL's keyword index of memories): not copied.
COMPUTED = {"memories": {"tsv"}}
BATCH = 1000


def copy_store(src: Store, dst: Store,
               progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    if not isinstance(src, SqlStore) or not isinstance(dst, SqlStore):
        raise InvalidInput("store copy works between SQL stores")
    if src.url == dst.url:
        raise InvalidInput("source and destination are the same store")
    counts: dict[str, int] = {}
    with dst._write() as out:
        for table in TABLES:
            if out.one(f"SELECT 1 FROM {table} LIMIT 1") is not None:
                raise Conflict(f"destination {dst.url} is not empty (table {table} has rows); "
                               "copy into a new store")
        for table in TABLES + SEEDED:
            n = 0
            if table in SEEDED:
                out.execute(f"DELETE FROM {table}")
            with src._reader() as inp:
                rows = inp.all(f"SELECT * FROM {table}")
            if rows:
                cols = [c for c in rows[0].keys() if c not in COMPUTED.get(table, ())]
                sql = (f"INSERT INTO {table} ({', '.join(cols)}) "
                       f"VALUES ({', '.join('?' * len(cols))})")
                for i in range(0, len(rows), BATCH):
                    out.cur.executemany(out._convert(sql),
                                        [tuple(r[c] for c in cols) for r in rows[i:i + BATCH]])
                n = len(rows)
            counts[table] = n
            if progress:
                progress(table, n)
        live = [s.value for s in AgentState if s.live]
        out.execute(f"UPDATE agents SET state = ?, current_task = NULL "
                    f"WHERE state IN ({', '.join('?' * len(live))})",
                    (AgentState.STOPPED.value, *live))
        dst._after_copy(out)
    return counts
