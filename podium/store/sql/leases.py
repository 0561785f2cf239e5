"""Leases: what happens to a task when its agent goes away, gives it back, or it is cancelled.

A claimed task is held under a lease that the agent's heartbeats extend. ``_recover`` finds
expired leases and silent agents (any process's write may do it: a heartbeat, a listing);
``_lose_task`` puts a task whose agent is gone back in the queue, or fails it once out of
tries; ``_settle_dependents`` releases or cancels what waited for a finished task; ``retry``
queues a failed or cancelled task again and blocks again the dependents its end cancelled.
What the store takes away is reported (``Tx.taken``), never killed here: the caller's runtime
does that.
"""

from __future__ import annotations

from typing import Any

from podium.clock import now
from podium.errors import Conflict, NotFound
from podium.models import Task, TaskState
from podium.store.sql import rows
from podium.store.sql.history import count_finished
from podium.store.sql.tasks import TaskReads
from podium.store.sql.tx import Tx

#: What a retried task starts afresh with: no agent, attempts, times, error nor result.
_FRESH_SQL = ", ".join(
    f"{name} = {value}" for name, value in (
        ("agent_id", "NULL"), ("attempts", "0"), ("lease_expires", "NULL"),
        ("started_at", "NULL"), ("completed_at", "NULL"), ("error", "NULL"),
        *((name, "0" if name == "output_truncated" else "NULL")
          for name, _ in rows.RESULT_COLUMNS),
        ("output_pruned", "0")))


class Leases(TaskReads):
    def release(self, agent_id, task_id, attempt, reason) -> None:
        with self._write() as tx:
            cur = tx.execute(
                "UPDATE tasks SET state = 'queued', agent_id = NULL, lease_expires = NULL, "
                "started_at = NULL, attempts = attempts - 1 "
                "WHERE id = ? AND agent_id = ? AND attempts = ? AND state = 'running'",
                (task_id, agent_id, attempt))
            tx.execute("UPDATE agents SET current_task = NULL WHERE id = ?", (agent_id,))
            if cur.rowcount:
                tx.event("task.requeued", agent_id, task_id, reason=reason, attempt=attempt)
                tx.wake(None)

    def cancel(self, task_id, reason) -> Task:
        t = now()
        with self._write() as tx:
            row = tx.one("SELECT state, agent_id, started_at FROM tasks WHERE id = ?", (task_id,))
            if row is None:
                raise NotFound(f"unknown task {task_id!r}")
            if TaskState(row["state"]).finished:
                raise Conflict(f"task {task_id} is already {row['state']}; nothing to cancel")
            tx.execute(
                "UPDATE tasks SET state = 'cancelled', completed_at = ?, error = ? WHERE id = ?",
                (t, reason, task_id))
            count_finished(tx, TaskState.CANCELLED)
            tx.event("task.cancelled", row["agent_id"], task_id, reason=reason,
                     was=row["state"])
            if row["state"] == "running" and row["agent_id"]:
                tx.wake(row["agent_id"])
                if row["started_at"] is None:  # handed over, not picked up: the agent is free
                    tx.execute("UPDATE agents SET state = 'idle', current_task = NULL "
                               "WHERE id = ? AND current_task = ? AND state = 'busy'",
                               (row["agent_id"], task_id))
            self._settle_dependents(tx, task_id, TaskState.CANCELLED, t)
            return self._load_task(tx, task_id)

    def recover(self) -> list[tuple[str, str]]:
        with self._write() as tx:
            self._recover(tx, now())
        return tx.taken

    def _recover(self, tx: Tx, t: float) -> int:
        n = 0
        for row in tx.all(
            "SELECT id, agent_id, attempts, max_attempts FROM tasks "
            "WHERE state = 'running' AND lease_expires < ?", (t,)
        ):
            n += 1
            self._lose_task(tx, row,
                            f"lease expired: agent {row['agent_id']} stopped responding", t)
        for row in tx.all(
            "SELECT id FROM agents WHERE state IN ('starting', 'idle', 'busy', 'waiting_input') "
            "AND last_heartbeat + lease_s < ?", (t,)
        ):
            tx.execute("UPDATE agents SET state = 'dead' WHERE id = ?", (row["id"],))
            tx.event("agent.dead", row["id"], None)
            n += 1
        return n

    def _orphan_tasks(self, tx: Tx, agent_id: str, why: str, t: float) -> None:
        for row in tx.all(
            "SELECT id, agent_id, attempts, max_attempts FROM tasks "
            "WHERE state = 'running' AND agent_id = ?", (agent_id,)
        ):
            self._lose_task(tx, row, f"{why} while running it", t)

    def _lose_task(self, tx: Tx, row: Any, why: str, t: float) -> None:
        """A running task whose worker is gone: back to the queue, or failed when out of tries.
        (A task handed to an agent counts its try as a claim does: the agent may have started
        it without a word.)"""
        tx.taken.append((row["agent_id"], row["id"]))
        if row["attempts"] < row["max_attempts"]:
            tx.execute(
                "UPDATE tasks SET state = 'queued', agent_id = NULL, lease_expires = NULL, "
                "error = ? WHERE id = ?", (why, row["id"]))
            tx.event("task.requeued", row["agent_id"], row["id"], reason=why,
                     attempt=row["attempts"])
            tx.wake(None)
        else:
            error = f"{why} (attempt {row['attempts']} of {row['max_attempts']})"
            tx.execute(
                "UPDATE tasks SET state = 'failed', completed_at = ?, lease_expires = NULL, "
                "error = ? WHERE id = ?", (t, error, row["id"]))
            count_finished(tx, TaskState.FAILED)
            tx.event("task.failed", row["agent_id"], row["id"], error=error)
            self._settle_dependents(tx, row["id"], TaskState.FAILED, t)
        tx.execute("UPDATE agents SET current_task = NULL WHERE id = ? AND current_task = ?",
                   (row["agent_id"], row["id"]))

    def _settle_dependents(self, tx: Tx, task_id: str, state: TaskState, t: float) -> None:
        """Release blocked dependents of a completed task; cancel those of a failed one."""
        pending = [(task_id, state)]
        while pending:
            done_id, done_state = pending.pop()
            rows = tx.all(
                "SELECT t.id, t.target_agent FROM task_deps d JOIN tasks t ON t.id = d.task_id "
                "WHERE d.depends_on = ? AND t.state = 'blocked'", (done_id,))
            for row in rows:
                if done_state is TaskState.COMPLETED:
                    unfinished = tx.one(
                        "SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.depends_on "
                        "WHERE d.task_id = ? AND t.state <> 'completed' LIMIT 1", (row["id"],))
                    if unfinished is None:
                        tx.execute("UPDATE tasks SET state = 'queued' WHERE id = ?", (row["id"],))
                        tx.event("task.queued", row["target_agent"], row["id"],
                                 released_by=done_id)
                        tx.wake(row["target_agent"])
                else:
                    reason = f"dependency {done_id} {done_state.value}"
                    tx.execute(
                        "UPDATE tasks SET state = 'cancelled', completed_at = ?, error = ? "
                        "WHERE id = ?", (t, reason, row["id"]))
                    count_finished(tx, TaskState.CANCELLED)
                    tx.event("task.cancelled", row["target_agent"], row["id"], reason=reason)
                    pending.append((row["id"], TaskState.CANCELLED))

    # -- retry ------------------------------------------------------------------------------
    def retry(self, task_id) -> Task:
        with self._write() as tx:
            row = tx.one("SELECT state, target_agent FROM tasks WHERE id = ?", (task_id,))
            if row is None:
                raise NotFound(f"unknown task {task_id!r}")
            was = row["state"]
            if was not in ("failed", "cancelled"):
                raise Conflict(f"task {task_id} is {was}: only a failed or cancelled task can "
                               "be retried")
            state = self._state_after_retry(tx, task_id)
            cur = tx.execute(f"UPDATE tasks SET state = ?, {_FRESH_SQL} WHERE id = ? "
                             "AND state = ?", (state.value, task_id, was))
            if cur.rowcount == 0:  # (changed since it was read: another retry got there first)
                raise Conflict(f"task {task_id} changed meanwhile; look again before retrying")
            count_finished(tx, was, -1)
            tx.event("task.retried", row["target_agent"], task_id, was=was, state=state.value)
            if state is TaskState.QUEUED:
                tx.wake(row["target_agent"])
            self._revive_dependents(tx, task_id, was)
            return self._load_task(tx, task_id)

    @staticmethod
    def _state_after_retry(tx: Tx, task_id: str) -> TaskState:
        """Queued when every dependency completed, blocked while some are still to run;
        refused while one is failed or cancelled (that one is to be retried first)."""
        state = TaskState.QUEUED
        for dep in tx.all("SELECT t.id, t.state FROM task_deps d JOIN tasks t "
                          "ON t.id = d.depends_on WHERE d.task_id = ? ORDER BY t.id",
                          (task_id,)):
            if dep["state"] in ("failed", "cancelled"):
                raise Conflict(f"task {task_id} depends on {dep['id']}, which is "
                               f"{dep['state']}: retry that one first")
            if dep["state"] != "completed":
                state = TaskState.BLOCKED
        return state

    def _revive_dependents(self, tx: Tx, task_id: str, was: str) -> None:
        """Dependents cancelled because ``task_id`` failed or was cancelled (and theirs, in
        turn) are blocked again: the pipeline resumes once it completes. One that another
        failed or cancelled dependency still holds stays cancelled, now naming that one (so
        that retrying it revives the dependent)."""
        pending = [(task_id, was)]
        while pending:
            done_id, done_state = pending.pop()
            reason = f"dependency {done_id} {done_state}"
            for row in tx.all(
                "SELECT t.id, t.target_agent FROM task_deps d JOIN tasks t ON t.id = d.task_id "
                "WHERE d.depends_on = ? AND t.state = 'cancelled' AND t.error = ? ORDER BY t.id",
                (done_id, reason)):
                held = tx.one(
                    "SELECT t.id, t.state FROM task_deps d JOIN tasks t ON t.id = d.depends_on "
                    "WHERE d.task_id = ? AND t.state IN ('failed', 'cancelled') "
                    "ORDER BY t.id LIMIT 1", (row["id"],))
                if held is not None:
                    tx.execute("UPDATE tasks SET error = ? WHERE id = ?",
                               (f"dependency {held['id']} {held['state']}", row["id"]))
                    continue
                cur = tx.execute(
                    f"UPDATE tasks SET state = 'blocked', {_FRESH_SQL} "
                    "WHERE id = ? AND state = 'cancelled'", (row["id"],))
                if cur.rowcount == 0:
                    continue
                count_finished(tx, TaskState.CANCELLED, -1)
                tx.event("task.blocked", row["target_agent"], row["id"], was="cancelled",
                         reason=f"dependency {done_id} retried")
                pending.append((row["id"], "cancelled"))
