#!/usr/bin/env python3
"""History: does a store holding a long past cost more to use than an empty one?

Two stores per system (SQLite; PostgreSQL with ``--systems sqlite,pg``, each on a fresh schema
of ``PODIUM_BENCH_PG``), measured side by side, each sample on one then the other (alternating,
so that the machine's other load weighs on both alike): an empty one, and one filled by bulk
SQL (not through the service: minutes, not hours) with N finished tasks (``--n``, default
1,000,000: completed, failed and cancelled, finished over the last 60 days, each with a small
output) and ``--events`` per task (default 10) events. The operations, as the faces call them:
  * add: ``Podium.add_task`` (no worker takes hand-offs: the task is queued);
  * claim: ``store.claim`` with the previous claim's result, as a worker records and claims;
  * task list: ``Podium.tasks()``, the default page;
  * status: ``Podium.status()``;
  * dashboard: what the dashboard reads when it opens: an event follower from now, the agents
    and the newest 200 tasks, and its first poll;
  * watch: ``podium watch``'s first page: a follower from now and its first read, and a page
    of the last 1000 events (``watch --from``).
"Empty" holds no history but a page's worth of recent tasks (250, and their events), so that
every listing reads as many rows on both stores. Printed: median and p99 (nearest rank) per
operation on each store, and full / empty. Target: full / empty <= 1.5 (medians).

    .venv/bin/python bench/history.py [--n 1000000] [--events 10] [--samples 200] [--systems sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 1.5
DAY = 86400.0
#: Recent finished tasks in both stores (a full first page of every listing).
RECENT = 250
OPS = ["add", "claim", "task list", "status", "dashboard", "watch"]


# -- filling ----------------------------------------------------------------------------------

def _states_sql(mod: str) -> str:
    """The state of filled task number ``i``: mostly completed, some failed and cancelled."""
    return (f"CASE WHEN i {mod} 10 = 0 THEN 'failed' WHEN i {mod} 10 = 1 THEN 'cancelled' "
            "ELSE 'completed' END")


def fill_sqlite(db: Path, n: int, per_task: int, first: int, t0: float, t1: float) -> None:
    """Tasks ``first + 1`` to ``first + n``, finished from ``t0`` to ``t1`` in id order (as a
    store that ran that long would hold them), and their events."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=60)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN IMMEDIATE")
    step, estep = (t1 - t0) / n, (t1 - t0) / (n * per_task)
    conn.execute(
        "WITH RECURSIVE r(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM r WHERE i < ?) "
        "INSERT INTO tasks (id, prompt, priority, state, attempts, max_attempts, "
        "retry_on_failure, created_at, agent_id, started_at, completed_at, output, exit_code) "
        f"SELECT printf('t-h%013d', i), 'echo history', 1, {_states_sql('%')}, 1, 3, 0, "
        "? + (i - ?) * ?, 'bench', ? + (i - ?) * ?, ? + (i - ?) * ?, CAST('ok' AS BLOB), 0 "
        "FROM r", (first + 1, first + n, t0, first, step, t0, first, step, t0, first, step))
    conn.execute(
        "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < ?) "
        "INSERT INTO events (ts, kind, agent_id, task_id, data) "
        "SELECT ? + i * ?, 'task.output', 'bench', printf('t-h%013d', ? + i / ? + 1), '{}' "
        "FROM r", (n * per_task - 1, t0, estep, first, per_task))
    _recount(conn)
    conn.execute("COMMIT")
    conn.close()


def fill_pg(url: str, n: int, per_task: int, first: int, t0: float, t1: float) -> None:
    import psycopg

    step, estep = (t1 - t0) / n, (t1 - t0) / (n * per_task)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(
                "INSERT INTO tasks (id, prompt, priority, state, attempts, max_attempts, "
                "retry_on_failure, created_at, agent_id, started_at, completed_at, output, "
                "exit_code) "
                "SELECT 't-h' || lpad(i::text, 13, '0'), 'echo history', 1, "
                f"{_states_sql('%%')}, 1, 3, 0, %s + (i - %s) * %s, 'bench', "
                "%s + (i - %s) * %s, %s + (i - %s) * %s, 'ok'::bytea, 0 "
                "FROM generate_series(%s::bigint, %s::bigint) AS i",
                (t0, first, step, t0, first, step, t0, first, step, first + 1, first + n))
            conn.execute(
                "INSERT INTO events (ts, kind, agent_id, task_id, data) "
                "SELECT %s + i * %s, 'task.output', 'bench', "
                "'t-h' || lpad((%s + i / %s + 1)::text, 13, '0'), '{}' "
                "FROM generate_series(0, %s::bigint) AS i",
                (t0, estep, first, per_task, n * per_task - 1))
            _recount(conn)
        # Autovacuum's steady state (statistics, visibility map), without waiting for it.
        for table in ("tasks", "events"):
            conn.execute(f"VACUUM ANALYZE {table}")


def _recount(conn) -> None:
    """The finished tasks' counters (migration m008), where the store has them."""
    with contextlib.suppress(Exception):
        conn.execute("SAVEPOINT recount")
        try:
            conn.execute("UPDATE task_counts SET n = "
                         "(SELECT COUNT(*) FROM tasks WHERE tasks.state = task_counts.state)")
        except Exception:
            conn.execute("ROLLBACK TO SAVEPOINT recount")
            raise
        conn.execute("RELEASE SAVEPOINT recount")


# -- measuring --------------------------------------------------------------------------------

class Ops:
    """The operations measured, over one service and one registered agent."""

    def __init__(self, p, agent: str):
        from podium.models import Outcome, TaskState
        from podium.store import Finish

        self.p = p
        self.Finish, self.Outcome, self.COMPLETED = Finish, Outcome, TaskState.COMPLETED
        self.agent = agent
        p.store.register_agent(agent, [], "echo", socket.gethostname(), None, 600.0, {})
        self.held = None

    def add(self) -> None:
        self.p.add_task("echo x")

    def claim(self) -> None:
        finish = None
        if self.held is not None:
            finish = self.Finish(self.held.id, self.held.attempts,
                                 self.Outcome(self.COMPLETED, output=b"x"))
        self.held = self.p.store.claim(self.agent, [], 600.0, finish)

    def task_list(self) -> None:
        self.p.tasks()

    def status(self) -> None:
        self.p.status()

    def dashboard(self) -> None:
        with self.p.follower() as events:
            self.p.agents()
            self.p.tasks(limit=200)
            events.poll(0)

    def watch(self) -> None:
        with self.p.follower() as events:
            events.poll(0)
        last = self.p.store.last_event_id()
        self.p.events(after=max(0, last - 1000), limit=1000)

    def steps(self) -> list:
        return [self.add, self.claim, self.task_list, self.status, self.dashboard, self.watch]


def measure(empty: Ops, full: Ops, samples: int) -> dict[str, dict[str, list[float]]]:
    """Every operation on both stores, interleaved (empty first, then full first, in turn),
    so that the machine's other load weighs on both alike."""
    out: dict[str, dict[str, list[float]]] = {"empty": {op: [] for op in OPS},
                                              "full": {op: [] for op in OPS}}
    pairs = [("empty", empty), ("full", full)]
    for ops in (empty, full):  # warm-up
        for fn in ops.steps():
            fn()
    for i in range(samples):
        for k, op in enumerate(OPS):
            for which, ops in (pairs if i % 2 == 0 else pairs[::-1]):
                fn = ops.steps()[k]
                t0 = time.perf_counter()
                fn()
                out[which][op].append(time.perf_counter() - t0)
    return out


def run_system(system: str, n: int, per_task: int, samples: int, sync: str) -> dict:
    from podium.service import Podium

    urls, fills = [], []
    for which in ("empty", "full"):
        if system == "sqlite":
            db = C.tempdir(f"history-{which}") / "podium.db"
            urls.append(C.podium_url(db, sync))
            fills.append(lambda *a, db=db: fill_sqlite(db, *a))
        else:
            import pg_common as PG

            PG.register_cleanup(None)
            _, url = PG.fresh_schema(f"history_{which}")
            urls.append(url)
            fills.append(lambda *a, url=url: fill_pg(url, *a))
    stores = [Podium.open(url) for url in urls]
    try:
        # "Empty": no history, but a page's worth of recent tasks and events, so that every
        # listing and page reads as many rows on both stores: only the history differs.
        t = time.time()
        for fill in fills:
            fill(RECENT, per_task, 0, t - 3600, t)
        t0 = time.monotonic()
        fills[1](n, per_task, RECENT, t - 60 * DAY, t - 3600)
        filled_s = time.monotonic() - t0
        if system == "pg":
            _checkpoint(urls[1])
        size = None
        if system == "sqlite":
            size = Path(stores[1].store.url.removeprefix("sqlite://")).stat().st_size
        for p in stores:
            p.close()
        stores = [Podium.open(url) for url in urls]  # (fresh connections, as a new command's)
        r = measure(Ops(stores[0], "bench-empty"), Ops(stores[1], "bench-full"), samples)
        return {**r, "fill_s": filled_s, "size": size, "counts": stores[1].store.counts()}
    finally:
        for p in stores:
            p.close()
            if system == "sqlite":
                C.remove_wake_dir(Path(p.store.url.removeprefix("sqlite://")))


def _checkpoint(url: str) -> None:
    """Write out what the fill left dirty (a store that grew over weeks has had checkpoints)."""
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="finished tasks in the history")
    ap.add_argument("--events", type=int, default=10, help="events per task in the history")
    ap.add_argument("--samples", type=int, default=200, help="measurements per operation")
    ap.add_argument("--systems", default="sqlite", help="sqlite and/or pg, comma-separated")
    ap.add_argument("--sync", default="NORMAL", help="SQLite synchronous level")
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in ("sqlite", "pg"):
            ap.error(f"unknown system {s!r}: expected sqlite or pg")
    if args.n < 1 or args.events < 1 or args.samples < 1:
        ap.error("--n, --events and --samples must be at least 1")
    print(f"history: {args.n:,} finished tasks and {args.n * args.events:,} events vs an "
          f"empty store; {args.samples} samples per operation; {C.machine()}; other load "
          f"before start: {C.others_busy():.2f} cores busy")
    all_ok = True
    for system in systems:
        title = (f"SQLite, synchronous={args.sync}" if system == "sqlite" else
                 "PostgreSQL (a fresh schema)")
        with C.section(title):
            load = C.HostLoad()
            r = run_system(system, args.n, args.events, args.samples, args.sync)
            rows = []
            for op in OPS:
                e, f = C.summary_ms(r["empty"][op]), C.summary_ms(r["full"][op])
                ok = f["p50"] <= TARGET * e["p50"]
                all_ok = all_ok and ok
                rows.append([op, C.fmt_ms(e["p50"]), C.fmt_ms(e["p99"]), C.fmt_ms(f["p50"]),
                             C.fmt_ms(f["p99"]), C.ratio(f["p50"], e["p50"]),
                             C.ratio(f["p99"], e["p99"]), "PASS" if ok else "FAIL"])
            print(C.table(rows, ["operation", "empty p50 ms", "empty p99 ms", "full p50 ms",
                                 "full p99 ms", "full/empty p50", "full/empty p99",
                                 f"p50 <= {TARGET:g}x"]))
            size = f", file {r['size'] / 2**20:.0f} MiB" if r["size"] else ""
            print(f"(filled in {r['fill_s']:.1f} s{size}; tasks by state afterwards: "
                  f"{r['counts']}; machine busy during section: {load.cores():.2f} cores)")
    return C.verdict(all_ok)


if __name__ == "__main__":
    os.environ.pop("PODIUM_RETENTION", None)
    sys.exit(main())
