#!/usr/bin/env python3
"""Throughput: 10,000 no-op tasks through 4 worker processes, Podium vs huey (SqliteHuey).

The same procedure for both: start the 4 workers first and wait until all are up and idle,
then enqueue all N tasks in ONE transaction, and time until every task has completed.
  * Podium: 4 ``podium agent run --backend echo`` processes; ``Podium.add_tasks`` (one
    transaction); every task records its result (output "x") in the claim-next transaction.
    Times come from the store itself: ``started_at`` / ``completed_at`` stamped by the workers.
  * huey: ``SqliteHuey`` consumer with ``workers=4, worker_type='process'``, periodic off,
    huey's default polling; the tasks are inserted in one transaction in huey's own format;
    the task returns None, so huey stores no result (less work than Podium does per task).
    Times come from huey's ``SIGNAL_EXECUTING`` / ``SIGNAL_COMPLETE`` hooks in the workers.
Reported per run: end-to-end tasks/s = N / (last completion - just before the enqueue, which
includes enqueueing and waking the workers) and drain tasks/s = N / (last completion - first
start); the worker processes' CPU per task; the spread of tasks over the workers.
Each system runs ``--repeat`` times (alternating) at each ``--sync`` level; medians are shown.

    .venv/bin/python bench/throughput.py [--tasks 10000] [--workers 4] [--repeat 3]
        [--sync NORMAL,FULL]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

STALL_S = 10.0


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read() or "?"
    except OSError:
        return "?"


def _wait(done, n: int, procs, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while (k := done()) < n:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: process {p.pid} exited with {p.returncode}")
        if k != last:
            last, last_change = k, time.monotonic()
        if time.monotonic() - last_change > STALL_S:
            where = ", ".join(f"pid {p.pid} in {_wchan(p.pid)}" for p in procs)
            raise RuntimeError(f"{what}: STALLED at {k} of {n} tasks for {STALL_S:g}s ({where})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: only {k} of {n} tasks done after {timeout}s")
        time.sleep(0.05)


#: The index proposed for the claim query (see README): lets SQLite find the next queued task
#: without sorting every queued row.
WHAT_IF_INDEX = "CREATE INDEX IF NOT EXISTS bench_whatif_queue ON tasks (state, priority, seq)"


def podium_run(sync: str, n: int, workers: int, timeout: float, patched: bool = False,
               what_if: bool = False) -> dict:
    tmp, db, url, log, p = C.podium_store("throughput", sync, "workers.log")
    procs = []
    try:
        if what_if:
            with sqlite3.connect(db) as c:
                c.execute(WHAT_IF_INDEX)
        names = [f"w{i + 1}" for i in range(workers)]
        procs = [C.podium_worker(url, name, "echo", log=log, patched=patched) for name in names]
        C.wait_agents_idle(p.store, names, procs, log=log)
        specs = [p.spec("x") for _ in range(n)]
        pids = [q.pid for q in procs]
        cpu0 = C.run_ns_of(pids)
        t0 = time.time()
        p.add_tasks(specs)
        t_added = time.time()
        ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

        def done() -> int:
            left = ro.execute("SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running')"
                              ).fetchone()[0]
            return n - left

        _wait(done, n, procs, timeout, "podium")
        cpu = (C.run_ns_of(pids) - cpu0) / 1e9
        first, last, ok = ro.execute(
            "SELECT MIN(started_at), MAX(completed_at), SUM(state = 'completed') FROM tasks"
        ).fetchone()
        per = [r[0] for r in ro.execute("SELECT COUNT(*) FROM tasks GROUP BY agent_id")]
        ro.close()
        errors = log.read_text(errors="replace").count("locked") if log.exists() else 0
        if ok != n:
            raise RuntimeError(f"podium: {ok} of {n} tasks completed")
        return {"e2e": n / (last - t0), "drain": n / (last - first), "enqueue_s": t_added - t0,
                "cpu_us": cpu / n * 1e6, "per_worker": per, "errors": errors}
    finally:
        C.stop(procs)
        p.close()
        C.remove_wake_dir(db)


def huey_run(sync: str, n: int, workers: int, timeout: float) -> dict:
    import _huey as H

    tmp = C.tempdir("throughput-huey")
    db = tmp / "huey.db"
    board_path = tmp / "board"
    board = H.Board(board_path, 0, create=True)
    log = tmp / "consumer.log"
    consumer = None
    try:
        consumer = C.spawn(H.consumer_argv(db, sync, board_path, workers, "default"), log=log)
        H.wait_ready(board, workers, consumer)
        huey = H.make_huey(db, sync)
        sigs = [huey.noop.s() for _ in range(n)]
        pids = [consumer.pid, *C.descendants(consumer.pid)]
        cpu0 = C.run_ns_of(pids)
        t0 = time.time()
        H.enqueue_bulk(huey, sigs)
        t_added = time.time()
        _wait(board.done, n, [consumer], timeout, "huey")
        cpu = (C.run_ns_of(pids) - cpu0) / 1e9
        first, last = board.first_start(), board.last_end()
        per = [w[1] for w in board.workers()]
        huey.storage.close()
        text = log.read_text(errors="replace") if log.exists() else ""
        errors = text.count("locked")
        return {"e2e": n / (last - t0), "drain": n / (last - first), "enqueue_s": t_added - t0,
                "cpu_us": cpu / n * 1e6, "per_worker": per, "errors": errors}
    finally:
        C.stop([consumer])
        board.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="runs per system at NORMAL (and OFF)")
    ap.add_argument("--full-repeat", type=int, default=1,
                    help="runs per system at FULL/EXTRA (slow: an fsync per commit)")
    ap.add_argument("--sync", default="NORMAL,FULL", help="SQLite synchronous levels to run")
    ap.add_argument("--timeout", type=float, default=120.0, help="per run")
    ap.add_argument("--what-if", dest="what_if", action="store_true",
                    help="an extra Podium run with the claim index created by hand (now part "
                         "of migration m002, so it changes nothing on a current Podium)")
    ap.add_argument("--worker", choices=["auto", "stock", "patched"], default="auto",
                    help="Podium worker: stock 'python -m podium', or bench/_worker.py with the "
                         "non-blocking poke fix; auto = patched only if the stock one deadlocks")
    args = ap.parse_args()
    patched = args.worker == "patched"
    if args.worker == "auto" and C.poke_blocks():
        patched = True
        print("NOTE: this Podium's Listener.poke blocks when the worker's own wake-up socket "
              "queue is full;\n      an echo worker then deadlocks after ~11 back-to-back tasks "
              "(see bench/README.md).\n      Podium workers below run bench/_worker.py = "
              "'podium agent run' + the proposed non-blocking poke.\n      Run with "
              "--worker stock to see the hang.")

    print(f"throughput: {args.tasks} no-op tasks, {args.workers} worker processes, "
          f"{args.repeat} runs each ({args.full_repeat} at FULL); {C.machine()}; "
          "other load before start: "
          f"{C.others_busy():.2f} cores busy")
    all_ok = True
    for sync in [s.strip().upper() for s in args.sync.split(",") if s.strip()]:
        if (args.full_repeat if sync in ("FULL", "EXTRA") else args.repeat) < 1:
            continue  # no runs asked for at this level
        with C.section(f"synchronous={sync} (both stores: PRAGMA synchronous={sync}, WAL)"):
            runs: dict[str, list[dict]] = {"podium": [], "huey": []}
            if args.what_if:
                runs["podium+index"] = []
            load = C.HostLoad()
            repeat = args.full_repeat if sync in ("FULL", "EXTRA") else args.repeat
            for r in range(repeat):
                order = list(runs) if r % 2 == 0 else list(reversed(runs))
                for system in order:
                    if system.startswith("podium"):
                        res = podium_run(sync, args.tasks, args.workers, args.timeout, patched,
                                         what_if=system == "podium+index")
                    else:
                        res = huey_run(sync, args.tasks, args.workers, args.timeout)
                    runs[system].append(res)
                    print(f"  run {r + 1} {system:<12}: end-to-end {res['e2e']:8.0f} tasks/s, "
                          f"drain {res['drain']:8.0f} tasks/s, "
                          f"enqueue {res['enqueue_s'] * 1e3:6.0f} ms, "
                          f"worker CPU {res['cpu_us']:5.0f} us/task, per worker "
                          f"{min(res['per_worker'])}-{max(res['per_worker'])}, "
                          f"'locked' errors {res['errors']}", flush=True)
            rows = []
            med = {}
            label = {"podium": "podium" + (" (patched poke)" if patched else ""), "huey": "huey",
                     "podium+index": "what-if: podium + proposed index"}
            for system, rs in runs.items():
                e2e = [x["e2e"] for x in rs]
                drain = [x["drain"] for x in rs]
                med[system] = (C.median(e2e), C.median(drain))
                rows.append([label[system], f"{C.median(e2e):.0f}",
                             f"{min(e2e):.0f}-{max(e2e):.0f}",
                             f"{C.median(drain):.0f}", f"{min(drain):.0f}-{max(drain):.0f}",
                             f"{C.median([x['cpu_us'] for x in rs]):.0f}"])
            print(C.table(rows, ["system", "end-to-end/s (median)", "range", "drain/s (median)",
                                 "range", "worker CPU us/task"]))
            r_e2e = med["podium"][0] / med["huey"][0]
            r_drain = med["podium"][1] / med["huey"][1]
            ok = r_e2e >= 2.0
            all_ok = all_ok and ok
            print(f"ratio podium/huey: end-to-end {r_e2e:.2f}x, drain {r_drain:.2f}x  "
                  f"(target >= 2x: {'PASS' if ok else 'FAIL'}); machine busy during section "
                  f"{load.cores():.2f} cores (ours and other tenants')")
            if "podium+index" in med:
                print(f"what-if ratio (podium + proposed index)/huey: end-to-end "
                      f"{med['podium+index'][0] / med['huey'][0]:.2f}x, drain "
                      f"{med['podium+index'][1] / med['huey'][1]:.2f}x")
    return C.verdict(all_ok)


if __name__ == "__main__":
    sys.exit(main())
