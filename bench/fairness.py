#!/usr/bin/env python3
"""Writer fairness: 16 processes claim and finish tasks through the store as fast as they can.

Each process opens the store, registers its agent, and (after a common start signal) loops
``store.claim(agent, [], 30, finish=<previous task's result>)`` — the worker's own
"record result + claim next" transaction — on a shared pool of queued tasks, for ``--seconds``
or until the pool is empty. Every claim call's wall time is recorded ("claim wait": waiting
for the write lock plus the transaction itself). Reported: p50/p99/max claim wait over all
calls, claims per process (min/max, Jain's fairness index), 'database is locked' errors, total
claims/s.

Variants (same run): Podium as is (flock before BEGIN IMMEDIATE), and ``--no-flock``
(default on as a comparison): the same with the flock replaced by a no-op in the child
processes only, so SQLite's own busy handler (sleep and retry) arbitrates, which is what the
flock exists to avoid. Both at ``--sync`` (default NORMAL).

    .venv/bin/python bench/fairness.py [--procs 16] [--seconds 6] [--pool 6000] [--sync NORMAL]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def child(url: str, name: str, seconds: float, no_flock: bool) -> None:
    from podium.errors import StoreError
    from podium.models import Outcome, TaskState
    from podium.store import Finish, open_store

    if no_flock:
        import types

        import podium.store.sqlite as sq

        sq.fcntl = types.SimpleNamespace(flock=lambda fd, op: None, LOCK_EX=0, LOCK_UN=0,
                                         LOCK_SH=0, LOCK_NB=0)
    store = open_store(url)
    store.register_agent(name, [], "bench", "localhost", 0, 300.0, {})
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    waits: list[float] = []
    errors = 0
    finish = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            task = store.claim(name, [], 300.0, finish)
        except StoreError as e:
            waits.append(time.perf_counter() - t)
            if "locked" in str(e) or "busy" in str(e):
                errors += 1
                continue
            raise
        waits.append(time.perf_counter() - t)
        finish = None
        if task is None:
            break
        finish = Finish(task.id, task.attempts, Outcome(TaskState.COMPLETED, output=b"x",
                                                        exit_code=0))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if finish is not None:
        store.finish(name, finish)
    store.close()
    print(json.dumps({"waits": [round(w, 7) for w in waits], "errors": errors,
                      "claims": len(waits) - errors, "vcsw": ru1.ru_nvcsw - ru0.ru_nvcsw,
                      "ivcsw": ru1.ru_nivcsw - ru0.ru_nivcsw}), flush=True)


def run(sync: str, procs: int, seconds: float, pool: int, no_flock: bool) -> dict:
    import subprocess

    tmp, db, url, _, p = C.podium_store("fair", sync)
    kids: list[subprocess.Popen] = []
    try:
        p.add_tasks([p.spec("x") for _ in range(pool)])
        argv = [C.PY, str(Path(__file__).resolve()), "--child", url, "{name}", str(seconds),
                "1" if no_flock else "0"]
        for i in range(procs):
            a = [x.replace("{name}", f"f{i + 1}") for x in argv]
            kids.append(C.spawn(a, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(tmp / f"child{i}.log", "wb")))
        for k in kids:
            line = k.stdout.readline()
            if not line.startswith(b"ready"):
                raise RuntimeError(f"child {k.pid} failed: "
                                   f"{(tmp / 'child0.log').read_text()[-2000:]}")
        t0 = time.monotonic()
        for k in kids:
            k.stdin.write(b"go\n")
            k.stdin.flush()
        results = []
        for k in kids:
            out = k.stdout.readline()
            if not out:
                raise RuntimeError(f"child {k.pid} died")
            results.append(json.loads(out))
            k.wait(30)
        elapsed = time.monotonic() - t0
        waits = [w for r in results for w in r["waits"]]
        counts = [r["claims"] for r in results]
        jain = sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts)) if any(counts) else 0
        left = p.store.counts()["queued"]
        switches = sum(r["vcsw"] + r["ivcsw"] for r in results)
        return {"waits": waits, "counts": counts, "errors": sum(r["errors"] for r in results),
                "switches_per_claim": switches / max(1, sum(counts)),
                "rate": sum(counts) / elapsed, "jain": jain, "left": left, "elapsed": elapsed}
    finally:
        C.stop(kids)
        p.close()
        C.remove_wake_dir(db)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1")
        return 0
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--pool", type=int, default=6000, help="queued tasks to claim from")
    ap.add_argument("--sync", default="NORMAL")
    ap.add_argument("--no-compare", dest="compare", action="store_false",
                    help="skip the run with flock disabled")
    args = ap.parse_args()
    sync = args.sync.upper()
    print(f"fairness: {args.procs} processes claim+finish through the store for up to "
          f"{args.seconds:g} s from a pool of {args.pool} queued tasks; synchronous={sync}; "
          f"{C.machine()}; other load before start: {C.others_busy():.2f} cores busy")
    variants = [("podium (flock + BEGIN IMMEDIATE)", False)]
    if args.compare:
        variants.append(("flock disabled (SQLite busy handler only)", True))
    rows, res = [], {}
    for label, no_flock in variants:
        r = run(sync, args.procs, args.seconds, args.pool, no_flock)
        res[no_flock] = r
        s = C.summary_ms(r["waits"])
        if r["left"] == 0:
            print(f"  note: {label}: the pool was empty after {r['elapsed']:.1f}s "
                  "(run ended there)")
        rows.append([label, f"{s['p50']:.2f}", f"{s['p99']:.2f}", f"{s['max']:.1f}",
                     f"{min(r['counts'])}-{max(r['counts'])}", f"{r['jain']:.3f}",
                     str(r["errors"]), f"{r['rate']:.0f}", f"{r['switches_per_claim']:.1f}",
                     f"{r['elapsed']:.1f}s"])
    print(C.table(rows, ["variant", "claim p50 ms", "p99 ms", "max ms", "claims/process",
                         "Jain", "locked errors", "claims/s", "ctx switches/claim", "ran"]))
    base = C.summary_ms(res[False]["waits"])
    if True in res:
        other = C.summary_ms(res[True]["waits"])
        print(f"ratio no-flock/flock: p99 {C.ratio(other['p99'], base['p99'])}, "
              f"max {C.ratio(other['max'], base['max'])}")
    r = res[False]
    ok = r["errors"] == 0 and min(r["counts"]) > 0
    print(f"worst claim wait with {args.procs} writers: {base['max']:.1f} ms; no writer starved "
          f"(every process claimed, no errors): {'PASS' if ok else 'FAIL'}")
    return C.verdict(ok)


if __name__ == "__main__":
    sys.exit(main())
