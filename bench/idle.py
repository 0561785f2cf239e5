#!/usr/bin/env python3
"""Idle cost: CPU used by 50 idle registered agents over 30 s.

Podium: 50 real ``podium agent run --backend echo`` processes on one store, default lease
(30 s, so a heartbeat every 5 s), no tasks. Once every agent is registered and idle, and after
a short settle, the CPU of all 50 processes is sampled at the start and end of the window:
  * exact: the sum over their threads of ``/proc/PID/task/TID/schedstat`` run time (ns);
  * as the kernel's tick counters say: utime + stime from ``/proc/PID/stat`` (1/100 s ticks).
Reported as percent of one core for all 50 together and per agent.
Peer (``--peer``, default on): a huey consumer with 50 process workers (huey's default polling,
periodic off), measured the same way over the same window length; the consumer process is
counted with its workers. huey's idle workers back off from 0.1 s to 10 s between polls, so
their cost falls during the first minute; the window starts at the same point for both.

    .venv/bin/python bench/idle.py [--agents 50] [--seconds 30] [--sync NORMAL] [--no-peer]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

SETTLE_S = 3.0


def _measure(pids: list[int], seconds: float) -> dict:
    ns0, tick0 = C.run_ns_of(pids), C.cpu_of(pids)
    t0 = time.monotonic()
    time.sleep(seconds)
    ns1, tick1 = C.run_ns_of(pids), C.cpu_of(pids)
    el = time.monotonic() - t0
    return {"exact": (ns1 - ns0) / 1e9 / el * 100.0, "ticks": (tick1 - tick0) / el * 100.0,
            "window": el}


def podium_idle(n: int, seconds: float, sync: str) -> dict:
    tmp, db, url, log, p = C.podium_store("idle", sync, "workers.log")
    procs = []
    try:
        names = [f"idle-{i + 1}" for i in range(n)]
        t0 = time.monotonic()
        procs = [C.podium_worker(url, name, "echo", log=log) for name in names]
        C.wait_agents_idle(p.store, names, procs, timeout=300, log=log)
        started = time.monotonic() - t0
        time.sleep(SETTLE_S)
        res = _measure([q.pid for q in procs], seconds)
        alive = sum(q.poll() is None for q in procs)
        live = sum(a.state.live for a in p.agents())
        res.update(started_s=started, alive=alive, live=live, procs=len(procs))
        return res
    finally:
        C.stop(procs, timeout=20)
        p.close()
        C.remove_wake_dir(db)


def huey_idle(n: int, seconds: float, sync: str) -> dict:
    import _huey as H

    tmp = C.tempdir("idle-huey")
    db = tmp / "huey.db"
    board_path = tmp / "board"
    board = H.Board(board_path, 0, create=True)
    consumer = None
    try:
        t0 = time.monotonic()
        consumer = C.spawn(H.consumer_argv(db, sync, board_path, n, "default"),
                           log=tmp / "consumer.log")
        H.wait_ready(board, n, consumer, timeout=300)
        started = time.monotonic() - t0
        time.sleep(SETTLE_S)
        pids = [consumer.pid, *C.descendants(consumer.pid)]
        res = _measure(pids, seconds)
        # Processes: the consumer, its scheduler process and the n workers.
        res.update(started_s=started, alive=n, live=n, procs=len(pids))
        return res
    finally:
        C.stop([consumer], timeout=20)
        board.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--sync", default="NORMAL")
    ap.add_argument("--no-peer", dest="peer", action="store_false")
    args = ap.parse_args()
    sync = args.sync.upper()
    print(f"idle cost: {args.agents} idle agents, {args.seconds:g} s window after all are up "
          f"(+{SETTLE_S:g} s settle); synchronous={sync}; {C.machine()}; other load before "
          f"start: {C.others_busy():.2f} cores busy")
    res = {"podium": podium_idle(args.agents, args.seconds, sync)}
    if args.peer:
        res["huey"] = huey_idle(args.agents, args.seconds, sync)
    rows = []
    for name, r in res.items():
        label = (f"podium: {args.agents} echo agents (lease 30 s, heartbeat 5 s)"
                 if name == "podium"
                 else f"huey: consumer + {args.agents} process workers (default polling)")
        rows.append([label, f"{r['exact']:.3f}%", f"{r['exact'] / args.agents:.4f}%",
                     f"{r['ticks']:.3f}%", f"{r['started_s']:.1f}s", str(r["procs"]),
                     f"{r['alive']}/{r['live']}"])
    print(C.table(rows, ["system", "CPU, all (% of 1 core)", "per agent", "by /proc ticks",
                         "start-up", "processes", "agents alive/live"]))
    pod = res["podium"]["exact"]
    if "huey" in res:
        print(f"ratio huey/podium idle CPU: {C.ratio(res['huey']['exact'], pod)}")
    ok = pod < 1.0 and res["podium"]["alive"] == args.agents
    print(f"target: {args.agents} idle agents together < 1% of a core: {'PASS' if ok else 'FAIL'} "
          f"({pod:.3f}%)")
    return C.verdict(ok)


if __name__ == "__main__":
    sys.exit(main())
