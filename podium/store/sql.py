"""The store's logic in portable SQL; dialects supply connections, locking and wake-ups.

Subclasses implement ``_transaction`` (a write transaction that serialises claims: SQLite's
``BEGIN IMMEDIATE``, PostgreSQL's row locks), ``_reader`` and ``_wake``. Everything else — the
task lifecycle, dependencies, leases, events — is written once here.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import json
import logging
import secrets
import socket
from typing import Any, Iterator

from podium import orphans, pids
from podium.clock import now, sortable_id
from podium.errors import Conflict, InvalidInput, NotFound, StoreError
from podium.models import (
    Agent,
    AgentState,
    ContextEntry,
    Event,
    Message,
    Outcome,
    Priority,
    Task,
    TaskSpec,
    TaskState,
)
from podium.store.base import Finish, HeartbeatReply, Store
from podium.store.migrations import statements
from podium.wake import ALL_AGENTS

_log = logging.getLogger("podium.store")
#: Priority by value, looked up: calling the enum costs ~40 µs on a cold CPU here.
PRIORITY_OF = {p.value: p for p in Priority}

_TASK_COLS_NO_OUTPUT = (
    "seq, id, prompt, context, priority, target_agent, target_role, state, attempts, max_attempts, "
    "retry_on_failure, timeout_s, created_at, agent_id, lease_expires, started_at, completed_at, "
    "output_truncated, error, exit_code, tokens_in, tokens_out, cost_usd, session_id, broadcast_id"
)
_TASK_COLS = _TASK_COLS_NO_OUTPUT + ", output, stderr"
_LIVE = ("starting", "idle", "busy", "waiting_input")


class Tx:
    """A transaction's cursor with dialect-neutral ``?`` placeholders and pending wake-ups."""

    def __init__(self, cursor: Any, convert):
        self.cur = cursor
        self._convert = convert
        self.wake_agents: set[str] | object = set()
        self.wake_watchers = False
        #: Agents that this transaction handed a task to (told so after commit).
        self.handed: set[str] = set()
        self.events: list[tuple] = []
        #: Writes whose results nobody reads, sent with the commit (one round trip on PostgreSQL):
        #: (sql, parameters, True when the parameters are a list of rows).
        self.deferred: list[tuple[str, Any, bool]] = []
        #: (agent id, task id) of running tasks taken from agents that are gone.
        self.taken: list[tuple[str, str]] = []
        #: Set when losing this transaction in a server crash harms nothing (a claim: its task
        #: would just be queued again), so the dialect may commit without waiting for the disk.
        self.relaxed = False

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        self.cur.execute(self._convert(sql), params)
        return self.cur

    def executemany(self, sql: str, rows: list) -> None:
        if len(rows) == 1:  # psycopg's executemany syncs its own pipeline: a round trip more
            self.cur.execute(self._convert(sql), rows[0])
        else:
            self.cur.executemany(self._convert(sql), rows)

    def one(self, sql: str, params: tuple | list = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: tuple | list = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def defer(self, sql: str, params: tuple | list = (), many: bool = False) -> None:
        """Run a write just before the commit (``many``: once per row of ``params``); its
        result is not needed. Deferred writes must not depend on each other's effects nor touch
        the same row: PostgreSQL runs them together as one statement."""
        self.deferred.append((sql, params, many))

    def wake(self, agent_id: str | None) -> None:
        """Wake one agent after commit (None: every agent)."""
        if agent_id is None or self.wake_agents is ALL_AGENTS:
            self.wake_agents = ALL_AGENTS
        else:
            self.wake_agents.add(agent_id)  # type: ignore[union-attr]

    def event(self, kind: str, agent_id: str | None = None, task_id: str | None = None,
              **data: Any) -> None:
        """Record an event; events are written together just before the commit."""
        self.events.append((now(), kind, agent_id, task_id, json.dumps(data, ensure_ascii=False)))
        self.wake_watchers = True


def _agent(row: Any) -> Agent:
    return Agent(
        id=row["id"], name=row["name"], roles=json.loads(row["roles"]), backend=row["backend"],
        host=row["host"], pid=row["pid"], state=AgentState(row["state"]),
        current_task=row["current_task"], registered_at=row["registered_at"],
        last_heartbeat=row["last_heartbeat"], note=row["note"], tasks_done=row["tasks_done"],
        tokens_in=row["tokens_in"], tokens_out=row["tokens_out"], cost_usd=row["cost_usd"],
        meta=json.loads(row["meta"]),
    )


def _task(row: Any, depends_on: list[str], with_output: bool = True) -> Task:
    output = stderr = None
    if with_output:
        output, stderr = row["output"], row["stderr"]
        if output is not None and not isinstance(output, bytes):
            output = bytes(output)
        if stderr is not None and not isinstance(stderr, bytes):
            stderr = bytes(stderr)
    return Task(
        seq=row["seq"], id=row["id"], prompt=row["prompt"], context=row["context"],
        priority=PRIORITY_OF[row["priority"]], target_agent=row["target_agent"],
        target_role=row["target_role"], depends_on=depends_on, state=TaskState(row["state"]),
        attempts=row["attempts"], max_attempts=row["max_attempts"],
        retry_on_failure=bool(row["retry_on_failure"]), timeout_s=row["timeout_s"],
        created_at=row["created_at"], agent_id=row["agent_id"],
        lease_expires=row["lease_expires"], started_at=row["started_at"],
        completed_at=row["completed_at"], output=output, stderr=stderr,
        output_truncated=bool(row["output_truncated"]), error=row["error"],
        exit_code=row["exit_code"], tokens_in=row["tokens_in"], tokens_out=row["tokens_out"],
        cost_usd=row["cost_usd"], session_id=row["session_id"], broadcast_id=row["broadcast_id"],
    )


@functools.lru_cache(maxsize=256)
def _queued_data(priority: Priority, role: str | None) -> str:
    """A plain task's ``task.queued`` event data: one encoding per priority and role."""
    return json.dumps({"priority": priority.name.lower(), "target_role": role,
                       "depends_on": [], "error": None}, ensure_ascii=False)


@functools.lru_cache(maxsize=1)
def _hostname() -> str:
    return socket.gethostname()  # (a system call, on every hand-off otherwise)


def _roles(stored: str) -> set[str]:
    # (most agents take any role: no JSON parser to wake up on a cold CPU for them)
    return set() if stored == "[]" else set(json.loads(stored))


def _message(row: Any) -> Message:
    return Message(
        id=row["id"], agent_id=row["agent_id"], direction=row["direction"], kind=row["kind"],
        body=row["body"], sender=row["sender"], task_id=row["task_id"],
        created_at=row["created_at"], delivered_at=row["delivered_at"], read_at=row["read_at"],
    )


def _finish_event(o: Outcome, duration_s: float) -> str:
    return json.dumps({"exit_code": o.exit_code, "error": o.error,
                       "duration_ms": round(duration_s * 1000, 3), "tokens_in": o.tokens_in,
                       "tokens_out": o.tokens_out, "cost_usd": o.cost_usd}, ensure_ascii=False)


class _Results:
    """Finished runs made ready for recording (statement parameters, event data) before the
    transaction begins."""

    def __init__(self, finishes: list[Finish], t: float):
        self.finishes = finishes
        self.params: list[Any] = []
        self.events: list[str | None] = []
        for f in finishes:
            o = f.outcome
            self.params += (f.task_id, f.attempt, o.status.value, o.started_at, o.output,
                            o.stderr, int(o.output_truncated), o.exit_code, o.tokens_in,
                            o.tokens_out, o.cost_usd, o.session_id, o.error,
                            int(o.status is TaskState.FAILED))
            self.events.append(None if o.started_at is None else
                               _finish_event(o, t - o.started_at))


class SqlStore(Store):
    """Store logic shared by the SQL dialects."""

    #: SQL appended to the claim's SELECT (PostgreSQL: ``FOR UPDATE SKIP LOCKED``).
    claim_lock_clause = ""
    #: Look for a claimable task without the write lock before taking it (SQLite: a crowd of
    #: woken idle agents would otherwise queue for the one writer lock to find nothing).
    precheck_claims = True
    #: An aggregate joining ``depends_on`` values with spaces (task ids have none).
    concat_sql = "group_concat(depends_on, ' ')"
    #: Column types for casts (as in the dialect's migrations).
    float_type = "REAL"
    blob_type = "BLOB"
    #: Write a transaction's events as multi-row INSERTs rather than ``executemany``
    #: (PostgreSQL: they go out with the commit, no round trip of their own).
    events_in_one_statement = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls._record_sql = {}  # one result-recording statement per batch size
        # What a claim returns of each task: its columns, dependencies and the shared context's
        # generation (it grows with every context change: workers reuse the context they hold
        # while it is unchanged).
        cls._claim_returning = (
            f"{_TASK_COLS_NO_OUTPUT}, "
            f"(SELECT {cls.concat_sql} FROM task_deps d WHERE d.task_id = tasks.id) "
            "AS deps, (SELECT COALESCE(SUM(version), 0) FROM context) AS ctx_gen")
        # Tasks handed to an agent (``?``) that it has not picked up yet.
        cls._handed_sql = (f"SELECT {cls._claim_returning} FROM tasks WHERE agent_id = ? "
                           "AND state = 'running' AND started_at IS NULL ORDER BY priority, seq")

    # -- dialect hooks ------------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Tx]:
        """A write transaction; commits on success, rolls back on error."""

    @abc.abstractmethod
    def _reader(self) -> contextlib.AbstractContextManager[Tx]:
        """A consistent read."""

    @abc.abstractmethod
    def _wake(self, agents: set[str] | object, watchers: bool, handed: set[str]) -> None:
        """Deliver wake-ups after a commit, telling the ``handed`` agents of their hand-off."""

    def _before_commit(self, tx: Tx) -> None:
        """Run deferred writes and write the events (dialects may also lock or notify here)."""
        self._run_deferred(tx)
        self._write_events(tx)

    @staticmethod
    def _run_deferred(tx: Tx) -> None:
        for sql, params, many in tx.deferred:
            if many:
                tx.executemany(sql, params)
            else:
                tx.execute(sql, params)

    def _write_events(self, tx: Tx) -> None:
        events = tx.events
        if not events:
            return
        sql = "INSERT INTO events (ts, kind, agent_id, task_id, data) VALUES "
        if not self.events_in_one_statement or len(events) == 1:
            tx.executemany(sql + "(?, ?, ?, ?, ?)", events)
            return
        for i in range(0, len(events), 1000):
            chunk = events[i:i + 1000]
            tx.execute(sql + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)),
                       [v for row in chunk for v in row])

    @staticmethod
    def _apply_migrations(tx: Tx, migrations: list[tuple[str, str]],
                          types: dict[str, str]) -> list[str]:
        """Apply, in order, the migrations not yet recorded; return their names."""
        tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                   f"(name TEXT PRIMARY KEY, applied_at {types['float']} NOT NULL)")
        done = {r["name"] for r in tx.all("SELECT name FROM schema_migrations")}
        applied = []
        for name, sql in migrations:
            if name in done:
                continue
            for stmt in statements(sql, types):
                tx.execute(stmt)
            tx.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                       (name, now()))
            applied.append(name)
        tx.execute("INSERT INTO store_key (id, secret) SELECT 1, ? "
                   "WHERE NOT EXISTS (SELECT 1 FROM store_key)", (secrets.token_hex(32),))
        return applied

    def store_secret(self) -> str:
        """This store's secret (see migration m005_store_key)."""
        with self._reader() as tx:
            row = tx.one("SELECT secret FROM store_key WHERE id = 1")
        if row is None:
            raise StoreError(f"{self.url} has no store key: run 'podium store migrate'")
        return row["secret"]

    def _after_copy(self, tx: Tx) -> None:
        """After rows were loaded with explicit ids (``store copy``): fix id generators."""

    @contextlib.contextmanager
    def _write(self) -> Iterator[Tx]:
        with self._transaction() as tx:
            yield tx
            self._before_commit(tx)
        if tx.wake_agents or tx.wake_watchers or tx.handed:
            try:
                self._wake(tx.wake_agents, tx.wake_watchers, tx.handed)
            except (OSError, StoreError) as e:
                # The commit is the truth: a lost wake-up only delays whoever waits for it
                # until their next heartbeat or safety poll.
                _log.warning("podium: committed, but could not wake the agents: %s", e)
        if tx.taken:
            # Programs the gone agents may have left running on this host (see podium.orphans).
            by_agent: dict[str, set[str]] = {}
            for agent, task_id in tx.taken:
                by_agent.setdefault(agent, set()).add(task_id)
            for agent, task_ids in by_agent.items():
                orphans.kill(self.url, agent, task_ids)
        self._after_commit()

    def _after_commit(self) -> None:
        """Housekeeping after a write, once the processes it concerns were woken."""

    # -- agents -------------------------------------------------------------------
    def register_agent(self, name, roles, backend, host, pid, lease_s, meta,
                       pushable=False) -> Agent:
        if not name or len(name) > 200:
            raise InvalidInput("agent name must be 1-200 characters")
        t = now()
        with self._write() as tx:
            row = tx.one("SELECT state, last_heartbeat, lease_s, host, pid, meta FROM agents "
                         "WHERE id = ?", (name,))
            if row is not None:
                alive = row["state"] in _LIVE and row["last_heartbeat"] + row["lease_s"] > t
                if alive and row["host"] == host == socket.gethostname() and row["pid"] and \
                        not pids.exists(row["pid"]):
                    alive = False  # its process is gone from this very host: no lease to wait
                if alive:
                    raise Conflict(
                        f"agent {name!r} is already running (pid {row['pid']} on {row['host']}); "
                        "stop it first or choose another --name"
                    )
                self._orphan_tasks(tx, name, "agent re-registered", t)
                session = json.loads(row["meta"] or "{}").get("session_id")
                if session and "session_id" not in meta:  # a restarted agent keeps its session
                    meta = {**meta, "session_id": session}
                tx.execute(
                    "UPDATE agents SET roles = ?, backend = ?, host = ?, pid = ?, state = 'idle', "
                    "current_task = NULL, registered_at = ?, last_heartbeat = ?, lease_s = ?, "
                    "note = NULL, meta = ?, pushable = ? WHERE id = ?",
                    (json.dumps(roles), backend, host, pid, t, t, lease_s, json.dumps(meta),
                     int(pushable), name),
                )
            else:
                tx.execute(
                    "INSERT INTO agents (id, name, roles, backend, host, pid, state, registered_at, "
                    "last_heartbeat, lease_s, meta, pushable) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'idle', ?, ?, ?, ?, ?)",
                    (name, name, json.dumps(roles), backend, host, pid, t, t, lease_s,
                     json.dumps(meta), int(pushable)),
                )
            tx.event("agent.registered", name, None, roles=roles, backend=backend, host=host, pid=pid)
            return _agent(tx.one("SELECT * FROM agents WHERE id = ?", (name,)))

    def heartbeat(self, agent_id, lease_s, task_id=None, attempt=0) -> HeartbeatReply:
        t = now()
        reply = HeartbeatReply()
        with self._write() as tx:
            cur = tx.execute(
                "UPDATE agents SET last_heartbeat = ?, lease_s = ?, "
                "state = CASE WHEN state = 'dead' THEN ? ELSE state END WHERE id = ?",
                (t, lease_s, "busy" if task_id else "idle", agent_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"unknown agent {agent_id!r}")
            if task_id is not None:
                # (A task handed over by add_tasks gets its start time here, from the worker's
                # first heartbeat once its program runs.)
                cur = tx.execute(
                    "UPDATE tasks SET lease_expires = ?, started_at = COALESCE(started_at, ?) "
                    "WHERE id = ? AND agent_id = ? AND attempts = ? AND state = 'running'",
                    (t + lease_s, t, task_id, agent_id, attempt),
                )
                if cur.rowcount == 0:
                    row = tx.one("SELECT state FROM tasks WHERE id = ?", (task_id,))
                    reply.lost = True
                    reply.task_state = TaskState(row["state"]) if row else None
                else:
                    reply.task_state = TaskState.RUNNING
            self._recover(tx, t)
        return reply

    def set_agent_state(self, agent_id, state, note=None) -> Agent:
        with self._write() as tx:
            cur = tx.execute(
                "UPDATE agents SET state = ?, note = COALESCE(?, note) WHERE id = ?",
                (state.value, note, agent_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"unknown agent {agent_id!r}")
            tx.event("agent.state", agent_id, None, state=state.value, note=note)
            return _agent(tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,)))

    def set_agent_session(self, agent_id, session_id) -> Agent:
        with self._write() as tx:
            row = tx.one("SELECT meta FROM agents WHERE id = ?", (agent_id,))
            if row is None:
                raise NotFound(f"unknown agent {agent_id!r}")
            meta = json.loads(row["meta"] or "{}")
            if meta.get("session_id") == session_id:
                return _agent(tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,)))
            if session_id is None:
                meta.pop("session_id", None)
            else:
                meta["session_id"] = session_id
            tx.execute("UPDATE agents SET meta = ? WHERE id = ?", (json.dumps(meta), agent_id))
            tx.event("agent.session", agent_id, None, session_id=session_id)
            return _agent(tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,)))

    def deregister(self, agent_id) -> None:
        t = now()
        with self._write() as tx:
            cur = tx.execute(
                "UPDATE agents SET state = 'stopped', current_task = NULL, last_heartbeat = ? "
                "WHERE id = ?", (t, agent_id))
            if cur.rowcount == 0:
                raise NotFound(f"unknown agent {agent_id!r}")
            # Handed to it while it was stopping, never started (a stopping worker hands back
            # what it runs): back to the queue without the try.
            for row in tx.all(
                "UPDATE tasks SET state = 'queued', agent_id = NULL, lease_expires = NULL, "
                "attempts = attempts - 1 WHERE agent_id = ? AND state = 'running' "
                "AND started_at IS NULL RETURNING id, attempts", (agent_id,)):
                tx.event("task.requeued", agent_id, row["id"],
                         reason="handed to an agent that stopped before starting it",
                         attempt=row["attempts"] + 1)
                tx.wake(None)
            self._orphan_tasks(tx, agent_id, "agent stopped", t)
            tx.event("agent.stopped", agent_id)

    def get_agent(self, agent_id) -> Agent:
        with self._reader() as tx:
            row = tx.one("SELECT * FROM agents WHERE id = ?", (agent_id,))
        if row is None:
            raise NotFound(f"unknown agent {agent_id!r}")
        return _agent(row)

    def list_agents(self) -> list[Agent]:
        with self._reader() as tx:
            return [_agent(r) for r in tx.all("SELECT * FROM agents ORDER BY registered_at, id")]

    # -- tasks --------------------------------------------------------------------
    def add_tasks(self, specs: list[TaskSpec]) -> list[Task]:
        t = now()
        added: list[Task] = []
        rows: list[tuple] = []
        dep_rows: list[tuple[str, str]] = []
        with self._write() as tx:
            known: dict[str, str] = {}
            agents_seen: set[str] = set()
            queued, any_plain = TaskState.QUEUED, False
            queued_at: list[int] = []  # rows that may be handed to an idle agent
            for spec in specs:
                if spec.target_agent is None and not spec.depends_on:
                    # The common case, kept short: thousands of these go in one transaction.
                    task_id = sortable_id("t")
                    queued_at.append(len(rows))
                    rows.append((task_id, spec.prompt, spec.context, int(spec.priority), None,
                                 spec.target_role, "queued", spec.max_attempts,
                                 int(spec.retry_on_failure), spec.timeout_s, t, None, None,
                                 spec.session_id, spec.broadcast_id, None, 0, None))
                    known[task_id] = "queued"
                    tx.events.append((t, "task.queued", None, task_id,
                                      _queued_data(spec.priority, spec.target_role)))
                    added.append(Task(task_id, spec.prompt, spec.context, spec.priority, None,
                                      spec.target_role, [], queued, 0, spec.max_attempts,
                                      spec.retry_on_failure, spec.timeout_s, t,
                                      session_id=spec.session_id,
                                      broadcast_id=spec.broadcast_id))
                    any_plain = True
                    continue
                if spec.target_agent is not None and spec.target_agent not in agents_seen:
                    if tx.one("SELECT 1 FROM agents WHERE id = ?", (spec.target_agent,)) is None:
                        raise NotFound(f"unknown agent {spec.target_agent!r}")
                    agents_seen.add(spec.target_agent)
                dep_states = []
                for dep in dict.fromkeys(spec.depends_on):
                    if dep in known:
                        dep_states.append((dep, known[dep]))
                        continue
                    row = tx.one("SELECT state FROM tasks WHERE id = ?", (dep,))
                    if row is None:
                        raise NotFound(f"unknown task {dep!r} (in depends_on)")
                    dep_states.append((dep, row["state"]))
                state, error = TaskState.QUEUED, None
                for dep, st in dep_states:
                    if st in ("failed", "cancelled"):
                        state, error = TaskState.CANCELLED, f"dependency {dep} {st}"
                        break
                    if st != "completed":
                        state = TaskState.BLOCKED
                task_id = sortable_id("t")
                depends_on = [d for d, _ in dep_states]
                if state is TaskState.QUEUED:
                    queued_at.append(len(rows))
                rows.append((task_id, spec.prompt, spec.context, int(spec.priority),
                             spec.target_agent, spec.target_role, state.value, spec.max_attempts,
                             int(spec.retry_on_failure), spec.timeout_s, t,
                             t if state.finished else None, error, spec.session_id,
                             spec.broadcast_id, None, 0, None))
                dep_rows.extend((task_id, dep) for dep in depends_on)
                known[task_id] = state.value
                tx.event(f"task.{state.value}", spec.target_agent, task_id,
                         priority=spec.priority.name.lower(), target_role=spec.target_role,
                         depends_on=depends_on, error=error)
                if state is TaskState.QUEUED:
                    tx.wake(spec.target_agent)
                added.append(Task(
                    id=task_id, prompt=spec.prompt, context=spec.context, priority=spec.priority,
                    target_agent=spec.target_agent, target_role=spec.target_role,
                    depends_on=depends_on, state=state, attempts=0,
                    max_attempts=spec.max_attempts, retry_on_failure=spec.retry_on_failure,
                    timeout_s=spec.timeout_s, created_at=t,
                    completed_at=t if state.finished else None, error=error,
                    session_id=spec.session_id, broadcast_id=spec.broadcast_id))
            all_handed = bool(queued_at) and self._hand_off(tx, t, rows, added, queued_at)
            if any_plain:
                tx.wake_watchers = True
                if not all_handed:
                    tx.wake(None)
            # One statement for all rows: a batch of thousands costs a few µs per task. Nothing
            # reads them back in this transaction: they go out with the commit.
            tx.defer(
                "INSERT INTO tasks (id, prompt, context, priority, target_agent, target_role, "
                "state, max_attempts, retry_on_failure, timeout_s, created_at, completed_at, "
                "error, session_id, broadcast_id, agent_id, attempts, lease_expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows, many=True)
            if dep_rows:
                tx.defer("INSERT INTO task_deps (task_id, depends_on) VALUES (?, ?)",
                         dep_rows, many=True)
        return added

    def _hand_off(self, tx: Tx, t: float, rows: list[tuple], added: list[Task],
                  queued_at: list[int]) -> bool:
        """Hand queued tasks of this add to idle agents that take hand-offs (workers waiting on
        their wake-up channel), best tasks first: the task is claimed for the agent in this
        transaction, so the agent starts it without a claim transaction of its own (it reads its
        handed tasks when told). Returns True when every queued task was handed over."""
        anyone = all(added[i].target_agent is None and added[i].target_role is None
                     for i in queued_at)
        idle = tx.all(
            # (heard from within two heartbeats: a dead agent is offered tasks for less long)
            "SELECT id, roles, lease_s, host, pid FROM agents WHERE pushable = 1 AND state = 'idle' "
            "AND current_task IS NULL AND last_heartbeat + lease_s / 3 > ? "
            f"ORDER BY last_heartbeat DESC LIMIT ?{self.claim_lock_clause}",
            (t, len(queued_at) if anyone else 1_000_000))
        if not idle:
            return False
        here = _hostname()
        # An agent killed while idle on this very host is not a taker. (One system call: a
        # /proc read costs 0.17 ms on an idle machine here. An exited process nobody reaped
        # yet still looks present: its lease finds it.)
        free = [(r["id"], _roles(r["roles"]), r["lease_s"]) for r in idle
                if r["host"] != here or not r["pid"] or pids.present(r["pid"])]
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
            row = rows[i]
            rows[i] = (*row[:6], "running", *row[7:15], agent, 1, task.lease_expires)
            tx.defer("UPDATE agents SET state = 'busy', current_task = ? WHERE id = ?",
                     (task.id, agent))
            tx.events.append((t, "task.claimed", agent, task.id,
                              '{"attempt": 1, "handed_over": true}'))
            tx.handed.add(agent)  # (its wake-up says so; the agent reads the task from the store)
            left -= 1
        return left == 0

    def _candidate_sql(self, roles: list[str]) -> tuple[str, list[Any]]:
        """The next tasks this agent may take, best first (``LIMIT ?`` is the last parameter)."""
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

    def claim(self, agent_id, roles, lease_s, finish=None) -> Task | None:
        tasks = self.claim_batch(agent_id, roles, lease_s, [finish] if finish else [], 1)
        return tasks[0] if tasks else None

    def claim_batch(self, agent_id, roles, lease_s, finishes, limit, handed=False) -> list[Task]:
        sql, role_params = self._candidate_sql(roles)
        params = [agent_id, *role_params]
        if not finishes:
            if limit < 1:
                return []
            if self.precheck_claims or handed:
                # A cheap look without the write lock: tasks handed to this agent are already
                # its own, and most wake-ups of a crowd of idle agents end here.
                with self._reader() as tx:
                    rows = tx.all(self._handed_sql, (agent_id,))
                    if rows:
                        return self._claimed(rows)
                    if self.precheck_claims and tx.one(sql, [*params, 1]) is None:
                        return []
        t = now()
        # Everything that needs no database is done before or after the transaction: on
        # SQLite all writers queue for one lock, so its hold time is the queue's throughput.
        results = _Results(finishes, t)
        with self._write() as tx:
            tx.relaxed = not finishes
            self._record(tx, agent_id, results, t)
            rows: list[Any] = []
            if limit > 0 and finishes and handed:
                # Handed over while this agent was busy: take them now, with their start time.
                rows = tx.all(
                    "UPDATE tasks SET started_at = ? WHERE agent_id = ? AND state = 'running' "
                    f"AND started_at IS NULL RETURNING {self._claim_returning}", (t, agent_id))
                limit -= len(rows)
            if limit > 0:
                # One statement claims the whole batch. RETURNING has no set order.
                claimed = tx.all(
                    "UPDATE tasks SET state = 'running', agent_id = ?, attempts = attempts + 1, "
                    "lease_expires = ?, started_at = ?, completed_at = NULL, error = NULL "
                    f"WHERE seq IN ({sql}{self.claim_lock_clause}) "
                    f"RETURNING {self._claim_returning}",
                    [agent_id, t + lease_s, t, *params, limit])
                claimed.sort(key=lambda r: (r["priority"], r["seq"]))
                for row in claimed:
                    tx.events.append((t, "task.claimed", agent_id, row["id"],
                                      f'{{"attempt": {row["attempts"]}}}'))
                tx.wake_watchers = tx.wake_watchers or bool(claimed)
                rows += claimed
            self._update_agent(tx, agent_id, finishes, rows[0]["id"] if rows else None)
        return self._claimed(rows)

    @staticmethod
    def _claimed(rows: list[Any]) -> list[Task]:
        tasks = []
        for row in rows:
            task = _task(row, row["deps"].split(" ") if row["deps"] else [], with_output=False)
            task.context_generation = int(row["ctx_gen"])
            tasks.append(task)
        return tasks

    def _update_agent(self, tx: Tx, agent_id: str, finishes: list[Finish],
                      current: str | None) -> None:
        """One write for the agent's state, current task and counters."""
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
        tx.defer(
            f"UPDATE agents SET {state_sql}, tasks_done = tasks_done + ?, "
            "tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost_usd = cost_usd + ? "
            "WHERE id = ?", (*params, len(finishes), tokens_in, tokens_out, cost, agent_id))

    def finish(self, agent_id, finish) -> TaskState | None:
        t = now()
        results = _Results([finish], t)
        with self._write() as tx:
            state = self._record(tx, agent_id, results, t)[0]
            self._update_agent(tx, agent_id, [finish], None)
            return state

    def _record(self, tx: Tx, agent_id: str, results: "_Results",
                t: float) -> list[TaskState | None]:
        """Record results: the usual ones (our running claim, no retry due) in one statement;
        the others (stale, cancelled meanwhile, a failure to retry) one by one."""
        if not results.finishes:
            return []
        n = len(results.finishes)
        sql = self._record_sql.get(n)
        if sql is None:
            f, b = self.float_type, self.blob_type
            row = (f"(CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS TEXT), CAST(? AS {f}), "
                   f"CAST(? AS {b}), CAST(? AS {b}), CAST(? AS INTEGER), CAST(? AS INTEGER), "
                   f"CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS {f}), CAST(? AS TEXT), "
                   "CAST(? AS TEXT), CAST(? AS INTEGER))")
            sql = self._record_sql[n] = (
                "UPDATE tasks SET state = v.column3, "
                "started_at = COALESCE(v.column4, tasks.started_at), completed_at = ?, "
                "lease_expires = NULL, output = v.column5, stderr = v.column6, "
                "output_truncated = v.column7, exit_code = v.column8, tokens_in = v.column9, "
                "tokens_out = v.column10, cost_usd = v.column11, "
                "session_id = COALESCE(v.column12, tasks.session_id), error = v.column13 "
                f"FROM (VALUES {', '.join([row] * n)}) AS v "
                "WHERE tasks.id = v.column1 AND tasks.agent_id = ? "
                "AND tasks.attempts = v.column2 AND tasks.state = 'running' "
                "AND NOT (v.column14 = 1 AND tasks.retry_on_failure = 1 "
                "AND tasks.attempts < tasks.max_attempts) "
                "RETURNING tasks.id, tasks.started_at")
        done = {r["id"]: r["started_at"] for r in tx.all(sql, [t, *results.params, agent_id])}
        states: list[TaskState | None] = []
        settle: list[tuple[str, TaskState]] = []
        for f, data in zip(results.finishes, results.events):
            if f.task_id not in done:
                states.append(self._finish(tx, agent_id, f, t))
                continue
            o = f.outcome
            if data is None:  # the worker did not say when it started: the claim's time
                data = _finish_event(o, t - done[f.task_id])
            tx.events.append((t, f"task.{o.status.value}", agent_id, f.task_id, data))
            states.append(o.status)
            settle.append((f.task_id, o.status))
        tx.wake_watchers = True
        if settle:
            # One look for the whole batch: which of these tasks have dependents at all.
            ids = [task_id for task_id, _ in settle]
            has = {r["depends_on"] for r in tx.all(
                "SELECT DISTINCT depends_on FROM task_deps WHERE depends_on IN "
                f"({', '.join('?' * len(ids))})", ids)}
            for task_id, state in settle:
                if task_id in has:
                    self._settle_dependents(tx, task_id, state, t)
        return states

    def _finish(self, tx: Tx, agent_id: str, finish: Finish, t: float) -> TaskState | None:
        o: Outcome = finish.outcome
        row = tx.one(
            "SELECT state, agent_id, attempts, max_attempts, retry_on_failure, started_at "
            "FROM tasks WHERE id = ?", (finish.task_id,))
        if row is None or row["agent_id"] != agent_id or row["attempts"] != finish.attempt or \
                row["state"] not in ("running", "cancelled"):
            tx.event("task.stale_result", agent_id, finish.task_id, attempt=finish.attempt)
            return None
        result_cols = (
            "output = ?, stderr = ?, output_truncated = ?, exit_code = ?, tokens_in = ?, tokens_out = ?, "
            "cost_usd = ?, session_id = COALESCE(?, session_id)"
        )
        result_params = (o.output, o.stderr, int(o.output_truncated), o.exit_code, o.tokens_in,
                         o.tokens_out, o.cost_usd, o.session_id)
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
        tx.event(f"task.{state.value}", agent_id, finish.task_id, exit_code=o.exit_code,
                 error=o.error, duration_ms=round((t - started) * 1000, 3),
                 tokens_in=o.tokens_in, tokens_out=o.tokens_out, cost_usd=o.cost_usd)
        self._settle_dependents(tx, finish.task_id, state, t)
        return state

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

    def recover(self) -> int:
        with self._write() as tx:
            return self._recover(tx, now())

    def _recover(self, tx: Tx, t: float) -> int:
        n = 0
        for row in tx.all(
            "SELECT id, agent_id, attempts, max_attempts FROM tasks "
            "WHERE state = 'running' AND lease_expires < ?", (t,)
        ):
            n += 1
            self._lose_task(tx, row, f"lease expired: agent {row['agent_id']} stopped responding", t)
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
                    tx.event("task.cancelled", row["target_agent"], row["id"], reason=reason)
                    pending.append((row["id"], TaskState.CANCELLED))

    def _load_task(self, tx: Tx, task_id: str | None, seq: int | None = None,
                   with_output: bool = True) -> Task:
        cols = _TASK_COLS if with_output else _TASK_COLS_NO_OUTPUT
        if seq is not None:
            row = tx.one(f"SELECT {cols} FROM tasks WHERE seq = ?", (seq,))
        else:
            row = tx.one(f"SELECT {cols} FROM tasks WHERE id = ?", (task_id,))
        if row is None:
            raise NotFound(f"unknown task {task_id!r}")
        deps = [r["depends_on"] for r in
                tx.all("SELECT depends_on FROM task_deps WHERE task_id = ?", (row["id"],))]
        return _task(row, deps, with_output)

    def get_task(self, task_id) -> Task:
        with self._reader() as tx:
            return self._load_task(tx, task_id)

    def task_state(self, task_id) -> TaskState:
        with self._reader() as tx:
            row = tx.one("SELECT state FROM tasks WHERE id = ?", (task_id,))
        if row is None:
            raise NotFound(f"unknown task {task_id!r}")
        return TaskState(row["state"])

    def list_tasks(self, state=None, agent_id=None, limit=100, with_output=False) -> list[Task]:
        cols = _TASK_COLS if with_output else _TASK_COLS_NO_OUTPUT
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        sql = f"SELECT {cols} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        with self._reader() as tx:
            rows = tx.all(sql, params)
            deps: dict[str, list[str]] = {}
            if rows:
                ids = [r["id"] for r in rows]
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    for d in tx.all(
                        f"SELECT task_id, depends_on FROM task_deps WHERE task_id IN "
                        f"({', '.join('?' * len(chunk))})", chunk):
                        deps.setdefault(d["task_id"], []).append(d["depends_on"])
        return [_task(r, deps.get(r["id"], []), with_output) for r in reversed(rows)]

    def counts(self) -> dict[str, int]:
        with self._reader() as tx:
            rows = tx.all("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")
        out = {s.value: 0 for s in TaskState}
        out.update({r["state"]: r["n"] for r in rows})
        return out

    # -- messages -------------------------------------------------------------------
    def add_message(self, agent_id, body, direction="in", kind="message", sender=None,
                    task_id=None) -> Message:
        if direction not in ("in", "out"):
            raise InvalidInput(f"bad message direction {direction!r}: expected in or out")
        with self._write() as tx:
            if tx.one("SELECT 1 FROM agents WHERE id = ?", (agent_id,)) is None:
                raise NotFound(f"unknown agent {agent_id!r}")
            row = tx.one(
                "INSERT INTO messages (agent_id, direction, kind, body, sender, task_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (agent_id, direction, kind, body, sender, task_id, now()))
            msg_id = row["id"]
            tx.event("message.sent", agent_id, task_id, message_id=msg_id, direction=direction,
                     message_kind=kind, sender=sender)
            if direction == "in":
                tx.wake(agent_id)
            return _message(tx.one("SELECT * FROM messages WHERE id = ?", (msg_id,)))

    def mark_delivered(self, message_id, confirmed, how, reason=None) -> Message:
        with self._write() as tx:
            row = tx.one("SELECT * FROM messages WHERE id = ?", (message_id,))
            if row is None:
                raise NotFound(f"unknown message {message_id}")
            tx.execute("UPDATE messages SET delivered_at = ? WHERE id = ?", (now(), message_id))
            tx.event("message.delivered", row["agent_id"], row["task_id"], message_id=message_id,
                     confirmed=confirmed, via=how, reason=reason)
            return _message(tx.one("SELECT * FROM messages WHERE id = ?", (message_id,)))

    def list_messages(self, agent_id, direction=None, unread=False, limit=100,
                      mark_read=False) -> list[Message]:
        where, params = ["agent_id = ?"], [agent_id]
        if direction is not None:
            where.append("direction = ?")
            params.append(direction)
        if unread:
            where.append("read_at IS NULL")
        sql = (f"SELECT * FROM messages WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?")
        params.append(limit)
        ctx = self._write() if mark_read else self._reader()
        with ctx as tx:
            if tx.one("SELECT 1 FROM agents WHERE id = ?", (agent_id,)) is None:
                raise NotFound(f"unknown agent {agent_id!r}")
            rows = tx.all(sql, params)
            msgs = [_message(r) for r in reversed(rows)]
            if mark_read and msgs:
                t = now()
                ids = [m.id for m in msgs if m.read_at is None]
                if ids:
                    tx.execute(
                        f"UPDATE messages SET read_at = ?, delivered_at = COALESCE(delivered_at, ?) "
                        f"WHERE id IN ({', '.join('?' * len(ids))})", (t, t, *ids))
                    tx.event("message.read", agent_id, None, message_ids=ids)
        return msgs

    # -- context --------------------------------------------------------------------
    def set_context(self, key, value, by=None) -> ContextEntry:
        if not key:
            raise InvalidInput("context key must not be empty")
        t = now()
        with self._write() as tx:
            row = tx.one("SELECT version FROM context WHERE key = ?", (key,))
            version = 1 if row is None else row["version"] + 1
            if row is None:
                tx.execute("INSERT INTO context (key, value, version, updated_at, updated_by) "
                           "VALUES (?, ?, ?, ?, ?)", (key, value, version, t, by))
            else:
                tx.execute("UPDATE context SET value = ?, version = ?, updated_at = ?, "
                           "updated_by = ? WHERE key = ?", (value, version, t, by, key))
            tx.event("context.set", by, None, key=key, version=version)
        return ContextEntry(key, value, version, t, by)

    def get_context(self, key) -> ContextEntry:
        with self._reader() as tx:
            row = tx.one("SELECT * FROM context WHERE key = ?", (key,))
        if row is None:
            raise NotFound(f"unknown context key {key!r}")
        return ContextEntry(row["key"], row["value"], row["version"], row["updated_at"],
                            row["updated_by"])

    def list_context(self) -> list[ContextEntry]:
        with self._reader() as tx:
            rows = tx.all("SELECT * FROM context ORDER BY key")
        return [ContextEntry(r["key"], r["value"], r["version"], r["updated_at"], r["updated_by"])
                for r in rows]

    # -- events ---------------------------------------------------------------------
    def add_event(self, kind, agent_id=None, task_id=None, data=None) -> None:
        with self._write() as tx:
            tx.event(kind, agent_id, task_id, **(data or {}))

    def read_events(self, after=0, limit=1000, task_id=None) -> list[Event]:
        with self._reader() as tx:
            if task_id is None:
                rows = tx.all("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?",
                              (after, limit))
            else:
                rows = tx.all("SELECT * FROM events WHERE task_id = ? AND id > ? ORDER BY id "
                              "LIMIT ?", (task_id, after, limit))
        return [Event(r["id"], r["ts"], r["kind"], r["agent_id"], r["task_id"],
                      json.loads(r["data"])) for r in rows]

    def last_event_id(self) -> int:
        with self._reader() as tx:
            row = tx.one("SELECT MAX(id) AS m FROM events")
        return row["m"] or 0
