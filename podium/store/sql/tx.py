"""Transactions: the dialect hooks, deferred writes, events and wake-ups of one commit.

``SqlBase`` is what every part of the SQL store stands on. A dialect implements
``_transaction`` (a write transaction that serialises claims: SQLite's ``BEGIN IMMEDIATE``,
PostgreSQL's row locks), ``_reader`` and ``_wake``; ``_write`` wraps a transaction so that its
events are written and its wake-ups sent, after the commit, with nothing else in between.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from podium.clock import now
from podium.errors import StoreError
from podium.store.base import Store
from podium.store.migrations import Migration, statements
from podium.wake import ALL_AGENTS, AllAgents

_log = logging.getLogger("podium.store")


class Tx:
    """A transaction's cursor with dialect-neutral ``?`` placeholders and pending wake-ups."""

    def __init__(self, cursor: Any, convert):
        self.cur = cursor
        self._convert = convert
        self.wake_agents: set[str] | AllAgents = set()
        self.wake_watchers = False
        #: Agents that this transaction handed a task to (told so after commit).
        self.handed: set[str] = set()
        self.events: list[tuple] = []
        #: Writes whose results nobody reads, sent with the commit (one round trip on PostgreSQL):
        #: (sql, parameters, True when the parameters are a list of rows).
        self.deferred: list[tuple[str, Any, bool]] = []
        #: (agent id, task id) of running tasks taken from agents that are gone: the caller's
        #: runtime ends what those agents may have left running (see ``podium.orphans``).
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

    def all_together(self, statements: list[tuple[str, tuple | list]]) -> list[list[Any]]:
        """The rows of each statement, run in this order. None may need the rows of another:
        a dialect may send them all before reading any (PostgreSQL: one round trip)."""
        return [self.all(sql, params) for sql, params in statements]

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
            self.wake_agents.add(agent_id)

    def event(self, kind: str, agent_id: str | None = None, task_id: str | None = None,
              **data: Any) -> None:
        """Record an event; events are written together just before the commit."""
        self.events.append((now(), kind, agent_id, task_id, json.dumps(data, ensure_ascii=False)))
        self.wake_watchers = True


class SqlBase(Store):
    """What the parts of the SQL store share: the dialect's hooks and one commit's life."""

    url: str
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

    # -- dialect hooks ------------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Tx]:
        """A write transaction; commits on success, rolls back on error."""

    @abc.abstractmethod
    def _reader(self) -> contextlib.AbstractContextManager[Tx]:
        """A consistent read."""

    @abc.abstractmethod
    def _wake(self, agents: set[str] | AllAgents, watchers: bool, handed: set[str]) -> None:
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
    def _apply_migrations(tx: Tx, migrations: list[Migration],
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
        if "m005_store_key" in applied:  # (its table is made there; the secret once, here)
            tx.execute("INSERT INTO store_key (id, secret) VALUES (1, ?)",
                       (secrets.token_hex(32),))
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
        self._after_commit()

    @contextlib.contextmanager
    def _statement(self) -> Iterator[Tx]:
        """One write statement, atomic by itself, that needs neither events nor wake-ups (an
        idle agent's heartbeat). SQLite takes the writer lock as for any write; PostgreSQL
        overrides ``_single_statement`` to send it alone, without the BEGIN and COMMIT round
        trips a transaction costs."""
        with self._single_statement() as tx:
            yield tx
        self._after_commit()

    def _single_statement(self) -> contextlib.AbstractContextManager[Tx]:
        return self._transaction()

    def _after_commit(self) -> None:
        """Housekeeping after a write, once the processes it concerns were woken."""
