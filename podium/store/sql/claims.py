"""Claims and results: an agent takes its next tasks and records what its runs produced.

``claim_batch`` records the results of the runs an agent just finished and claims its next
tasks in one transaction (one statement each, sent together: on PostgreSQL with BEGIN, one
round trip; the commit's is the other); tasks handed to the agent come first, read without a
write. A result is recorded only for the agent's current claim of the task (its
attempt): a late one from an expired lease is refused as stale.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from podium.clock import now
from podium.models import Outcome, Task, TaskState
from podium.store.base import Finish
from podium.store.sql import rows
from podium.store.sql.history import count_finished
from podium.store.sql.queue import Queue
from podium.store.sql.tx import Tx


def _finish_event(o: Outcome, duration_s: float) -> str:
    return json.dumps({"exit_code": o.exit_code, "error": o.error,
                       "duration_ms": round(duration_s * 1000, 3), "tokens_in": o.tokens_in,
                       "tokens_out": o.tokens_out, "cost_usd": o.cost_usd}, ensure_ascii=False)


#: The VALUES row of one run's result in ``_record``, named: the task and claim it is for,
#: the registry's result columns (rows.RESULT_COLUMNS), then what ``_record`` decides with.
_RESULT_ROW = (("task_id", "TEXT"), ("attempt", "INTEGER"), ("state", "TEXT"),
               ("started_at", "float"), *rows.RESULT_COLUMNS, ("session_id", "TEXT"),
               ("error", "TEXT"), ("failed", "INTEGER"))
#: Each name's ``v.columnN`` in the VALUES list (SQLite and PostgreSQL both number them so).
_V = {name: f"v.column{i}" for i, (name, _) in enumerate(_RESULT_ROW, 1)}
#: ``output = ?, stderr = ?, ...`` for a one-task result update (``_finish``).
_RESULT_SET_SQL = ", ".join(f"{name} = ?" for name, _ in rows.RESULT_COLUMNS) + \
    ", session_id = COALESCE(?, session_id)"


def _result_params(o: Outcome) -> list[Any]:
    """The parameters of ``_RESULT_SET_SQL``."""
    return [*rows.result_values(o), o.session_id]


class _Results:
    """Finished runs made ready for recording (statement parameters, event data) before the
    transaction begins."""

    def __init__(self, finishes: list[Finish], t: float):
        self.finishes = finishes
        self.params: list[Any] = []
        self.events: list[str | None] = []
        for f in finishes:
            o = f.outcome
            self.params += (f.task_id, f.attempt, o.status.value, o.started_at,
                            *rows.result_values(o), o.session_id, o.error,
                            int(o.status is TaskState.FAILED))
            self.events.append(None if o.started_at is None else
                               _finish_event(o, t - o.started_at))


def held_by(holder: tuple[str, int] | None) -> tuple[str, tuple]:
    """The condition (and its parameters) that the agent's row names the process ``holder``,
    (host, pid), for a statement on ``agents``; none without one."""
    return ("", ()) if holder is None else (" AND host = ? AND pid = ?", holder)


def _held_sql(agent_id: str, holder: tuple[str, int] | None) -> tuple[str, list[Any]]:
    """``held_by`` for a statement on ``tasks``: the agent ``agent_id``'s row names
    ``holder``."""
    if holder is None:
        return "", []
    held, params = held_by(holder)
    return f" AND EXISTS (SELECT 1 FROM agents WHERE agents.id = ?{held})", [agent_id, *params]


def candidate_sql(roles: list[str]) -> tuple[str, list[Any]]:
    """The next tasks an agent with ``roles`` may take, best first: the query and its role
    parameters (its own parameters are the agent's id first, ``LIMIT ?`` last)."""
    role_sql = "target_role IS NULL"
    params: list[Any] = []
    if roles:
        role_sql = f"(target_role IS NULL OR target_role IN ({', '.join('?' * len(roles))}))"
        params.extend(roles)
    sql = (
        "SELECT seq FROM tasks WHERE state = 'queued' "
        "AND (target_agent IS NULL OR target_agent = ?) AND " + role_sql +
        " ORDER BY priority, seq LIMIT ?"
    )
    return sql, params


class Claims(Queue):
    @functools.cached_property
    def _claim_returning(self) -> str:
        """What a claim returns of each task: its columns, dependencies and the shared
        context's generation (it grows with every context change: workers reuse the context
        they hold while it is unchanged)."""
        return (f"{rows.TASK_SUMMARY_SQL}, "
                f"(SELECT {self.concat_sql} FROM task_deps d WHERE d.task_id = tasks.id) "
                "AS deps, (SELECT COALESCE(SUM(version), 0) FROM context) AS ctx_gen")

    def _handed_sql(self, held: str) -> str:
        """Tasks handed to an agent (``?``) that it has not picked up yet (``held``: see
        ``_held_sql``)."""
        return (f"SELECT {self._claim_returning} FROM tasks WHERE agent_id = ? "
                f"AND state = 'running' AND started_at IS NULL{held} ORDER BY priority, seq")

    def claim(self, agent_id, roles, lease_s, finish=None) -> Task | None:
        tasks = self.claim_batch(agent_id, roles, lease_s, [finish] if finish else [], 1)
        return tasks[0] if tasks else None

    def claim_batch(self, agent_id, roles, lease_s, finishes, limit, handed=False,
                    holder=None) -> list[Task]:
        sql, role_params = candidate_sql(roles)
        params = [agent_id, *role_params]
        held, held_params = _held_sql(agent_id, holder)
        if not finishes:
            if limit < 1:
                return []
            if self.precheck_claims or handed:
                # A cheap look without the write lock: tasks handed to this agent are already
                # its own, and most wake-ups of a crowd of idle agents end here.
                with self._reader() as tx:
                    handed_rows = tx.all(self._handed_sql(held), (agent_id, *held_params))
                    if handed_rows:
                        return self._claimed(handed_rows)
                    if self.precheck_claims and tx.one(sql, [*params, 1]) is None:
                        return []
        t = now()
        # Everything that needs no database is done before or after the transaction: on
        # SQLite all writers queue for one lock, so its hold time is the queue's throughput.
        results = _Results(finishes, t)
        with self._write() as tx:
            tx.relaxed = not finishes
            taken_rows: list[Any] = []
            record = self._record_statement(agent_id, results, t) if finishes else None
            if record is not None and handed and limit > 0:
                self._recorded(tx, agent_id, results, t, tx.all(*record))
                record = None
                # Handed over while this agent was busy: take them now, with their start time.
                taken_rows = tx.all(
                    "UPDATE tasks SET started_at = ? WHERE agent_id = ? AND state = 'running' "
                    f"AND started_at IS NULL{held} RETURNING {self._claim_returning}",
                    (t, agent_id, *held_params))
                limit -= len(taken_rows)
            # One statement claims the whole batch. RETURNING has no set order.
            claim_sql = ("UPDATE tasks SET state = 'running', agent_id = ?, "
                         "attempts = attempts + 1, lease_expires = ?, started_at = ?, "
                         "completed_at = NULL, error = NULL "
                         f"WHERE seq IN ({sql}{self.claim_lock_clause}){held} "
                         f"RETURNING {self._claim_returning}")

            def claim_params(n: int) -> list[Any]:
                return [agent_id, t + lease_s, t, *params, n, *held_params]
            claim = (claim_sql, claim_params(limit)) if limit > 0 else None
            # The results and the claim go together (one round trip on PostgreSQL).
            found = tx.all_together([s for s in (record, claim) if s is not None])
            freed = False
            if record is not None:
                freed = self._recorded(tx, agent_id, results, t, found[0])[1]
            if claim is not None:
                claimed = found[-1]
                if freed and len(claimed) < limit:
                    # What recording made claimable (a dependent now free, a failure to
                    # retry) is taken too, as when the claim came after the results.
                    claimed += tx.all(claim_sql, claim_params(limit - len(claimed)))
                claimed.sort(key=lambda r: (r["priority"], r["seq"]))
                for row in claimed:
                    tx.events.append((t, "task.claimed", agent_id, row["id"],
                                      f'{{"attempt": {row["attempts"]}}}'))
                tx.wake_watchers = tx.wake_watchers or bool(claimed)
                taken_rows += claimed
            self._update_agent(tx, agent_id, finishes,
                               taken_rows[0]["id"] if taken_rows else None, holder)
        return self._claimed(taken_rows)

    @staticmethod
    def _claimed(found: list[Any]) -> list[Task]:
        tasks = []
        for row in found:
            task = rows.task(row, row["deps"].split(" ") if row["deps"] else [],
                             with_output=False)
            task.context_generation = int(row["ctx_gen"])
            tasks.append(task)
        return tasks

    def _update_agent(self, tx: Tx, agent_id: str, finishes: list[Finish],
                      current: str | None, holder: tuple[str, int] | None = None) -> None:
        """One write for the agent's state, current task and counters (with ``holder``, only
        while the agent's row names that process)."""
        tokens_in = sum(f.outcome.tokens_in or 0 for f in finishes)
        tokens_out = sum(f.outcome.tokens_out or 0 for f in finishes)
        cost = sum(f.outcome.cost_usd or 0.0 for f in finishes)
        if current is not None:
            state_sql, params = "state = 'busy', current_task = ?", [current]
        elif finishes:
            state_sql = ("state = CASE WHEN state IN ('busy', 'waiting_input') THEN 'idle' "
                         "ELSE state END, current_task = NULL")
            params = []
        else:
            return
        held, held_params = held_by(holder)
        tx.defer(
            f"UPDATE agents SET {state_sql}, tasks_done = tasks_done + ?, "
            "tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost_usd = cost_usd + ? "
            f"WHERE id = ?{held}",
            (*params, len(finishes), tokens_in, tokens_out, cost, agent_id, *held_params))

    def finish(self, agent_id, finish) -> TaskState | None:
        t = now()
        results = _Results([finish], t)
        with self._write() as tx:
            state = self._record(tx, agent_id, results, t)[0]
            self._update_agent(tx, agent_id, [finish], None)
            return state

    def _record(self, tx: Tx, agent_id: str, results: _Results,
                t: float) -> list[TaskState | None]:
        """Record results: the usual ones (our running claim, no retry due) in one statement,
        which also says which of them have dependents to settle; the others (stale, cancelled
        meanwhile, a failure to retry) one by one."""
        if not results.finishes:
            return []
        return self._recorded(tx, agent_id, results, t,
                              tx.all(*self._record_statement(agent_id, results, t)))[0]

    def _record_statement(self, agent_id: str, results: _Results,
                          t: float) -> tuple[str, list[Any]]:
        """The statement of ``_record`` and its parameters."""
        return self._record_sql(len(results.finishes)), [t, *results.params, agent_id]

    def _recorded(self, tx: Tx, agent_id: str, results: _Results, t: float,
                  found: list[Any]) -> tuple[list[TaskState | None], bool]:
        """The rest of ``_record``, given the rows of its statement; and whether it may have
        made tasks claimable (a failure queued again, dependents settled)."""
        done = {r["id"]: r for r in found}
        states: list[TaskState | None] = []
        settle: list[tuple[str, TaskState]] = []
        for f, data in zip(results.finishes, results.events):
            recorded = done.get(f.task_id)
            if recorded is None:
                states.append(self._finish(tx, agent_id, f, t))
                continue
            o = f.outcome
            if data is None:  # the worker did not say when it started: the claim's time
                data = _finish_event(o, t - recorded["started_at"])
            tx.events.append((t, f"task.{o.status.value}", agent_id, f.task_id, data))
            count_finished(tx, o.status)
            states.append(o.status)
            if recorded["has_dependents"]:
                settle.append((f.task_id, o.status))
        tx.wake_watchers = True
        for task_id, state in settle:
            self._settle_dependents(tx, task_id, state, t)
        return states, bool(settle) or TaskState.QUEUED in states

    # A classmethod, so that the cache holds the class (the SQL depends only on its dialect's
    # column types), not every store instance it was ever called on.
    @classmethod
    @functools.lru_cache(maxsize=128)
    def _record_sql(cls, n: int) -> str:
        """The statement that records ``n`` results at once (see ``_record``)."""
        types = {"float": cls.float_type, "blob": cls.blob_type}
        row = "(" + ", ".join(f"CAST(? AS {types.get(t, t)})" for _, t in _RESULT_ROW) + ")"
        results = ", ".join(f"{name} = {_V[name]}" for name, _ in rows.RESULT_COLUMNS)
        return (
            f"UPDATE tasks SET state = {_V['state']}, "
            f"started_at = COALESCE({_V['started_at']}, tasks.started_at), completed_at = ?, "
            f"lease_expires = NULL, {results}, "
            f"session_id = COALESCE({_V['session_id']}, tasks.session_id), "
            f"error = {_V['error']} "
            f"FROM (VALUES {', '.join([row] * n)}) AS v "
            f"WHERE tasks.id = {_V['task_id']} AND tasks.agent_id = ? "
            f"AND tasks.attempts = {_V['attempt']} AND tasks.state = 'running' "
            f"AND NOT ({_V['failed']} = 1 AND tasks.retry_on_failure = 1 "
            "AND tasks.attempts < tasks.max_attempts) "
            "RETURNING tasks.id, tasks.started_at, EXISTS (SELECT 1 FROM task_deps d "
            "WHERE d.depends_on = tasks.id) AS has_dependents")

    def _finish(self, tx: Tx, agent_id: str, finish: Finish, t: float) -> TaskState | None:
        o: Outcome = finish.outcome
        row = tx.one(
            "SELECT state, agent_id, attempts, max_attempts, retry_on_failure, started_at "
            "FROM tasks WHERE id = ?", (finish.task_id,))
        if row is None or row["agent_id"] != agent_id or row["attempts"] != finish.attempt or \
                row["state"] not in ("running", "cancelled"):
            tx.event("task.stale_result", agent_id, finish.task_id, attempt=finish.attempt)
            return None
        result_cols, result_params = _RESULT_SET_SQL, _result_params(o)
        if row["state"] == "cancelled":
            # Cancelled while running: keep the state and reason, attach what the run produced.
            tx.execute(f"UPDATE tasks SET {result_cols}, lease_expires = NULL WHERE id = ?",
                       (*result_params, finish.task_id))
            return TaskState.CANCELLED
        state = o.status
        if state is TaskState.FAILED and row["retry_on_failure"] and \
                row["attempts"] < row["max_attempts"]:
            tx.execute(
                f"UPDATE tasks SET state = 'queued', agent_id = NULL, lease_expires = NULL, "
                f"{result_cols}, error = ? WHERE id = ?",
                (*result_params, o.error, finish.task_id))
            tx.event("task.requeued", agent_id, finish.task_id, reason=o.error,
                     attempt=row["attempts"])
            tx.wake(None)
            return TaskState.QUEUED
        started = o.started_at or row["started_at"]
        tx.execute(
            f"UPDATE tasks SET state = ?, started_at = ?, completed_at = ?, lease_expires = NULL, "
            f"{result_cols}, error = ? WHERE id = ?",
            (state.value, started, t, *result_params, o.error, finish.task_id))
        count_finished(tx, state)
        tx.event(f"task.{state.value}", agent_id, finish.task_id, exit_code=o.exit_code,
                 error=o.error, duration_ms=round((t - started) * 1000, 3),
                 tokens_in=o.tokens_in, tokens_out=o.tokens_out, cost_usd=o.cost_usd)
        self._settle_dependents(tx, finish.task_id, state, t)
        return state
