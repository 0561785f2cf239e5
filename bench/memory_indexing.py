#!/usr/bin/env python3
"""Does remembering finished tasks slow dispatch? Dispatch latency with background memory
indexing on (``PODIUM_MEMORY_INDEX=on``: the first worker starts the host's memory indexer,
``podium memory index --follow``, a process of its own at nice 19 that remembers finished tasks
and embeds them once no event has been committed for ``QUIET_S``, see
``podium/service/indexer.py``) and off, interleaved round by round so that both see the same
machine.

As ``bench/dispatch.py`` measures it: one real ``podium agent run`` worker (echo backend),
idle on its wake-up socket; tasks are added one at a time through the service API with a random
gap of 0.5-1.5x ``--gap-ms``; latency = the task's ``started_at`` (the worker's claim) minus
the time just before ``add_task``. Two workloads: ``short`` prompts (``x``, as dispatch.py) and
``long`` ones (``--long-chars`` characters of varied text, which the echo backend returns as
its output: each finished task is then several chunks to embed, ~50-100 ms of model time,
which the indexer would spend in the gaps between tasks if it did not wait for a quiet log),
and ``shell``: the shell backend running ``true`` (a program started per task, as
``bench/dispatch.py``'s shell variant; its ``started_at`` is stamped once the program is
spawned). For ``on`` the table also says how
many of the run's memories were remembered and embedded by the time its last task had finished
(what the indexer did during the run rather than after it).

    .venv/bin/python bench/memory_indexing.py [--n 200] [--rounds 3] [--gap-ms 20]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

WARMUP = 10
WORDS = ("build test deploy database index query cache worker queue token model error fixed "
         "timeout retry migration schema client server request response latency memory disk "
         "network socket thread process signal lock commit branch merge review release").split()


def _long_prompt(rnd: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rnd.choice(WORDS))
    return " ".join(words)[:chars]


def run(setting: str, workload: str, n: int, gap_ms: float, seed: int, long_chars: int,
        sync: str) -> dict:
    os.environ["PODIUM_MEMORY_INDEX"] = setting
    tmp, db, url, log, p = C.podium_store(f"memidx-{setting}", sync, "worker.log")
    worker = None
    rnd = random.Random(seed)
    try:
        backend = "shell" if workload == "shell" else "echo"
        worker = C.podium_worker(url, "w1", backend, log=log)
        C.wait_agents_idle(p.store, ["w1"], [worker], log=log)
        sent = []
        for i in range(n + WARMUP):
            prompt = {"short": "x", "shell": "true"}.get(workload) or _long_prompt(rnd,
                                                                                 long_chars)
            time.sleep(gap_ms / 1000.0 * rnd.uniform(0.5, 1.5))
            t0 = time.time()
            task = p.add_task(prompt)
            if i >= WARMUP:
                sent.append((task.id, t0))
        deadline = time.monotonic() + 120
        while p.store.counts()["completed"] < n + WARMUP:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tasks not finished: {p.store.counts()}")
            time.sleep(0.01)
        counts = p.store.memory_counts()
        embedded_during = sum(v for m, v in counts.by_model.items() if m is not None)
        rows_during = sum(counts.by_kind.values())
        claimed = [p.task(tid).started_at - t0 for tid, t0 in sent]
        return {"claimed": claimed, "embedded": embedded_during, "rows": rows_during}
    finally:
        C.stop([worker] if worker else [])
        p.close()
        C.remove_wake_dir(db)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="measured tasks per run")
    ap.add_argument("--rounds", type=int, default=3, help="on/off pairs per workload")
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ap.add_argument("--long-chars", type=int, default=3000)
    ap.add_argument("--sync", default="NORMAL")
    ap.add_argument("--workloads", default="short,long,shell")
    args = ap.parse_args()
    print(f"dispatch latency with memory indexing on/off; n={args.n} per run, {args.rounds} "
          f"rounds, gap {args.gap_ms:g} ms +-50%, synchronous={args.sync}; {C.machine()}; "
          f"other load before start: {C.others_busy():.2f} cores busy")
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        lat: dict[str, list[float]] = {"off": [], "on": []}
        per_round: list[list[str]] = []
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for setting in order:
                out = run(setting, workload, args.n, args.gap_ms, r,
                          args.long_chars, args.sync)
                lat[setting] += out["claimed"]
                s = C.summary_ms(out["claimed"])
                per_round.append([str(r + 1), setting, C.fmt_ms(s["p50"]), C.fmt_ms(s["p99"]),
                                  C.fmt_ms(s["max"]),
                                  f"{out['embedded']}/{out['rows']}" if setting == "on" else "-"])
        what = {"short": "echo backend, prompt x", "shell": "shell backend, prompt true"}.get(
            workload, f"echo backend, {args.long_chars} chars per prompt and output")
        with C.section(f"workload {workload} ({what})"):
            print(C.table(per_round, ["round", "indexing", "claim p50 ms", "p99 ms", "max ms",
                                      "embedded/remembered when the last task finished"]))
            off, on = C.summary_ms(lat["off"]), C.summary_ms(lat["on"])
            print(C.table([
                ["off", C.fmt_ms(off["p50"]), C.fmt_ms(off["p99"]), str(off["n"])],
                ["on", C.fmt_ms(on["p50"]), C.fmt_ms(on["p99"]), str(on["n"])],
                ["on/off", C.ratio(on["p50"], off["p50"]), C.ratio(on["p99"], off["p99"]), ""],
            ], ["all rounds", "claim p50 ms", "p99 ms", "n"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
