#!/usr/bin/env python3
"""Dispatch latency: an idle, already-running worker; a task is added; how long until it starts?

Podium: one real worker process (``podium agent run``), sleeping on its wake-up socket. The
benchmark adds tasks one at a time through the service API (``Podium.add_task``), with a random
gap of 0.5-1.5x ``--gap-ms`` between them (random, so the gap cannot phase-lock with a poller).
  * echo backend: "claimed" = the task's ``started_at`` (stamped by the worker's claim, same
    clock) minus the time just before ``add_task``; "echo done" = ``completed_at`` (stamped
    right after the echo backend returned) minus the same: the backend started in between.
  * shell backend, its default ``/bin/sh`` (``--shell`` to change), prompt ``echo N > FIFO``:
    the command tells this process through a FIFO when it began (a shell builtin, nothing else
    is spawned); latency = that stamp minus the time before ``add_task``.
huey (SqliteHuey, consumer with 1 process worker, periodic off), same enqueue timing:
  * a task whose body stores ``time.time()`` (shared memory, no extra store write);
  * "shell": the task spawns the same shell with the same command (``subprocess.run``);
  * with huey's default polling (``initial_delay=0.1, backoff=1.15, max_delay=10``) and tuned
    (poll every 1 ms, no backoff); the idle CPU of each consumer is measured after its run
    (Podium's worker too).
The floor: this process itself runs the same shell command with the same gaps — what starting
the shell costs on this machine with no queue at all.
Both stores at the same ``PRAGMA synchronous`` level (``--sync``, default NORMAL then FULL).

    .venv/bin/python bench/dispatch.py [--n 300] [--gap-ms 20] [--sync NORMAL,FULL]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

IDLE_WINDOW_S = 5.0
WARMUP = 10


def _gaps(n: int, gap_ms: float, seed: int) -> list[float]:
    rnd = random.Random(seed)
    return [gap_ms / 1000.0 * rnd.uniform(0.5, 1.5) for _ in range(n)]


def _idle_cpu(pids: list[int], window: float) -> float:
    """Percent of one core used by ``pids`` over ``window`` seconds."""
    a = C.run_ns_of(pids)
    time.sleep(window)
    return (C.run_ns_of(pids) - a) / 1e9 / window * 100.0


def podium_run(sync: str, backend: str, n: int, gap_ms: float, seed: int,
               shell: str = "/bin/sh") -> dict:
    tmp, db, url, log, p = C.podium_store("dispatch", sync, "worker.log")
    worker = None
    try:
        opts = [f"shell={shell}"] if backend == "shell" else []
        worker = C.podium_worker(url, "w1", backend, opts, log=log)
        C.wait_agents_idle(p.store, ["w1"], [worker], log=log)
        stamps = C.FifoStamps(tmp) if backend == "shell" else None
        gaps = _gaps(n + WARMUP, gap_ms, seed)
        sent: list[tuple[int, str, float]] = []
        for i in range(n + WARMUP):
            prompt = stamps.command(i) if stamps else "x"
            time.sleep(gaps[i])
            t0 = time.time()
            task = p.add_task(prompt)
            if i >= WARMUP:
                sent.append((i, task.id, t0))
        deadline = time.monotonic() + 60
        while p.store.counts()["completed"] < n + WARMUP:
            if time.monotonic() > deadline:
                raise RuntimeError(f"podium tasks not finished: {p.store.counts()}")
            time.sleep(0.02)
        claimed, done, began = [], [], []
        if stamps:
            stamps.wait([i for i, _, _ in sent])
        for i, tid, t0 in sent:
            t = p.task(tid)
            claimed.append(t.started_at - t0)
            done.append(t.completed_at - t0)
            if stamps:
                began.append(stamps.times[i] - t0)
        if stamps:
            stamps.close()
        idle = _idle_cpu([worker.pid], IDLE_WINDOW_S)
        return {"claimed": claimed, "done": done, "began": began, "idle_cpu": idle}
    finally:
        C.stop([worker])
        p.close()
        C.remove_wake_dir(db)


def floor_run(n: int, gap_ms: float, seed: int, shell: str) -> dict:
    """The spawn floor: this process starts the same stamping command itself, no queue."""
    import subprocess

    gaps = _gaps(n + WARMUP, gap_ms, seed)
    stamps = C.FifoStamps(C.tempdir("dispatch-floor"))
    sent = []
    for i in range(n + WARMUP):
        time.sleep(gaps[i])
        t0 = time.time()
        subprocess.run([shell, "-c", stamps.command(i)], capture_output=True,
                       stdin=subprocess.DEVNULL, close_fds=True)
        if i >= WARMUP:
            sent.append((i, t0))
    times = stamps.wait([i for i, _ in sent])
    lat = [times[i] - t0 for i, t0 in sent]
    stamps.close()
    return {"began": lat}


def huey_run(sync: str, mode: str, kind: str, n: int, gap_ms: float, seed: int,
             shell: str = "/bin/sh") -> dict:
    import _huey as H

    tmp = C.tempdir("dispatch-huey")
    db = tmp / "huey.db"
    board_path = tmp / "board"
    board = H.Board(board_path, n + WARMUP, create=True)
    H.BOARD = board
    consumer = None
    try:
        consumer = C.spawn(H.consumer_argv(db, sync, board_path, 1, mode), log=tmp / "consumer.log")
        H.wait_ready(board, 1, consumer)
        huey = H.make_huey(db, sync)
        gaps = _gaps(n + WARMUP, gap_ms, seed)
        stamps = C.FifoStamps(tmp) if kind == "shell" else None
        sent: list[tuple[int, float]] = []
        for i in range(n + WARMUP):
            time.sleep(gaps[i])
            t0 = time.time()
            if stamps:
                huey.shell(i, shell, stamps.command(i))
            else:
                huey.record(i)
            if i >= WARMUP:
                sent.append((i, t0))
        deadline = time.monotonic() + 60
        while any(board.task_time(i) == 0 for i, _ in sent):
            if time.monotonic() > deadline:
                tail = (tmp / "consumer.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"huey tasks not finished; consumer log:\n{tail}")
            time.sleep(0.02)
        if stamps:
            times = stamps.wait([i for i, _ in sent])
            lat = [times[i] - t0 for i, t0 in sent]
            stamps.close()
        else:
            lat = [board.task_time(i) - t0 for i, t0 in sent]
        huey.storage.close()
        pids = [consumer.pid, *C.descendants(consumer.pid)]
        idle = _idle_cpu(pids, IDLE_WINDOW_S)
        return {"began": lat, "idle_cpu": idle}
    finally:
        C.stop([consumer])
        board.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="measured tasks per variant")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="mean gap between adds")
    ap.add_argument("--sync", default="NORMAL,FULL", help="SQLite synchronous levels to run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shell", default="/bin/sh",
                    help="shell for the shell variants (default: the shell backend's own)")
    args = ap.parse_args()

    print(f"dispatch latency: idle worker, task added -> started; n={args.n} per variant, "
          f"gap {args.gap_ms:g} ms +-50%; {C.machine()}; other load before start: "
          f"{C.others_busy():.2f} cores busy")
    all_ok = True
    for sync in [s.strip().upper() for s in args.sync.split(",") if s.strip()]:
        with C.section(f"synchronous={sync} (Podium store URL ?synchronous={sync}; huey "
                       f"SqliteStorage with PRAGMA synchronous={sync})"):
            load = C.HostLoad()
            pe = podium_run(sync, "echo", args.n, args.gap_ms, args.seed)
            ps = podium_run(sync, "shell", args.n, args.gap_ms, args.seed, args.shell)
            hd = huey_run(sync, "default", "noop", args.n, args.gap_ms, args.seed)
            ht = huey_run(sync, "tuned", "noop", args.n, args.gap_ms, args.seed)
            hts = huey_run(sync, "tuned", "shell", args.n, args.gap_ms, args.seed, args.shell)
            fl = floor_run(args.n, args.gap_ms, args.seed, args.shell)
            rows_src = [
                ("podium echo: claimed (started_at)", pe["claimed"], pe["idle_cpu"]),
                ("podium echo: echo done (completed_at)", pe["done"], None),
                ("huey default: task body started", hd["began"], hd["idle_cpu"]),
                ("huey tuned 1ms: task body started", ht["began"], ht["idle_cpu"]),
                ("podium shell: command began", ps["began"], ps["idle_cpu"]),
                ("podium shell: claimed (started_at)", ps["claimed"], None),
                ("huey tuned 1ms shell: command began", hts["began"], hts["idle_cpu"]),
                ("floor: the shell spawned by this process", fl["began"], None),
            ]
            rows = []
            stats = {}
            for name, vals, idle in rows_src:
                s = C.summary_ms(vals)
                stats[name] = s
                rows.append([name, C.fmt_ms(s["p50"]), C.fmt_ms(s["p90"]), C.fmt_ms(s["p99"]),
                             C.fmt_ms(s["max"]), "" if idle is None else f"{idle:.2f}%"])
            print(C.table(rows, ["variant", "p50 ms", "p90 ms", "p99 ms", "max ms",
                                 f"idle CPU ({IDLE_WINDOW_S:g}s after)"]))
            print(f"(machine busy during section: {load.cores():.2f} cores, "
                  "ours and other tenants')")
            e = stats["podium echo: echo done (completed_at)"]
            c = stats["podium echo: claimed (started_at)"]
            s = stats["podium shell: command began"]
            d = stats["huey default: task body started"]
            t = stats["huey tuned 1ms: task body started"]
            ts = stats["huey tuned 1ms shell: command began"]
            print("ratios (huey / podium, >1 = podium faster), p50 and p99:")
            print(f"  no-op, huey default vs podium echo done: p50 {C.ratio(d['p50'], e['p50'])}, "
                  f"p99 {C.ratio(d['p99'], e['p99'])}")
            print(f"  no-op, huey tuned   vs podium echo done: p50 {C.ratio(t['p50'], e['p50'])}, "
                  f"p99 {C.ratio(t['p99'], e['p99'])}")
            print(f"  shell, huey tuned   vs podium shell:     p50 {C.ratio(ts['p50'], s['p50'])}, "
                  f"p99 {C.ratio(ts['p99'], s['p99'])}")
            ok_e = c["p50"] <= 1.0 and c["p99"] <= 5.0
            ok_s = s["p50"] <= 2.0 and s["p99"] <= 5.0
            all_ok = all_ok and ok_e and ok_s
            print(f"targets: echo claimed p50<=1ms p99<=5ms: {'PASS' if ok_e else 'FAIL'} "
                  f"(echo done p50 {e['p50']:.2f} p99 {e['p99']:.2f}); "
                  f"shell began p50<=2ms p99<=5ms: {'PASS' if ok_s else 'FAIL'}")
    return C.verdict(all_ok)


if __name__ == "__main__":
    sys.exit(main())
