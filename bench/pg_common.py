"""PostgreSQL helpers of ``bench/postgres.py``: scratch schemas and databases, a shared
timestamp board, and the procrastinate peer (its app, tasks and worker process).

Run as a script it is one procrastinate worker process::

    python bench/pg_common.py procrastinate-worker DSN BOARD NAME

Every schema and database made here is dropped again when the benchmark exits (after its
child processes are stopped), on error or Ctrl-C too.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import mmap
import os
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

ADMIN_URL = os.environ.get("PODIUM_BENCH_PG", "postgresql://root@127.0.0.1:5432/test")

# -- scratch schemas and databases -----------------------------------------------------------

_schemas: list[tuple[str, str]] = []  # (admin url, schema)
_databases: list[tuple[str, str]] = []  # (admin url, database)


def redact(url: str) -> str:
    from podium.store.pgconnect import redact as _redact

    return _redact(url)


def admin(url: str | None = None):
    import psycopg

    return psycopg.connect(url or ADMIN_URL, autocommit=True, connect_timeout=5)


def with_options(url: str, **settings: str) -> str:
    """``url`` with ``-c name=value`` server settings added to its ``options`` parameter."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    opts = [query.get("options", "")] if query.get("options") else []
    opts += [f"-c{k}={v}" for k, v in settings.items()]
    query["options"] = " ".join(opts)
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def with_params(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def with_database(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def fresh_schema(prefix: str, **settings: str) -> tuple[str, str]:
    """A new empty schema; returns (name, URL whose search_path is that schema)."""
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    _schemas.append((ADMIN_URL, name))
    url = with_params(ADMIN_URL, application_name=name)
    return name, with_options(url, search_path=name, **settings)


def _admin_execute(sql: str, tries: int = 10) -> None:
    """Run one admin statement; the server may be restarting (shared machine): retry ~20 s."""
    for i in range(tries):
        try:
            with admin() as conn:
                conn.execute(sql)
            return
        except Exception as e:
            if i == tries - 1 or "connect" not in str(e).lower() and "shutting" not in str(e):
                print(f"(could not run {sql!r}: {str(e).strip()[:200]})", file=sys.stderr)
                return
            time.sleep(2)


def drop_schema(name: str) -> None:
    _admin_execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    with contextlib.suppress(ValueError):
        _schemas.remove((ADMIN_URL, name))


def fresh_database(prefix: str, **settings: str) -> tuple[str, str]:
    """A new empty database; returns (name, URL of it)."""
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    _databases.append((ADMIN_URL, name))
    url = with_params(with_database(ADMIN_URL, name), application_name=name)
    return name, with_options(url, **settings) if settings else url


def drop_database(name: str) -> None:
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    with contextlib.suppress(ValueError):
        _databases.remove((ADMIN_URL, name))


def cleanup(stop_children=None) -> None:
    """Stop children first (they hold connections), then drop what is left."""
    if stop_children is not None:
        with contextlib.suppress(Exception):
            stop_children()
    for _, name in list(_schemas):
        drop_schema(name)
    for _, name in list(_databases):
        drop_database(name)


def register_cleanup(stop_children) -> None:
    atexit.register(cleanup, stop_children)


def backend_pids(app_name: str) -> list[int]:
    """Server processes of the connections that name themselves ``app_name``."""
    with admin() as conn:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name,))]


class CpuMeter:
    """CPU time of some client processes plus their PostgreSQL backends (found by application
    name), from /proc: exact on this machine whatever else runs on it."""

    def __init__(self, client_pids: list[int], app_name: str | None):
        from _common import run_ns

        self._run_ns = run_ns
        self.clients, self.app = client_pids, app_name
        self.start = {p: run_ns(p) for p in self._pids()}

    def _pids(self) -> list[int]:
        return self.clients + (backend_pids(self.app) if self.app else [])

    def seconds(self) -> tuple[float, float]:
        """(client CPU s, backend CPU s) since the start; call before the processes end."""
        c = b = 0
        for p in self._pids():
            d = self._run_ns(p) - self.start.get(p, 0)
            if p in self.clients:
                c += d
            else:
                b += d
        return c / 1e9, b / 1e9


def server_info() -> dict:
    with admin() as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'), "
            "current_setting('fsync'), current_setting('wal_sync_method'), "
            "current_setting('commit_delay')").fetchone()
    return {"version": row[0], "synchronous_commit": row[1], "fsync": row[2],
            "wal_sync_method": row[3], "commit_delay": row[4]}


def commit_floor(n: int = 40) -> dict:
    """Latency of a tiny durable write transaction (one row, COMMIT) on this server: the
    WAL flush every durable commit waits for. p50/max in ms, one client."""
    name, url = fresh_schema("fsync")
    try:
        with admin(url) as conn:
            conn.autocommit = False
            conn.execute("CREATE TABLE t (v DOUBLE PRECISION)")
            conn.commit()
            out = []
            for _ in range(n):
                t = time.perf_counter()
                conn.execute("INSERT INTO t VALUES (1)")
                conn.commit()
                out.append((time.perf_counter() - t) * 1000)
    finally:
        drop_schema(name)
    out.sort()
    return {"p50": out[len(out) // 2], "max": out[-1]}


# -- a board of shared timestamps (one double per task), mmap'd by every process -----------


class Board:
    def __init__(self, path: Path, n: int = 0, create: bool = False):
        if create:
            with open(path, "wb") as f:
                f.truncate(8 * max(n, 1))
        self.fd = os.open(path, os.O_RDWR)
        self.mm = mmap.mmap(self.fd, os.fstat(self.fd).st_size)
        self.arr = (ctypes.c_double * (len(self.mm) // 8)).from_buffer(self.mm)

    def get(self, i: int) -> float:
        return self.arr[i]

    def set(self, i: int, t: float) -> None:
        self.arr[i] = t

    def close(self) -> None:
        del self.arr
        self.mm.close()
        os.close(self.fd)


BOARD: Board | None = None

# -- procrastinate --------------------------------------------------------------------------


def make_procrastinate_app(dsn: str):
    """The peer's app with the benchmark's two tasks, named explicitly so the process that
    defers and the worker processes agree whatever this module is called in each."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="bench_record")
    async def record(i: int) -> None:
        # The task body starts: that is the moment the benchmark calls "started".
        BOARD.set(i, time.time())

    @app.task(name="bench_noop")
    async def noop() -> None:
        return None

    app.bench_record, app.bench_noop = record, noop  # type: ignore[attr-defined]
    return app


def procrastinate_worker_argv(dsn: str, board: Path, name: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "procrastinate-worker", dsn,
            str(board), name]


def _procrastinate_worker(dsn: str, board: str, name: str) -> None:
    global BOARD
    import logging

    logging.basicConfig(level=logging.WARNING)
    BOARD = Board(Path(board))
    app = make_procrastinate_app(dsn)
    # Defaults throughout: concurrency 1, LISTEN/NOTIFY on, 5 s fallback polling.
    app.run_worker(name=name)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "procrastinate-worker":
        _procrastinate_worker(*sys.argv[2:])
    else:
        sys.exit("usage: pg_common.py procrastinate-worker DSN BOARD NAME")
