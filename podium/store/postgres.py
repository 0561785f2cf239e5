"""The shared store: PostgreSQL, for agents on several machines.

Same schema and lifecycle as SQLite (the SQL lives in ``podium.store.sql``; connecting, in
``pgconnect``); this module supplies what differs: a connection pool (psycopg 3), claims with
``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent claimers never wait on each other's rows,
and wake-ups through ``LISTEN/NOTIFY`` sent inside the committing transaction (delivered
exactly when it commits).

Event ids come from a sequence, which hands out numbers at insert time, not commit time: two
transactions could commit their events out of id order and a reader following the cursor would
skip one. Each transaction therefore writes its events last, holding an exclusive lock on the
``store_key`` table until it commits, so events become visible in id order. (A table lock, not
an advisory lock: a role without rights on Podium's tables cannot take it and stall the team.)

Notifications are hints: ``*`` (every agent), an agent's id, or ``h:`` and an agent's id (a
task was handed to it); what runs is always read from the store. Their channel names are
derived from the store's secret (the ``store_key`` table), so a role that can merely connect
can neither listen to a team's notifications nor send on them, and several Podium stores can
share one server (``?options=-csearch_path%3Dmyteam``). Every lock wait gives up after
LOCK_TIMEOUT_S with a clear error instead of hanging.

On a host whose daemon is live (``podium.store.pghost``: ``podium up`` starts it), a store opened
there connects through the daemon's PgBouncer and is woken by the daemon's relay instead of a
``LISTEN`` connection of its own; the store behaves the same either way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from podium.errors import PodiumError, StoreError, StoreUnavailable
from podium.store import hostbeats, pgconnect, pghost
from podium.store.base import HeartbeatReply, Waiter
from podium.store.migrations import MIGRATIONS
from podium.store.pgconnect import (
    HANDED_PREFIX,
    KEEPALIVES,
    WAKE_ALL,
    PgListener,
    check_idle,
    configure_session,
    explain,
    psycopg_module,
    redact,
)
from podium.store.sql import SqlStore, Tx
from podium.wake import ALL_AGENTS, WakeChannel

TYPES = {"id": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "float": "DOUBLE PRECISION",
         "dialect": "postgresql"}
_PIPELINE = True  # libpq pipeline mode for a transaction's tail (checked when the store opens)
_log = logging.getLogger("podium.store")


@functools.lru_cache(maxsize=512)
def _convert(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PgTx(Tx):
    """A PostgreSQL write transaction whose BEGIN waits, in a pipeline, for its first
    statement: the two reach the server together, one round trip instead of two (an add that
    hands its task over takes two in all, not three: through PgBouncer, interleaved, its median
    went from 2.8 to 2.6 ms here). Once the first statement is sent, that pipeline is synced
    (its results, row counts included, are there as without one) and the transaction goes on
    in plain mode until its tail (``pipeline_tail``)."""

    def __init__(self, cur: Any, head: contextlib.ExitStack | None, tail: contextlib.ExitStack):
        super().__init__(cur, _convert)
        self._head = head  # (the pipeline BEGIN waits in; None once sent)
        self._tail = tail  # (closed after COMMIT)

    def _sent(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            head.close()

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        cur = super().execute(sql, params)
        self._sent()
        return cur

    def executemany(self, sql: str, rows: list) -> None:
        super().executemany(sql, rows)
        self._sent()

    def all_together(self, statements: list[tuple[str, tuple | list]]) -> list[list[Any]]:
        # As the transaction's first statements: each on a cursor of its own in the pipeline
        # where BEGIN waits, so BEGIN and all of them reach the server together; their results
        # are read once it is synced.
        if len(statements) < 2 or self._head is None:
            return super().all_together(statements)
        with contextlib.ExitStack() as cursors:
            curs = [cursors.enter_context(self.cur.connection.cursor()) for _ in statements]
            for cur, (sql, params) in zip(curs, statements):
                cur.execute(_convert(sql), params)
            self._sent()
            return [cur.fetchall() for cur in curs]

    def pipeline_tail(self) -> None:
        """Send the rest of the transaction and its COMMIT in one pipeline, synced after
        COMMIT: BEGIN's own when nothing was sent yet."""
        if self._head is not None:
            self._tail.enter_context(self._head.pop_all())
            self._head = None
        else:
            self._tail.enter_context(self.cur.connection.pipeline())


class PostgresStore(SqlStore):
    claim_lock_clause = " FOR UPDATE SKIP LOCKED"
    precheck_claims = False  # a claim that finds nothing is one short read-only transaction
    concat_sql = "string_agg(depends_on, ' ')"
    events_in_one_statement = True
    keyword_index = "tsvector"  # (memories: a generated tsvector column, see migration m009)
    float_type = TYPES["float"]
    blob_type = TYPES["blob"]

    def __init__(self, url: str, migrate: bool = True, pool_size: int = 4,
                 host_route: bool = True):
        """``host_route``: go through this host's daemon when it is live (``pghost``; the
        daemon itself does not)."""
        psycopg = psycopg_module()
        self.url = url
        self.home = Path(os.environ.get("PODIUM_HOME", ".podium")).resolve()
        self._route: pghost.Route | None = None
        self._relay: WakeChannel | None = None
        # Connect once first: the pool would turn a refused login into a bare time-out. (The
        # store's secret, if it has one yet, names this host's daemon.) Through the PgBouncer of
        # a daemon started for this URL when there is one -- two hundred workers starting at
        # once must not each need a server connection of their own -- else directly.
        first = pghost.bouncer_for(url) if host_route and pghost.mode() != "off" else None
        row = secret = None
        for via in filter(None, (first, url)):
            try:
                with psycopg.connect(via, connect_timeout=5,
                                     prepare_threshold=None if via is first else 5) as conn:
                    row = conn.execute(
                        "SELECT current_database(), current_schema(), "
                        "to_regclass('store_key') IS NOT NULL").fetchone()
                    secret = row[2] and conn.execute(
                        "SELECT secret FROM store_key WHERE id = 1").fetchone()
                break
            except psycopg.Error as e:
                if via is url:
                    raise explain(e, url) from None
        assert row is not None
        if row[1] is None:  # (a schema this role may not use is left out of search_path too)
            raise StoreError(f"{redact(url)}: the schema in search_path does not exist, or this "
                             "role has no USAGE on it (GRANT USAGE ON SCHEMA ... TO ...)")
        # One migrator at a time across every host (the store's own lock table may not exist yet).
        self._migration_lock = int(hashlib.sha1(f"{row[0]}/{row[1]}".encode()).hexdigest()[:15], 16)
        self._secret: str | None = secret[0] if secret else None
        if host_route and secret:
            self._route = (pghost.ensure(url, secret[0]) if pghost.mode() == "on" else
                           pghost.attach(secret[0]) if pghost.mode() == "auto" else None)
        #: This host's daemon beats for its idle agents (``hostbeats``) while it serves us.
        self._idle_beats: hostbeats.IdleBeats | None = None
        if self._route is not None:
            self._relay = WakeChannel(self._route.wake_key)
            assert self._secret is not None  # (a route is found by the secret)
            self._idle_beats = hostbeats.IdleBeats(pghost.host_dir(self._secret))
        self._direct_pool_size = pool_size
        self._route_lock = threading.Lock()
        self._pool = self._new_pool(self._route)
        self._pool.open(wait=False)
        self._closed = False
        self._psycopg = psycopg
        global _PIPELINE
        _PIPELINE = psycopg.Pipeline.is_supported()
        if migrate:
            self.migrate()
        key = hashlib.sha256(f"podium channels {self.store_secret()}".encode()).hexdigest()
        self.channel_wake = f"podium_wake_{key[:24]}"
        self.channel_events = f"podium_events_{key[24:48]}"

    def _new_pool(self, route: pghost.Route | None) -> Any:
        """A pool (not yet open) of connections to the server: through ``route``'s PgBouncer
        when it has one, else directly."""
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        # Autocommit: readers run bare statements (READ COMMITTED gives each statement its own
        # snapshot anyway, so BEGIN/COMMIT around a read only cost two round trips); writers
        # open their transactions explicitly.
        kwargs: dict[str, Any] = {"row_factory": dict_row, "autocommit": True}
        if route is not None and route.bouncer is not None:
            # PgBouncer in transaction mode: a statement prepared on one server connection
            # would be missing on the next, so none is; the session settings come from its
            # connect_query (see pghost). Its keepalives are its own.
            target, size, configure = route.bouncer, pghost.CLIENT_POOL, None
            kwargs.update(connect_timeout=5, prepare_threshold=None)
        else:
            # Keepalives and a TCP user timeout (KEEPALIVES), and the server ends transactions
            # left idle (configure_session). Through a daemon without PgBouncer, one each.
            target, size = self.url, self._direct_pool_size if route is None else 1
            configure = configure_session
            kwargs.update(KEEPALIVES)
        return ConnectionPool(target, min_size=1, max_size=size, open=False, timeout=5,
                              kwargs=kwargs, configure=configure, check=check_idle,
                              reconnect_timeout=60)

    # -- dialect hooks --------------------------------------------------------------
    @contextlib.contextmanager
    def _connection(self):
        psycopg = self._psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.LockNotAvailable:
            raise StoreUnavailable(
                f"{redact(self.url)}: waited {pgconnect.LOCK_TIMEOUT_S} s for a lock that "
                "another session holds (pg_locks shows which); try again") from None
        except PoolTimeout:
            self._route_failed()
            raise StoreUnavailable(f"cannot reach PostgreSQL at {redact(self.url)} "
                                   "(no connection within 5 s)") from None
        except psycopg.errors.DiskFull:
            raise StoreUnavailable(f"the PostgreSQL server's disk is full ({redact(self.url)}); "
                                   "free some space there and retry") from None
        except psycopg.OperationalError as e:
            self._route_failed()
            raise explain(e, self.url) from None
        except psycopg.Error as e:  # (a read-only server, a missing right, a dropped schema...)
            raise explain(e, self.url) from None

    def _route_failed(self) -> None:
        """A connection failed, after the transaction: if it went through this host's daemon
        and the daemon is gone, start it again for the caller's next try. A new daemon's
        PgBouncer has the old one's socket, yet the pool is made afresh (it would wait out its
        reconnection backoff first: ~14 s seen), and direct when the new daemon has no
        PgBouncer (it could not be started this time)."""
        with self._route_lock:  # (the heartbeat's thread and the worker's may both fail)
            old = self._route
            if old is None or old.bouncer is None or self._secret is None:
                return
            try:
                self._route = new = pghost.revive(old, self.url, self._secret)
            except (PodiumError, OSError) as e:  # (the caller's error says what failed)
                _log.warning("podium: the PostgreSQL host daemon could not be started again: "
                             "%s", e)
                return
            if new is not old:  # (a new daemon: connect afresh now, not at the pool's backoff)
                pool, self._pool = self._pool, self._new_pool(new)
                self._pool.open(wait=False)
                pool.close(timeout=0)  # (connections in use are closed as they come back)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Tx]:
        psycopg = self._psycopg
        with self._connection() as conn:
            with conn.cursor() as cur:
                # The tail's pipeline (opened by _before_commit) closes after COMMIT: the
                # transaction's tail (lock, events, notifications) and its COMMIT reach the
                # server together, so the advisory lock is held for no client round trip.
                with contextlib.ExitStack() as tail:
                    # BEGIN waits in a pipeline for the first statement (see _PgTx). psycopg's
                    # Transaction, not conn.transaction(): in a pipeline, that one syncs BEGIN.
                    with contextlib.ExitStack() as head:
                        if _PIPELINE:
                            head.enter_context(conn.pipeline())
                        with psycopg.Transaction(conn):
                            yield _PgTx(cur, head if _PIPELINE else None, tail)

    @contextlib.contextmanager
    def _single_statement(self) -> Iterator[Tx]:
        # (The pool's connections are in autocommit mode: the statement commits by itself.)
        with self._connection() as conn:
            with conn.cursor() as cur:
                yield Tx(cur, _convert)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Tx]:
        with self._connection() as conn:
            with conn.cursor() as cur:
                yield Tx(cur, _convert)

    def _before_commit(self, tx: Tx) -> None:
        if isinstance(tx, _PgTx) and _PIPELINE and (tx.events or tx.wake_agents or tx.deferred
                                                    or tx.handed):
            tx.pipeline_tail()
        # One statement for the deferred writes (each a data-modifying WITH clause), the
        # commit's settings, the events and the notifications (these are delivered at COMMIT,
        # wherever they stand in the transaction): psycopg's cost per statement is the larger
        # part of a short transaction here. A bulk write stays a statement of its own, and with
        # events the deferred writes come first, before the events lock (see below).
        clauses: list[str] = []  # WITH clauses, and their parameters
        params: list = []
        calls: list[str] = []  # the SELECT's list, and its parameters
        call_params: list = []
        for sql, args, many in tx.deferred:
            if many and len(args) != 1:
                tx.executemany(sql, args)
                continue
            clauses.append(f"d{len(clauses)} AS ({_convert(sql)})")
            params += args[0] if many else args
        if tx.relaxed:
            # A claim lost in a server crash only puts its task back in the queue (the worker's
            # late result is refused, as after an expired lease): no need to wait for the disk.
            # Later synchronous commits (the result) flush it anyway.
            calls.append("set_config('synchronous_commit', 'off', true)")
        events = tx.events
        if events and clauses:
            # The deferred writes lock their rows before the events lock, never after: holding
            # it, a transaction waits for no row, so it is never part of a deadlock. (An add
            # holding an idle agent's row FOR UPDATE, waiting for the lock, while the agent's
            # own result, holding the lock, waited for that row: the server broke the cycle
            # after deadlock_timeout by failing one. In the pipeline: no round trip of its own.)
            tx.cur.execute(f"WITH {', '.join(clauses)} SELECT 1", params)
            clauses, params = [], []
        if events:
            # The lock is taken before the events get their ids, and held until COMMIT: a
            # reader's cursor never passes an id that a slower transaction has yet to commit.
            # (In the pipeline: no round trip of its own.) Up to a few hundred events go in the
            # statement below; more go in statements of their own.
            tx.cur.execute("LOCK TABLE store_key IN EXCLUSIVE MODE")
            if len(events) <= 200:
                rows = ", ".join(["(%s::float8, %s::text, %s::text, %s::text, %s::text)"]
                                 * len(events))
                clauses.append("e AS (INSERT INTO events (ts, kind, agent_id, task_id, data) "
                               f"VALUES {rows})")
                params += [v for row in events for v in row]
                tx.events = []
            calls.append("pg_notify(%s, '')")
            call_params.append(self.channel_events)
        handed = tx.handed
        for agent in handed:
            calls.append("pg_notify(%s, %s)")
            call_params += [self.channel_wake, HANDED_PREFIX + agent]
        if tx.wake_agents is ALL_AGENTS:
            calls.append("pg_notify(%s, %s)")
            call_params += [self.channel_wake, WAKE_ALL]
        else:
            for agent in tx.wake_agents:
                if agent not in handed:
                    calls.append("pg_notify(%s, %s)")
                    call_params += [self.channel_wake, agent]
        if calls or clauses:
            with_sql = f"WITH {', '.join(clauses)} " if clauses else ""
            tx.cur.execute(f"{with_sql}SELECT {', '.join(calls) or '1'}", params + call_params)
        self._write_events(tx)

    def _after_copy(self, tx: Tx) -> None:
        for table, col in (("tasks", "seq"), ("messages", "id"), ("events", "id")):
            tx.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                       f"COALESCE((SELECT MAX({col}) FROM {table}), 0) + 1, false)")
        super()._after_copy(tx)  # (the finished tasks counted afresh: podium.store.sql.history)

    def _wake(self, agents, watchers, handed) -> None:
        pass  # sent inside the transaction by _before_commit

    def agent_waiter(self, agent_id: str) -> Waiter:
        if self._relay is not None:
            return self._relay.agent_listener(agent_id)
        return PgListener(self, agent_id)

    def event_waiter(self) -> Waiter:
        if self._relay is not None:
            return self._relay.watch_listener()
        return PgListener(self, None)

    def heartbeat(self, agent_id, lease_s, task_id=None, attempt=0, roles=None,
                  holder=None) -> HeartbeatReply:
        # An idle beat that the host's daemon has made for the agent costs no round trip
        # (``hostbeats``): it says no work waits, as the daemon's round found.
        beats = self._idle_beats
        if task_id is None and beats is not None and beats.covered(agent_id, lease_s):
            return HeartbeatReply(work_waiting=None if roles is None else False,
                                  next_idle_beat_s=hostbeats.covered_interval(lease_s))
        reply = super().heartbeat(agent_id, lease_s, task_id, attempt, roles, holder)
        if task_id is None and beats is not None:
            beats.ask(agent_id, lease_s)
        return reply

    def deregister(self, agent_id, holder=None) -> None:
        if self._idle_beats is not None:
            self._idle_beats.forget(agent_id)
        super().deregister(agent_id, holder)

    def host_route(self) -> tuple[str, int] | None:
        """How this process reaches the server: ("pgbouncer", the host's pool), ("direct", 1)
        through the host's daemon without PgBouncer, or None: on its own (no daemon)."""
        if self._route is None:
            return None
        return ("pgbouncer", self._route.pool) if self._route.bouncer else ("direct", 1)

    def server_connections(self) -> tuple[int, int]:
        """(connections the server takes for roles like this one, connections open now)."""
        with self._reader() as tx:
            row = tx.one("SELECT current_setting('max_connections')::int - "
                         "current_setting('superuser_reserved_connections')::int AS room, "
                         "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                         "'client backend') AS used")
        return int(row["room"]), int(row["used"])

    # -- lifecycle ------------------------------------------------------------------
    def migrate(self) -> list[str]:
        with self._reader() as tx:
            if tx.one("SELECT to_regclass('schema_migrations') AS t")["t"] is not None:
                done = {r["name"] for r in tx.all("SELECT name FROM schema_migrations")}
                if all(name in done for name, _ in MIGRATIONS):
                    return []
        with self._transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (self._migration_lock,))
            return self._apply_migrations(tx, MIGRATIONS, TYPES)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stop_pruning()  # (an automatic prune in progress, before its pool goes)
            self._pool.close()
            if self._relay is not None:
                self._relay.close()
            if self._route is not None:
                self._route.close()
