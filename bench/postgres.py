#!/usr/bin/env python3
"""Podium on PostgreSQL vs Podium on SQLite vs procrastinate (a PostgreSQL task queue), one run.

Dispatch latency: one idle worker process already running (Podium: ``podium agent run
--backend echo``, asleep on LISTEN (PostgreSQL) or its wake-up socket (SQLite); procrastinate:
a worker with default settings — concurrency 1, LISTEN/NOTIFY, async no-op task). Tasks are
added one at a time through each system's normal API, a random 0.5-1.5x ``--gap-ms`` apart.
  * Podium "started": the task's ``started_at`` (stamped by the worker's claim) minus the time
    just before ``add_task``; "echo done": ``completed_at`` minus the same.
  * procrastinate "started": the task body writes ``time.time()`` to shared memory; minus the
    time just before ``defer``.
  * "after commit": the same end point minus the time ``add_task`` / ``defer`` returned, i.e.
    without the enqueueing transaction's own durable commit.
Throughput: ``--workers`` worker processes up and idle, then ``--tasks`` no-op tasks enqueued
in ONE transaction (``add_tasks`` / ``batch_defer``); timed until every task has completed.
drain = N / (last completion - first start); end-to-end = N / (last completion - just before
the enqueue). Times come from the stores (Podium ``started_at``/``completed_at``;
procrastinate's ``procrastinate_events``), all on this machine's clock.
Durability: PostgreSQL with the server's ``synchronous_commit`` (default ``on``: every commit
waits for its WAL flush); SQLite with ``synchronous=NORMAL`` in WAL mode (no fsync per commit:
survives a process crash, may lose the last commits on power loss — the PostgreSQL level closest
to that is ``synchronous_commit=off``, shown as an extra line with ``--extra``).

Each system gets a fresh schema (Podium) or database (procrastinate) on ``PODIUM_BENCH_PG``
(default postgresql://root@127.0.0.1:5432/test), dropped afterwards.

    .venv/bin/python bench/postgres.py [--n 300] [--gap-ms 15] [--tasks 10000] [--workers 4]
        [--repeat 2] [--extra] [--only dispatch|throughput] [--systems pg,sqlite,procrastinate]

Needs procrastinate (``pip install procrastinate``) besides psycopg. About 2.5 minutes on 2 cores.
The exit status is 1 when a target for Podium on PostgreSQL is missed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import pg_common as PG  # noqa: E402

WARMUP = 10
TARGET_P50_MS, TARGET_P99_MS, TARGET_TPS = 2.0, 5.0, 3000.0

PG.register_cleanup(lambda: C.stop(list(C._children), timeout=5.0))


def _gaps(n: int, gap_ms: float, seed: int) -> list[float]:
    rnd = random.Random(seed)
    return [gap_ms / 1000.0 * rnd.uniform(0.5, 1.5) for _ in range(n)]


class Stalled(RuntimeError):
    pass


def _wait(done, n: int, procs, timeout: float, what: str, log: Path | None = None,
          stall_s: float = 6.0) -> None:
    """Until ``done()`` reaches n; Stalled when it stops moving for ``stall_s`` seconds."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while (k := done()) < n:
        for p in procs:
            if p.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"{what}: process {p.pid} exited with {p.returncode}\n{tail}")
        if k != last:
            last, moved = k, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise Stalled(f"{what}: stuck at {k} of {n} tasks for {stall_s:g}s")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: only {k} of {n} tasks done after {timeout}s")
        time.sleep(0.05)


# -- Podium (PostgreSQL or SQLite) ------------------------------------------------------------


class PodiumTarget:
    def __init__(self, kind: str, settings: dict[str, str] | None = None):
        self.kind = kind  # "pg" or "sqlite"
        self.settings = settings or {}
        self.schema = None
        self.db = None

    def __enter__(self) -> str:
        self.app_name = None
        if self.kind == "pg":
            self.schema, self.url = PG.fresh_schema("podium", **self.settings)
            self.app_name = self.schema
        else:
            self.db = C.tempdir("pg-vs-sqlite") / "podium.db"
            self.url = C.podium_url(self.db, self.settings.get("synchronous", "NORMAL"))
        return self.url

    def __exit__(self, *exc) -> None:
        if self.schema:
            PG.drop_schema(self.schema)
        if self.db:
            C.remove_wake_dir(self.db)


def podium_dispatch(kind: str, settings: dict, n: int, gap_ms: float, seed: int) -> dict:
    from podium.service import Podium

    log = C.tempdir("pg-dispatch") / "worker.log"
    with PodiumTarget(kind, settings) as url:
        p = Podium.open(url)
        worker = None
        try:
            worker = C.podium_worker(url, "w1", "echo", log=log)
            C.wait_agents_idle(p.store, ["w1"], [worker], log=log)
            gaps = _gaps(n + WARMUP, gap_ms, seed)
            sent = []
            for i in range(n + WARMUP):
                time.sleep(gaps[i])
                t0 = time.time()
                task = p.add_task("x")
                t1 = time.time()
                if i >= WARMUP:
                    sent.append((task.id, t0, t1))
            _wait(lambda: p.store.counts()["completed"], n + WARMUP, [worker], 60,
                  f"podium {kind} dispatch", log)
            out = {"started": [], "after_commit": [], "done": [], "add": []}
            for tid, t0, t1 in sent:
                t = p.task(tid)
                out["started"].append(t.started_at - t0)
                out["after_commit"].append(t.started_at - t1)
                out["done"].append(t.completed_at - t0)
                out["add"].append(t1 - t0)
            return out
        finally:
            C.stop([worker])
            p.close()


def podium_throughput(kind: str, settings: dict, n: int, workers: int, timeout: float) -> dict:
    from podium.service import Podium

    log = C.tempdir("pg-throughput") / "workers.log"
    target = PodiumTarget(kind, settings)
    with target as url:
        p = Podium.open(url)
        procs = []
        try:
            names = [f"w{i + 1}" for i in range(workers)]
            procs = [C.podium_worker(url, name, "echo", log=log) for name in names]
            C.wait_agents_idle(p.store, names, procs, log=log)
            specs = [p.spec("x") for _ in range(n)]
            host = C.HostLoad()
            t0 = time.time()
            p.add_tasks(specs)
            t_added = time.time()
            cpu = PG.CpuMeter([q.pid for q in procs], target.app_name)
            _wait(lambda: p.store.counts()["completed"], n, procs, timeout,
                  f"podium {kind} throughput", log)
            cpu_c, cpu_b = cpu.seconds()
            host_cores = host.cores()
            with p.store._reader() as tx:
                row = tx.one("SELECT MIN(started_at) AS first, MAX(completed_at) AS last "
                             "FROM tasks")
                per = tx.all("SELECT agent_id, COUNT(*) AS n FROM tasks GROUP BY agent_id")
            first, last = row["first"], row["last"]
            return {"drain": n / (last - first), "e2e": n / (last - t0),
                    "enqueue_s": t_added - t0, "drain_s": last - first,
                    "spread": sorted(r["n"] for r in per), "host": host_cores,
                    "cpu_ms": (cpu_c + cpu_b) / n * 1000, "cpu_client_ms": cpu_c / n * 1000,
                    "cpu_server_ms": cpu_b / n * 1000 if kind == "pg" else float("nan")}
        finally:
            C.stop(procs)
            p.close()


# -- procrastinate ------------------------------------------------------------------------------


class ProcrastinateTarget:
    def __init__(self, settings: dict[str, str] | None = None):
        self.settings = settings or {}

    def __enter__(self):
        self.name, self.dsn = PG.fresh_database("procrastinate", **self.settings)
        self.app = PG.make_procrastinate_app(self.dsn)
        self.app.open()
        self.app.schema_manager.apply_schema()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.app.close()
        finally:
            PG.drop_database(self.name)

    def query(self, sql: str):
        with PG.admin(self.dsn) as conn:
            return conn.execute(sql).fetchall()


def procrastinate_dispatch(settings: dict, n: int, gap_ms: float, seed: int) -> dict:
    tmp = C.tempdir("pg-dispatch-procrastinate")
    board_path, log = tmp / "board", tmp / "worker.log"
    board = PG.Board(board_path, n + WARMUP, create=True)
    worker = None
    try:
        with ProcrastinateTarget(settings) as T:
            try:
                worker = C.spawn(PG.procrastinate_worker_argv(T.dsn, board_path, "w1"), log=log)
                # Ready when its first job ran (the first warm-up task, waited for alone).
                T.app.bench_record.defer(i=0)
                _wait(lambda: int(board.get(0) > 0), 1, [worker], 60, "procrastinate start", log)
                gaps = _gaps(n + WARMUP, gap_ms, seed)
                sent = []
                for i in range(1, n + WARMUP):
                    time.sleep(gaps[i])
                    t0 = time.time()
                    T.app.bench_record.defer(i=i)
                    t1 = time.time()
                    if i >= WARMUP:
                        sent.append((i, t0, t1))
                _wait(lambda: sum(board.get(i) > 0 for i, _, _ in sent), len(sent), [worker], 60,
                      "procrastinate dispatch", log)
                return {"started": [board.get(i) - t0 for i, t0, _ in sent],
                        "after_commit": [board.get(i) - t1 for i, _, t1 in sent],
                        "add": [t1 - t0 for _, t0, t1 in sent]}
            finally:
                C.stop([worker])
    finally:
        board.close()


def procrastinate_throughput(settings: dict, n: int, workers: int, timeout: float) -> dict:
    tmp = C.tempdir("pg-throughput-procrastinate")
    board_path, log = tmp / "board", tmp / "workers.log"
    board = PG.Board(board_path, 1, create=True)
    procs = []
    try:
        with ProcrastinateTarget(settings) as T:
            try:
                procs = [C.spawn(PG.procrastinate_worker_argv(T.dsn, board_path, f"w{i + 1}"),
                                 log=log) for i in range(workers)]
                _wait(lambda: T.query("SELECT COUNT(*) FROM procrastinate_workers")[0][0],
                      workers, procs, 60, "procrastinate workers start", log)
                host = C.HostLoad()
                t0 = time.time()
                T.app.bench_noop.batch_defer(*[{} for _ in range(n)])
                t_added = time.time()
                cpu = PG.CpuMeter([q.pid for q in procs], T.name)
                _wait(lambda: T.query("SELECT COUNT(*) FROM procrastinate_jobs "
                                      "WHERE status = 'succeeded'")[0][0],
                      n, procs, timeout, "procrastinate throughput", log)
                cpu_c, cpu_b = cpu.seconds()
                host_cores = host.cores()
                first, last = T.query(
                    "SELECT EXTRACT(EPOCH FROM MIN(at) FILTER (WHERE type = 'started')), "
                    "EXTRACT(EPOCH FROM MAX(at) FILTER (WHERE type = 'succeeded')) "
                    "FROM procrastinate_events")[0]
                first, last = float(first), float(last)
                per = T.query("SELECT COUNT(*) FROM procrastinate_jobs GROUP BY worker_id")
                return {"drain": n / (last - first), "e2e": n / (last - t0),
                        "enqueue_s": t_added - t0, "drain_s": last - first,
                        "spread": sorted(r[0] for r in per), "host": host_cores,
                        "cpu_ms": (cpu_c + cpu_b) / n * 1000, "cpu_client_ms": cpu_c / n * 1000,
                        "cpu_server_ms": cpu_b / n * 1000}
            finally:
                C.stop(procs)
    finally:
        board.close()


def _server_back(timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            PG.admin().close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _run(what: str, fn, *args, **kw):
    """One measurement; run again once if the PostgreSQL server went away meanwhile (this
    machine may be shared with tests that restart it), saying so."""
    import psycopg

    from podium.errors import StoreError

    for attempt in (1, 2):
        try:
            return fn(*args, **kw)
        except (psycopg.OperationalError, StoreError, RuntimeError) as e:
            text = str(e).lower()
            lost = isinstance(e, psycopg.OperationalError) or any(
                w in text for w in ("shutting down", "terminat", "cannot reach", "refused",
                                    "administrator", "server closed"))
            if attempt == 2 or not lost or isinstance(e, Stalled):
                raise
            print(f"  ({what}: the PostgreSQL server went away ({str(e).strip()[:120]}); "
                  "waiting for it and measuring again)", flush=True)
            C.stop(list(C._children), timeout=5.0)
            _server_back()


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="measured dispatches per system")
    ap.add_argument("--gap-ms", type=float, default=15.0, help="mean gap between adds")
    ap.add_argument("--tasks", type=int, default=10000, help="throughput: tasks per system")
    ap.add_argument("--workers", type=int, default=4, help="throughput: worker processes")
    ap.add_argument("--repeat", type=int, default=2, help="throughput: runs per system")
    ap.add_argument("--only", choices=["dispatch", "throughput"], help="run one part only")
    ap.add_argument("--systems", default="pg,sqlite,procrastinate",
                    help="comma list of pg, sqlite, procrastinate, pg-async")
    ap.add_argument("--extra", action="store_true",
                    help="also Podium on PostgreSQL with synchronous_commit=off")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in ("pg", "sqlite", "procrastinate", "pg-async"):
            ap.error(f"unknown system {s!r} (pg, sqlite, procrastinate, pg-async)")
    if args.extra and "pg-async" not in systems:
        systems.insert(1, "pg-async")

    info = PG.server_info()
    busy = C.others_busy(1.0)
    floor = PG.commit_floor()
    print(f"machine: {C.machine()}; busy before start (other tenants): {busy:.2f} cores")
    print(f"PostgreSQL {info['version']} at {PG.redact(PG.ADMIN_URL)}: synchronous_commit="
          f"{info['synchronous_commit']}, fsync={info['fsync']}, wal_sync_method="
          f"{info['wal_sync_method']}, commit_delay={info['commit_delay']}")
    print(f"  a one-row durable INSERT+COMMIT here takes p50 {floor['p50']:.2f} ms "
          f"(max {floor['max']:.2f}): the floor of any durable enqueue")
    print("durability: Podium PG and procrastinate with synchronous_commit=on (WAL flushed at "
          "every commit); Podium SQLite with synchronous=NORMAL (WAL mode, no fsync per commit)"
          + ("; 'podium pg async' with synchronous_commit=off" if "pg-async" in systems else ""))

    label = {"pg": "podium postgresql", "pg-async": "podium pg sync_commit=off",
             "sqlite": "podium sqlite NORMAL", "procrastinate": "procrastinate"}
    pg_settings = {"pg": {}, "pg-async": {"synchronous_commit": "off"}}
    t_start = time.monotonic()
    disp: dict[str, dict] = {}
    thr: dict[str, dict] = {}

    if args.only in (None, "dispatch"):
        print(f"\n== dispatch latency: idle worker, task added -> started; n={args.n} "
              f"(+{WARMUP} warm-up), gap {args.gap_ms:g} ms (0.5-1.5x)", flush=True)
        for s in systems:
            if s in pg_settings:
                disp[s] = _run(s, podium_dispatch, "pg", pg_settings[s], args.n, args.gap_ms,
                                   args.seed)
            elif s == "sqlite":
                disp[s] = _run(s, podium_dispatch, "sqlite", {"synchronous": "NORMAL"}, args.n,
                               args.gap_ms, args.seed)
            elif s == "procrastinate":
                disp[s] = _run(s, procrastinate_dispatch, {}, args.n, args.gap_ms, args.seed)
        rows = []
        for s in systems:
            d = disp[s]
            for key, what in (("started", "started (from before add)"),
                              ("after_commit", "started (from add returned)"),
                              ("done", "echo done (from before add)"),
                              ("add", "add call itself")):
                if key not in d:
                    continue
                m = C.summary_ms(d[key])
                rows.append([f"{label[s]}: {what}", C.fmt_ms(m["p50"]), C.fmt_ms(m["p90"]),
                             C.fmt_ms(m["p99"]), C.fmt_ms(m["max"])])
        print(C.table(rows, ["system: measure", "p50 ms", "p90 ms", "p99 ms", "max ms"]))

    if args.only in (None, "throughput"):
        print(f"\n== throughput: {args.tasks} no-op tasks, {args.workers} worker processes, "
              f"enqueued in one transaction; {args.repeat} run(s) each, median shown", flush=True)
        timeout = 150.0
        runs: dict[str, list[dict]] = {s: [] for s in systems}
        for _ in range(args.repeat):  # systems alternate, so a noisy spell hits all of them
            for s in systems:
                if s in pg_settings:
                    r = _run(s, podium_throughput, "pg", pg_settings[s], args.tasks,
                             args.workers, timeout)
                elif s == "sqlite":
                    r = podium_throughput("sqlite", {"synchronous": "NORMAL"}, args.tasks,
                                          args.workers, timeout)
                else:
                    r = _run(s, procrastinate_throughput, {}, args.tasks, args.workers, timeout)
                runs[s].append(r)
        for s in systems:  # the median run by drain rate (the lower one of an even count)
            ordered = sorted(runs[s], key=lambda r: r["drain"])
            thr[s] = {**ordered[(len(ordered) - 1) // 2],
                      "all": [round(r["drain"]) for r in runs[s]]}
        rows = [[label[s], f"{thr[s]['drain']:.0f}", "/".join(str(x) for x in thr[s]["all"]),
                 f"{thr[s]['e2e']:.0f}",
                 f"{thr[s]['enqueue_s']:.2f}", f"{thr[s]['drain_s']:.2f}",
                 f"{thr[s]['cpu_ms']:.3f}", f"{thr[s]['cpu_client_ms']:.3f}",
                 C.fmt_ms(thr[s]["cpu_server_ms"]), f"{thr[s]['host']:.2f}",
                 "/".join(str(x) for x in thr[s]["spread"])] for s in systems]
        print(C.table(rows, ["system", "drain tasks/s", "each run", "end-to-end tasks/s",
                             "enqueue s",
                             "drain s", "CPU ms/task", "workers", "pg backends",
                             "host cores busy", "tasks per worker"]))
        print("  CPU ms/task = CPU of the worker processes + their PostgreSQL backends during "
              "the drain, per task (2 cores => ceiling ~ 2000 / that, tasks/s); host cores busy "
              "= whole machine, other tenants included")

    print("\n== ratios (>1 = Podium PostgreSQL better)")
    ok = True
    if disp:
        pgd = {k: C.summary_ms(v) for k, v in disp.get("pg", {}).items()}
        for other in ("procrastinate", "sqlite", "pg-async"):
            if other in disp and pgd:
                o = {k: C.summary_ms(v) for k, v in disp[other].items()}
                for key in ("started", "after_commit"):
                    print(f"  dispatch {key:12s} {label[other]} / podium pg: "
                          f"p50 {C.ratio(o[key]['p50'], pgd[key]['p50'])}, "
                          f"p99 {C.ratio(o[key]['p99'], pgd[key]['p99'])}")
    if thr and "pg" in thr:
        for other in ("procrastinate", "sqlite", "pg-async"):
            if other in thr:
                print(f"  throughput (drain) podium pg / {label[other]}: "
                      f"{C.ratio(thr['pg']['drain'], thr[other]['drain'])}")
    print("\n== targets for Podium on PostgreSQL (durable)")
    if "pg" in disp:
        m = C.summary_ms(disp["pg"]["started"])
        a = C.summary_ms(disp["pg"]["after_commit"])
        d_ok = m["p50"] <= TARGET_P50_MS and m["p99"] <= TARGET_P99_MS
        a_ok = a["p50"] <= TARGET_P50_MS and a["p99"] <= TARGET_P99_MS
        ok = ok and d_ok
        print(f"  dispatch p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms, "
              "from before add: "
              f"{'PASS' if d_ok else 'FAIL'} (p50 {m['p50']:.2f}, p99 {m['p99']:.2f}); "
              f"from add returned: {'PASS' if a_ok else 'FAIL'} "
              f"(p50 {a['p50']:.2f}, p99 {a['p99']:.2f})")
    if "pg" in thr:
        t_ok = thr["pg"]["drain"] >= TARGET_TPS
        ok = ok and t_ok
        print(f"  throughput >= {TARGET_TPS:g} tasks/s with {args.workers} workers: "
              f"{'PASS' if t_ok else 'FAIL'} ({thr['pg']['drain']:.0f} drain, "
              f"{thr['pg']['e2e']:.0f} end-to-end)")
    floor2 = PG.commit_floor()
    print(f"\ndurable one-row commit at the end: p50 {floor2['p50']:.2f} ms (max "
          f"{floor2['max']:.2f}; at the start p50 {floor['p50']:.2f}): the disk's flush time "
          "varies a lot on this machine, and bounds every durable number above")
    print(f"total time {time.monotonic() - t_start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        PG.cleanup(lambda: C.stop(list(C._children), timeout=5.0))
