"""Adding tasks, and handing them to idle agents in the same transaction.

An add that finds an idle agent allowed to take a new task (a worker waiting on its wake-up
channel, heard from lately) claims the task for it then and there, and tells it so after the
commit; the agent reads what was handed to it and starts without a claim of its own.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from podium.clock import now, sortable_id
from podium.errors import NotFound
from podium.models import Priority, Task, TaskSpec, TaskState
from podium.store.sql import rows
from podium.store.sql.history import count_finished
from podium.store.sql.leases import Leases
from podium.store.sql.tx import Tx


def _new_task(spec: TaskSpec, t: float, state: TaskState, depends_on: list[str],
              error: str | None) -> Task:
    """The task a spec asks for: every field of the spec (but its dependencies, given checked)
    as it is, and the rest as a new task has them."""
    fields = dict(vars(spec))
    del fields["depends_on"]
    return Task(id=sortable_id("t"), depends_on=depends_on, state=state, attempts=0,
                created_at=t, completed_at=t if state is TaskState.CANCELLED else None,
                error=error, **fields)


@functools.lru_cache(maxsize=256)
def _queued_data(priority: Priority, role: str | None) -> str:
    """A plain task's ``task.queued`` event data: one encoding per priority and role."""
    return json.dumps({"priority": priority.name.lower(), "target_role": role,
                       "depends_on": [], "error": None}, ensure_ascii=False)


def _roles(stored: str) -> set[str]:
    return set(json.loads(stored))


class Queue(Leases):
    def add_tasks(self, specs: list[TaskSpec],
                  may_run: Callable[[str, int | None], bool] | None = None) -> list[Task]:
        t = now()
        added: list[Task] = []
        dep_rows: list[tuple[str, str]] = []
        with self._write() as tx:
            known: dict[str, str] = {}
            agents_seen: set[str] = set()
            any_plain = False
            queued_at: list[int] = []  # tasks that may be handed to an idle agent
            for spec in specs:
                if spec.target_agent is None and not spec.depends_on:
                    # The common case, kept short: thousands of these go in one transaction.
                    task = _new_task(spec, t, TaskState.QUEUED, [], None)
                    queued_at.append(len(added))
                    added.append(task)
                    known[task.id] = "queued"
                    tx.events.append((t, "task.queued", None, task.id,
                                      _queued_data(spec.priority, spec.target_role)))
                    any_plain = True
                    continue
                if spec.target_agent is not None and spec.target_agent not in agents_seen:
                    if tx.one("SELECT 1 FROM agents WHERE id = ?", (spec.target_agent,)) is None:
                        raise NotFound(f"unknown agent {spec.target_agent!r}")
                    agents_seen.add(spec.target_agent)
                depends_on, state, error = self._dependencies(tx, spec, known)
                task = _new_task(spec, t, state, depends_on, error)
                if state is TaskState.CANCELLED:  # (a dependency failed or was cancelled)
                    count_finished(tx, state)
                if state is TaskState.QUEUED:
                    queued_at.append(len(added))
                    tx.wake(spec.target_agent)
                added.append(task)
                dep_rows.extend((task.id, dep) for dep in depends_on)
                known[task.id] = state.value
                tx.event(f"task.{state.value}", spec.target_agent, task.id,
                         priority=spec.priority.name.lower(), target_role=spec.target_role,
                         depends_on=depends_on, error=error)
            all_handed = bool(queued_at) and self._hand_off(tx, t, added, queued_at, may_run)
            if any_plain:
                tx.wake_watchers = True
                if not all_handed:
                    tx.wake(None)
            # One statement for all rows: a batch of thousands costs a few µs per task. Nothing
            # reads them back in this transaction: they go out with the commit.
            tx.defer(rows.INSERT_TASKS_SQL, [rows.insert_row(task) for task in added], many=True)
            if dep_rows:
                tx.defer("INSERT INTO task_deps (task_id, depends_on) VALUES (?, ?)",
                         dep_rows, many=True)
        return added

    @staticmethod
    def _dependencies(tx: Tx, spec: TaskSpec,
                      known: dict[str, str]) -> tuple[list[str], TaskState, str | None]:
        """A new task's dependencies (each once), and the state they put it in: blocked until
        they completed, cancelled when one failed or was cancelled (with the reason)."""
        dep_states = []
        for dep in dict.fromkeys(spec.depends_on):
            if dep not in known:
                row = tx.one("SELECT state FROM tasks WHERE id = ?", (dep,))
                if row is None:
                    raise NotFound(f"unknown task {dep!r} (in depends_on)")
                known[dep] = row["state"]
            dep_states.append((dep, known[dep]))
        state, error = TaskState.QUEUED, None
        for dep, st in dep_states:
            if st in ("failed", "cancelled"):
                state, error = TaskState.CANCELLED, f"dependency {dep} {st}"
                break
            if st != "completed":
                state = TaskState.BLOCKED
        return [d for d, _ in dep_states], state, error

    def _hand_off(self, tx: Tx, t: float, added: list[Task], queued_at: list[int],
                  may_run: Callable[[str, int | None], bool] | None) -> bool:
        """Hand queued tasks of this add to idle agents that take hand-offs (workers waiting on
        their wake-up channel), best tasks first: the task is claimed for the agent in this
        transaction, so the agent starts it without a claim transaction of its own (it reads its
        handed tasks when told). Returns True when every queued task was handed over."""
        anyone = all(added[i].target_agent is None and added[i].target_role is None
                     for i in queued_at)
        idle = tx.all(
            # (heard from within two heartbeats: a dead agent is offered tasks for less long)
            "SELECT id, roles, lease_s, host, pid FROM agents "
            "WHERE takes_hand_offs = 1 AND state = 'idle' "
            "AND current_task IS NULL AND last_heartbeat + lease_s / 3 > ? "
            f"ORDER BY last_heartbeat DESC LIMIT ?{self.claim_lock_clause}",
            (t, len(queued_at) if anyone else 1_000_000))
        if not idle:
            return False
        # An agent killed while idle is not a taker, where the caller can tell.
        free = [(r["id"], _roles(r["roles"]), r["lease_s"]) for r in idle
                if may_run is None or may_run(r["host"], r["pid"])]
        if len({added[i].priority for i in queued_at}) > 1:
            queued_at = sorted(queued_at, key=lambda i: (added[i].priority, i))
        left = len(queued_at)
        for i in queued_at:
            if not free:
                break
            task = added[i]
            k = next((k for k, (agent, roles, _) in enumerate(free)
                      if task.target_agent in (None, agent)
                      and (task.target_role is None or task.target_role in roles)), None)
            if k is None:
                continue
            agent, _, lease_s = free.pop(k)
            task.state, task.agent_id, task.attempts = TaskState.RUNNING, agent, 1
            task.lease_expires = t + lease_s
            tx.defer("UPDATE agents SET state = 'busy', current_task = ? WHERE id = ?",
                     (task.id, agent))
            tx.events.append((t, "task.claimed", agent, task.id,
                              '{"attempt": 1, "handed_over": true}'))
            tx.handed.add(agent)  # (its wake-up says so; the agent reads the task from the store)
            left -= 1
        return left == 0
