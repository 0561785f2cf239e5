"""Memories in the store: remembered items with their provenance, and keyword search over them.

A memory is a row of ``memories`` (migration m009): a chunk of a finished task's prompt and
output, a note, or a version of a shared context document, with who and what it came from.
Keyword search is the dialect's own full-text search: on SQLite an FTS5 table with external
content (the memory's ``seq`` is its rowid), kept in step by the very statements that add and
remove memories (FTS5 needs a removed row's text to forget it, so removals read it first); on
PostgreSQL a generated ``tsvector`` column with a GIN index. Both stem English words.

The vectors are not here: a vector store (``podium.memory``) holds them by memory id, and
``model_id`` records which model made a memory's vector (None: it has none yet). The indexers of
several hosts share the embedding by claiming what each is about to embed for a while
(``claim_memories_to_embed``, ``embed_claimed_until``: migration m011).

What finished tasks and context versions to remember is read from the event log after the
memory cursor (``work_to_remember``): events become visible in id order on both dialects (see
``podium.store.postgres``), so nothing is skipped, and moving the cursor in the transaction
that adds the memories (compare-and-set) makes each piece of work remembered once however many
processes catch up at the same time. Nothing here runs in a claim or a result's transaction.
"""

from __future__ import annotations

import json
from typing import Any

from podium.clock import now
from podium.models import Memory
from podium.store.base import FinishedTask, MemoryCounts, MemoryFilter, WorkToRemember
from podium.store.sql import rows
from podium.store.sql.tx import SqlBase, Tx

#: The events whose work is remembered (a cancelled task solved nothing to remember).
REMEMBERED_EVENTS = ("task.completed", "task.failed", "context.set")
#: Events one ``work_to_remember`` looks through at most (most events are not remembered).
EVENT_WINDOW = 20_000
#: Ids per ``IN (...)`` list.
CHUNK = 500

_COLUMNS = ("id", "kind", "title", "text", "task_id", "agent_id", "role", "source",
            "created_at", "model_id", "meta")
_INSERT = (f"INSERT INTO memories ({', '.join(_COLUMNS)}) VALUES "
           f"({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (id) DO NOTHING RETURNING seq")
#: The tasks' columns for ``work_to_remember`` (qualified: agents has columns of those names).
_TASK_COLUMNS = ", ".join(f"t.{c.name}" for c in rows.TASK_COLUMNS if not c.large)


def _memory(row: Any) -> Memory:
    return Memory(id=row["id"], kind=row["kind"], title=row["title"], text=row["text"],
                  source=row["source"], created_at=row["created_at"], task_id=row["task_id"],
                  agent_id=row["agent_id"], role=row["role"], model_id=row["model_id"],
                  meta=json.loads(row["meta"]), seq=row["seq"])


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _filter_sql(where: MemoryFilter | None, alias: str = "") -> tuple[str, list[Any]]:
    """``AND ...`` terms for a filter, and their parameters."""
    if where is None:
        return "", []
    terms: list[str] = []
    params: list[Any] = []
    if where.kind is not None:
        terms.append(f"{alias}kind = ?")
        params.append(where.kind)
    if where.role is not None:
        terms.append(f"{alias}role = ?")
        params.append(where.role)
    if where.since is not None:
        terms.append(f"{alias}created_at >= ?")
        params.append(where.since)
    if where.not_task is not None:
        terms.append(f"({alias}task_id IS NULL OR {alias}task_id <> ?)")
        params.append(where.not_task)
    return "".join(f" AND {t}" for t in terms), params


class Memories(SqlBase):
    #: How the dialect searches keywords: ``fts5`` (SQLite) or ``tsvector`` (PostgreSQL).
    keyword_index = "fts5"

    # -- remembering finished work ------------------------------------------------------
    def memory_cursor(self) -> int:
        with self._reader() as tx:
            row = tx.one("SELECT position FROM memory_cursor WHERE name = 'events'")
        return int(row["position"]) if row else 0

    def work_to_remember(self, after, limit, head, tail) -> WorkToRemember:
        head, tail = int(head), int(tail)
        with self._reader() as tx:
            last = tx.one("SELECT MAX(id) AS m FROM events")["m"]
            if last is None or last <= after:
                return WorkToRemember(read_to=after)
            upper = min(after + EVENT_WINDOW, last)
            found = tx.all(
                "SELECT id, kind, task_id, data FROM events WHERE id > ? AND id <= ? AND kind "
                f"IN ({_marks(len(REMEMBERED_EVENTS))}) ORDER BY id LIMIT ?",
                (after, upper, *REMEMBERED_EVENTS, limit))
            read_to = found[-1]["id"] if len(found) >= limit else upper
            task_ids = list(dict.fromkeys(r["task_id"] for r in found
                                          if r["kind"] != "context.set" and r["task_id"]))
            keys = list(dict.fromkeys(json.loads(r["data"]).get("key") for r in found
                                      if r["kind"] == "context.set"))
            work = WorkToRemember(read_to=read_to)
            for i in range(0, len(task_ids), CHUNK):
                part = task_ids[i:i + CHUNK]
                for r in tx.all(
                        f"SELECT {_TASK_COLUMNS}, length(t.output) AS output_bytes, "
                        f"substr(t.output, 1, {head}) AS output_head, "
                        f"CASE WHEN length(t.output) > {head + tail} THEN "
                        f"substr(t.output, length(t.output) - {tail - 1}) END AS output_tail, "
                        "a.roles AS agent_roles FROM tasks t "
                        "LEFT JOIN agents a ON a.id = t.agent_id "
                        f"WHERE t.id IN ({_marks(len(part))}) "
                        "AND t.state IN ('completed', 'failed')", part):
                    work.tasks.append(FinishedTask(
                        task=rows.task(r, [], with_output=False),
                        output_head=bytes(r["output_head"] or b""),
                        output_tail=bytes(r["output_tail"] or b""),
                        output_bytes=int(r["output_bytes"] or 0),
                        agent_roles=json.loads(r["agent_roles"]) if r["agent_roles"] else []))
            order = {t: i for i, t in enumerate(task_ids)}
            work.tasks.sort(key=lambda f: order[f.task.id])
            if keys := [k for k in keys if k]:
                work.contexts = [rows.context_entry(r) for r in tx.all(
                    f"SELECT * FROM context WHERE key IN ({_marks(len(keys))}) ORDER BY key",
                    keys)]
        return work

    # -- adding and removing --------------------------------------------------------------
    def add_memories(self, memories, replace_tasks=(), cursor=None) -> list[str] | None:
        with self._write() as tx:
            if cursor is not None:
                moved = tx.execute("UPDATE memory_cursor SET position = ? "
                                   "WHERE name = 'events' AND position = ?",
                                   (cursor[1], cursor[0])).rowcount
                if not moved:
                    return None
            removed: list[str] = []
            replace = list(dict.fromkeys(replace_tasks))
            for i in range(0, len(replace), CHUNK):
                part = replace[i:i + CHUNK]
                removed += self._remove(tx, tx.all(
                    "SELECT seq, id, text FROM memories WHERE source = 'auto' AND kind = 'task' "
                    f"AND task_id IN ({_marks(len(part))})", part))
            added = set()
            for m in memories:
                row = tx.one(_INSERT, (m.id, m.kind, m.title, m.text, m.task_id, m.agent_id,
                                       m.role, m.source, m.created_at, m.model_id,
                                       json.dumps(m.meta, ensure_ascii=False)))
                if row is None:
                    continue  # (it exists: the same work, remembered already)
                added.add(m.id)
                if self.keyword_index == "fts5":
                    tx.execute("INSERT INTO memories_fts (rowid, text) VALUES (?, ?)",
                               (row["seq"], m.text))
                if m.source != "auto":
                    tx.event("memory.added", m.agent_id, m.task_id, memory_id=m.id,
                             memory_kind=m.kind, source=m.source)
        return [r for r in removed if r not in added]

    def _remove(self, tx: Tx, found: list[Any]) -> list[str]:
        """Delete these rows (``seq``, ``id``, ``text``) and their keywords."""
        if not found:
            return []
        if self.keyword_index == "fts5":
            tx.executemany("INSERT INTO memories_fts (memories_fts, rowid, text) "
                           "VALUES ('delete', ?, ?)", [(r["seq"], r["text"]) for r in found])
        seqs = [r["seq"] for r in found]
        tx.execute(f"DELETE FROM memories WHERE seq IN ({_marks(len(seqs))})", seqs)
        return [r["id"] for r in found]

    def forget_memories(self, ids=(), task_id=None) -> list[str]:
        wanted = list(dict.fromkeys(ids))
        removed: list[str] = []
        with self._write() as tx:
            for i in range(0, len(wanted), CHUNK):
                part = wanted[i:i + CHUNK]
                removed += self._remove(tx, tx.all(
                    f"SELECT seq, id, text FROM memories WHERE id IN ({_marks(len(part))})",
                    part))
            if task_id is not None:
                removed += self._remove(tx, tx.all(
                    "SELECT seq, id, text FROM memories WHERE task_id = ?", (task_id,)))
            if removed:
                tx.event("memory.forgotten", None, task_id, memory_ids=removed)
        return removed

    # -- reading ----------------------------------------------------------------------------
    def get_memories(self, ids) -> dict[str, Memory]:
        wanted = list(dict.fromkeys(ids))
        out: dict[str, Memory] = {}
        with self._reader() as tx:
            for i in range(0, len(wanted), CHUNK):
                part = wanted[i:i + CHUNK]
                for r in tx.all(f"SELECT * FROM memories WHERE id IN ({_marks(len(part))})",
                                part):
                    out[r["id"]] = _memory(r)
        return out

    def keyword_search(self, terms, limit, where=None) -> list[tuple[str, float]]:
        terms = [t for t in terms if t]
        if not terms:
            return []
        extra, params = _filter_sql(where, "m.")
        if self.keyword_index == "fts5":
            query = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
            sql = ("SELECT m.id AS id, -bm25(memories_fts) AS score FROM memories_fts "
                   "JOIN memories m ON m.seq = memories_fts.rowid "
                   f"WHERE memories_fts MATCH ?{extra} ORDER BY bm25(memories_fts) LIMIT ?")
            args: list[Any] = [query]
        else:
            # Any of the words: each one's plainto_tsquery (which takes any text as words,
            # never as query syntax), joined with OR.
            query = " || ".join(["plainto_tsquery('english', ?)"] * len(terms))
            sql = ("SELECT m.id AS id, ts_rank(m.tsv, w.q, 1) AS score FROM memories m, "
                   f"(SELECT {query} AS q) w "
                   f"WHERE m.tsv @@ w.q{extra} ORDER BY score DESC, m.seq DESC LIMIT ?")
            args = list(terms)
        with self._reader() as tx:
            found = tx.all(sql, (*args, *params, limit))
        return [(r["id"], float(r["score"])) for r in found]

    def memory_ids(self, where, limit) -> list[str]:
        extra, params = _filter_sql(where)
        with self._reader() as tx:
            found = tx.all(f"SELECT id FROM memories WHERE 1 = 1{extra} ORDER BY seq DESC "
                           "LIMIT ?", (*params, limit))
        return [r["id"] for r in found]

    # -- embeddings -------------------------------------------------------------------------
    def memories_to_embed(self, model_id, limit, after_seq=0) -> list[Memory]:
        with self._reader() as tx:
            found = tx.all("SELECT * FROM memories WHERE seq > ? AND "
                           "(model_id IS NULL OR model_id <> ?) ORDER BY seq LIMIT ?",
                           (after_seq, model_id, limit))
        return [_memory(r) for r in found]

    def claim_memories_to_embed(self, model_id, limit, claim_s) -> list[Memory]:
        t = now()
        free = ("(model_id IS NULL OR model_id <> ?) AND "
                "(embed_claimed_until IS NULL OR embed_claimed_until < ?)")
        # (free again in the outer WHERE: a row that another claim took meanwhile is
        # skipped when PostgreSQL re-reads it, as well as by SKIP LOCKED)
        with self._write() as tx:
            found = tx.all(f"UPDATE memories SET embed_claimed_until = ? WHERE {free} AND seq IN "
                           f"(SELECT seq FROM memories WHERE {free} ORDER BY seq LIMIT ?"
                           f"{self.claim_lock_clause}) RETURNING *",
                           (t + claim_s, model_id, t, model_id, t, limit))
        return sorted((_memory(r) for r in found), key=lambda m: m.seq)

    def mark_embedded(self, ids, model_id) -> None:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        with self._write() as tx:
            for i in range(0, len(wanted), CHUNK):
                part = wanted[i:i + CHUNK]
                tx.execute(f"UPDATE memories SET model_id = ? WHERE id IN ({_marks(len(part))})",
                           (model_id, *part))

    def forget_embeddings(self) -> int:
        with self._write() as tx:
            return int(tx.execute("UPDATE memories SET model_id = NULL "
                                  "WHERE model_id IS NOT NULL").rowcount)

    def memory_counts(self) -> MemoryCounts:
        out = MemoryCounts()
        size = "length(CAST(text AS BLOB))" if self.keyword_index == "fts5" else \
            "octet_length(text)"
        with self._reader() as tx:
            for r in tx.all(f"SELECT kind, model_id, COUNT(*) AS n, COALESCE(SUM({size}), 0) "
                            "AS size FROM memories GROUP BY kind, model_id"):
                out.by_kind[r["kind"]] = out.by_kind.get(r["kind"], 0) + int(r["n"])
                out.by_model[r["model_id"]] = out.by_model.get(r["model_id"], 0) + int(r["n"])
                out.text_bytes += int(r["size"])
            out.cursor = int(tx.one("SELECT position FROM memory_cursor "
                                    "WHERE name = 'events'")["position"])
            out.last_event_id = int(tx.one("SELECT MAX(id) AS m FROM events")["m"] or 0)
        return out

    # -- store copy -------------------------------------------------------------------------
    def _after_copy(self, tx: Tx) -> None:
        # Memories were copied, their vectors not (they are in a vector store): each is
        # embedded again on first use; SQLite's keyword index is built from the rows.
        tx.execute("UPDATE memories SET model_id = NULL")
        if self.keyword_index == "fts5":
            tx.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")
        else:
            tx.execute("SELECT setval(pg_get_serial_sequence('memories', 'seq'), "
                       "COALESCE((SELECT MAX(seq) FROM memories), 0) + 1, false)")
        super()._after_copy(tx)

