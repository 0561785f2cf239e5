"""The shared store: PostgreSQL, for agents on several machines.

Same schema and lifecycle as SQLite (the SQL lives in ``sql.py``); this module supplies what
differs: a connection pool (psycopg 3), claims with ``SELECT ... FOR UPDATE SKIP LOCKED`` so
concurrent claimers never wait on each other's rows, and wake-ups through ``LISTEN/NOTIFY`` sent
inside the committing transaction (delivered exactly when it commits).

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
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from podium.errors import StoreError, StoreUnavailable
from podium.store.migrations import MIGRATIONS
from podium.store.sql import SqlStore, Tx
from podium.wake import ALL_AGENTS

if TYPE_CHECKING:  # psycopg is optional (the postgres extra): imported where used
    import psycopg

TYPES = {"id": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "float": "DOUBLE PRECISION",
         "dialect": "postgresql"}
_PIPELINE = True  # libpq pipeline mode for a transaction's tail (checked when the store opens)
_ALL = "*"
_HANDED = "h:"  # + an agent's id: a task was handed to it
#: How long any statement waits for a lock before it fails with a clear error.
LOCK_TIMEOUT_S = 10


@functools.lru_cache(maxsize=512)
def _convert(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def redact(url: str) -> str:
    """The URL without its password, for messages and listings."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def without_password(url: str) -> tuple[str, bool]:
    """A PostgreSQL URL without its password (in the user part or a ``password=`` parameter),
    and whether it had one. Other URLs are returned as they are."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        return url, False
    had = False
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
        had = True
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "password"]
    if len(kept) != len(query):
        had = True
    if not had:
        return url, False
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept))), True


def _psycopg():
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise StoreError("PostgreSQL stores need psycopg: pip install 'podium[postgres]' "
                         "(psycopg[binary] and psycopg-pool)") from None
    return psycopg


def _explain(e: Exception, url: str) -> StoreError:
    """A clear message for the usual ways of failing to connect."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    shown = redact(url)
    low = msg.lower()
    if "does not exist" in low and "database" in low:
        return StoreError(f"{shown}: {msg} (create it with: createdb <name>)")
    if "password authentication failed" in low or "no password supplied" in low or \
            "role" in low and "does not exist" in low:
        return StoreError(f"{shown}: the server refused the credentials: {msg}")
    if "connection refused" in low or "could not connect" in low or "timeout" in low \
            or "no route" in low or "could not translate host" in low or "closed" in low \
            or "terminat" in low or "server" in low:
        return StoreUnavailable(f"cannot reach PostgreSQL at {shown}: {msg}")
    return StoreError(f"{shown}: {msg}")


def _configure(conn) -> None:
    conn.execute("SET idle_in_transaction_session_timeout = '60s'")
    conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
    # Every Podium query is an index lookup or an ordered index range with LIMIT. With stale
    # statistics (a burst of adds before autovacuum's ANALYZE, or autovacuum off) the planner
    # picks a bitmap scan + sort of the whole queue for the claim: ~2 ms a claim at 10,000
    # queued instead of ~0.03 ms through the tasks_queue index.
    conn.execute("SET enable_bitmapscan = off")
    conn.commit()


def _check_idle(conn) -> None:
    """The pool's check of a connection it hands out, without a round trip: an idle connection
    whose socket is readable got something unasked — the server's goodbye (shutdown, restart,
    terminated backend) or EOF — and only then is it pinged (and dropped if dead)."""
    if conn.closed or conn.broken:
        raise _psycopg().OperationalError("the connection is closed")
    try:
        ready = bool(select.select([conn.pgconn.socket], [], [], 0)[0])
    except (OSError, ValueError):
        ready = True
    if ready:
        from psycopg_pool import ConnectionPool

        ConnectionPool.check_connection(conn)


class PgListener:
    """A LISTEN connection: woken by notifications for one agent (or all), or every event."""

    def __init__(self, store: PostgresStore, agent_id: str | None):
        self.store = store
        self.agent_id = agent_id
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.conn: psycopg.Connection[Any] | None = None
        self._handed = False
        if agent_id is not None:
            self._handoff = _HANDED + agent_id
        self._connect()

    def _connect(self) -> None:
        psycopg = _psycopg()
        try:
            self.conn = psycopg.connect(self.store.url, autocommit=True, connect_timeout=5,
                                        keepalives=1, keepalives_idle=5, keepalives_interval=2,
                                        keepalives_count=3, tcp_user_timeout=15000)
            channel = (self.store.channel_events if self.agent_id is None
                       else self.store.channel_wake)
            self.conn.execute(f"LISTEN {channel}")
        except psycopg.Error as e:
            self.conn = None
            raise _explain(e, self.store.url) from None

    def _relevant(self, payload: str) -> bool:
        if self.agent_id is None or payload in (_ALL, self.agent_id):
            return True
        if payload == self._handoff:
            self._handed = True
            return True
        return False

    def handed_over(self) -> bool:
        """Whether a notification since the last call said a task was handed to this agent
        (also after a reconnect: notifications may have been missed meanwhile)."""
        handed, self._handed = self._handed, False
        return handed

    def wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.conn is None or self.conn.closed:
                try:
                    self._connect()
                except StoreError:
                    time.sleep(min(1.0, timeout or 1.0))
                    return True  # let the caller try the store (and back off) itself
                self._handed = self.agent_id is not None  # (missed meanwhile, perhaps)
                return True
            pg = self.conn.pgconn
            try:
                pg.consume_input()
                hit = False
                while (n := pg.notifies()) is not None:
                    hit = self._relevant(n.extra.decode(errors="replace")) or hit
                if hit:
                    return True
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([pg.socket, self._r], [], [], left)
                if self._r in ready:
                    try:
                        while os.read(self._r, 64):
                            pass
                    except BlockingIOError:
                        pass
                    return True
                if not ready:
                    return False
            except Exception:
                with contextlib.suppress(Exception):
                    self.conn.close()
                self.conn = None
                continue

    def poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._w, b"!")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.conn is not None:
                self.conn.close()
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


class PostgresStore(SqlStore):
    claim_lock_clause = " FOR UPDATE SKIP LOCKED"
    precheck_claims = False  # a claim that finds nothing is one short read-only transaction
    concat_sql = "string_agg(depends_on, ' ')"
    events_in_one_statement = True
    float_type = TYPES["float"]
    blob_type = TYPES["blob"]

    def __init__(self, url: str, migrate: bool = True, pool_size: int = 4):
        psycopg = _psycopg()
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url = url
        self.home = Path(os.environ.get("PODIUM_HOME", ".podium")).resolve()
        # Connect once directly: the pool would turn a refused login into a bare time-out.
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                row = conn.execute("SELECT current_database(), current_schema()").fetchone()
        except psycopg.Error as e:
            raise _explain(e, url) from None
        if row[1] is None:
            raise StoreError(f"{redact(url)}: the schema in search_path does not exist")
        # One migrator at a time across every host (the store's own lock table may not exist yet).
        self._migration_lock = int(hashlib.sha1(f"{row[0]}/{row[1]}".encode()).hexdigest()[:15], 16)
        # A host cut off mid-transaction must not hold its row locks for hours (the server's
        # default keepalive), nor hang its own worker: keepalives and a TCP user timeout bound
        # both, and the server ends transactions left idle.
        conn_kwargs = {"row_factory": dict_row, "connect_timeout": 5, "keepalives": 1,
                       "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                       "tcp_user_timeout": 15000}
        # Autocommit: readers run bare statements (READ COMMITTED gives each statement its own
        # snapshot anyway, so BEGIN/COMMIT around a read only cost two round trips); writers
        # open their transactions explicitly.
        conn_kwargs["autocommit"] = True
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, timeout=5,
            kwargs=conn_kwargs, configure=_configure,
            check=_check_idle, reconnect_timeout=60,
        )
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
                f"{redact(self.url)}: waited {LOCK_TIMEOUT_S} s for a lock that another session "
                "holds (pg_locks shows which); try again") from None
        except PoolTimeout:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {redact(self.url)} "
                                   "(no connection within 5 s)") from None
        except psycopg.OperationalError as e:
            raise _explain(e, self.url) from None
        except psycopg.errors.DiskFull:
            raise StoreUnavailable(f"the PostgreSQL server's disk is full ({redact(self.url)}); "
                                   "free some space there and retry") from None
        except psycopg.Error as e:
            raise StoreError(f"{redact(self.url)}: {e}".strip()) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._connection() as conn:
            with conn.cursor() as cur:
                # A pipeline opened by _before_commit closes after COMMIT: the transaction's
                # tail (lock, events, notifications) and its COMMIT reach the server together,
                # so the advisory lock is held for no client round trip.
                with contextlib.ExitStack() as tail:
                    with conn.transaction():
                        tx = Tx(cur, _convert)
                        # PostgreSQL's own attribute on the dialect-neutral Tx (Tx does not
                        # declare it), read back by _before_commit.
                        tx.pg_tail = (conn, tail)  # type: ignore[attr-defined]
                        yield tx

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Tx]:
        with self._connection() as conn:
            with conn.cursor() as cur:
                yield Tx(cur, _convert)

    def _before_commit(self, tx: Tx) -> None:
        # The (connection, exit stack) that _transaction gave the transaction.
        pg_tail: tuple[psycopg.Connection[Any], contextlib.ExitStack] | None = getattr(
            tx, "pg_tail", None)
        if pg_tail is not None and _PIPELINE and (tx.events or tx.wake_agents or tx.deferred or
                                                  tx.handed):
            conn, tail = pg_tail
            tail.enter_context(conn.pipeline())
        # One statement for the deferred writes (each a data-modifying WITH clause), the
        # commit's settings, the events lock and the notifications (these are delivered at
        # COMMIT, wherever they stand in the transaction): psycopg's cost per statement is the
        # larger part of a short transaction here. A bulk write stays a statement of its own.
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
            call_params += [self.channel_wake, _HANDED + agent]
        if tx.wake_agents is ALL_AGENTS:
            calls.append("pg_notify(%s, %s)")
            call_params += [self.channel_wake, _ALL]
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

    def _wake(self, agents, watchers, handed) -> None:
        pass  # sent inside the transaction by _before_commit

    def agent_waiter(self, agent_id: str) -> PgListener:
        return PgListener(self, agent_id)

    def event_waiter(self) -> PgListener:
        return PgListener(self, None)

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
            self._pool.close()
