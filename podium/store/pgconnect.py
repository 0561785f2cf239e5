"""Connecting to PostgreSQL: URLs shown without their passwords, the settings and keepalives
every session gets, one clear line for each usual way of failing to connect, the pool's cheap
check of an idle connection, and ``LISTEN`` connections (``PgListener``: a process's own
wake-ups when no host daemon relays them, see ``podium.store.pghost``).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from podium.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:  # psycopg is optional (the postgres extra): imported where used
    import psycopg

    from podium.store.postgres import PostgresStore

#: The wake channel's payloads: every agent; otherwise an agent's id, or this and an agent's id
#: (a task was handed to it).
WAKE_ALL = "*"
HANDED_PREFIX = "h:"
#: How long any statement waits for a lock before it fails with a clear error.
LOCK_TIMEOUT_S = 10
#: Every session's settings (PgBouncer's server connections get them from its connect_query).
#: Every Podium query is an index lookup or an ordered index range with LIMIT. With stale
#: statistics (a burst of adds before autovacuum's ANALYZE, or autovacuum off) the planner picks
#: a bitmap scan + sort of the whole queue for the claim: ~2 ms a claim at 10,000 queued instead
#: of ~0.03 ms through the tasks_queue index; hence enable_bitmapscan = off.
def session_settings() -> dict[str, str]:
    return {"idle_in_transaction_session_timeout": "60s", "lock_timeout": f"{LOCK_TIMEOUT_S}s",
            "enable_bitmapscan": "off"}
#: A host cut off mid-transaction must not hold its row locks for hours (the server's default
#: keepalive), nor hang its own worker: keepalives and a TCP user timeout bound both.
KEEPALIVES = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
              "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 15000}


def redact(url: str) -> str:
    """The URL with its password (in the user part, or a ``password=`` parameter) as ``***``,
    for messages and listings."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, _PASSWORD_PARAM.sub(r"\1***", parts.query)
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[-1]}"
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


#: A ``password=`` parameter's value in a query string.
_PASSWORD_PARAM = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


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


def psycopg_module():
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise StoreError("PostgreSQL stores need psycopg: pip install 'podium[postgres]' "
                         "(psycopg[binary] and psycopg-pool)") from None
    return psycopg


#: SQLSTATE classes and codes of errors that pass (the caller backs off and tries again):
#: connection exceptions, rollbacks (serialization failure, deadlock), insufficient resources
#: (too many clients, out of memory, disk full), the server shutting down or not yet up, a lock
#: not available.
TRANSIENT_CLASSES = ("08", "40", "53")
TRANSIENT_CODES = ("57P01", "57P02", "57P03", "55P03")


def explain(e: Exception, url: str) -> StoreError:
    """One clear line for an error of the server or the connection: StoreUnavailable when it
    may pass by itself (the server unreachable, the connection lost, a deadlock, too many
    clients...), StoreError when it needs someone to change something (no such database, bad
    credentials, a read-only server, a missing right)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    shown = redact(url)
    low = msg.lower()
    if "does not exist" in low and "database" in low:
        return StoreError(f"{shown}: {msg} (create it with: createdb <name>)")
    if "password authentication failed" in low or "no password supplied" in low or \
            "role" in low and "does not exist" in low:
        return StoreError(f"{shown}: the server refused the credentials: {msg}")
    sqlstate = getattr(e, "sqlstate", None)
    if sqlstate is None and _is_operational(e):
        # (no SQLSTATE: libpq's own failure to connect, to send or to read -- the connection
        # was lost, TLS ended without a close, a timeout)
        return StoreUnavailable(f"cannot reach PostgreSQL at {shown}: {msg}")
    if sqlstate is not None and (sqlstate[:2] in TRANSIENT_CLASSES or
                                 sqlstate in TRANSIENT_CODES):
        return StoreUnavailable(f"{shown}: {msg} (it may pass: try again)")
    return StoreError(f"{shown}: {msg}")


def _is_operational(e: Exception) -> bool:
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(e, psycopg.OperationalError)


def configure_session(conn) -> None:
    for name, value in session_settings().items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    conn.commit()


def listen_connection(url: str, channels: tuple[str, ...]) -> psycopg.Connection[Any]:
    """A connection (autocommit) that LISTENs on ``channels``, in that order; StoreError when
    it cannot be made."""
    psycopg = psycopg_module()
    conn = None
    try:
        conn = psycopg.connect(url, autocommit=True, **KEEPALIVES)
        for channel in channels:
            conn.execute(f"LISTEN {channel}")
        return conn
    except psycopg.Error as e:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        raise explain(e, url) from None


def check_idle(conn) -> None:
    """The pool's check of a connection it hands out, without a round trip: an idle connection
    whose socket is readable got something unasked — the server's goodbye (shutdown, restart,
    terminated backend) or EOF — and only then is it pinged (and dropped if dead)."""
    if conn.closed or conn.broken:
        raise psycopg_module().OperationalError("the connection is closed")
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
        self.conn: psycopg.Connection[Any] | None = None
        self._r = self._w = -1  # (the poke's pipe)
        self._handed = False
        if agent_id is not None:
            self._handoff = HANDED_PREFIX + agent_id
        self._connect()  # (first: a failed one leaves nothing open behind it)
        try:
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)
        except OSError:
            self.close()
            raise

    def _connect(self) -> None:
        self.conn = None
        self.conn = listen_connection(self.store.url, (
            self.store.channel_events if self.agent_id is None else self.store.channel_wake,))

    def _relevant(self, payload: str) -> bool:
        if self.agent_id is None or payload in (WAKE_ALL, self.agent_id):
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
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._r = self._w = -1
