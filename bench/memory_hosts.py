#!/usr/bin/env python3
"""Do the memory indexers of several hosts share the work on one PostgreSQL store, or does
each host embed everything?

A fresh PostgreSQL schema (``bench/pg_common.py``) gets ``--tasks`` finished tasks whose prompts
and outputs are ``--chars`` characters of varied text (run by a real echo worker, with memory
indexing off). Then K real indexers (``podium memory index --follow``) start at once, each as a
host of its own: its own ``XDG_RUNTIME_DIR``, so each takes its host's indexer lock, as on K
machines (``PODIUM_PG_HOST=off``: no host daemon). Timed from their start until every memory
has a vector (the store's ``memory_counts``); with the CPU time the K indexers used meanwhile
(``/proc``), which includes each one's model load. K = 1 and ``--hosts`` (default 2),
alternating, ``--repeat`` runs each; medians. Sharing, K indexers use about the CPU of one
(plus K - 1 model loads) and finish sooner; each embedding everything, K times the CPU.

    .venv/bin/python bench/memory_hosts.py [--tasks 150] [--chars 3000] [--hosts 2] [--repeat 2]
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
import pg_common as PG  # noqa: E402
from memory_indexing import _long_prompt  # noqa: E402


def fill(url: str, tmp: Path, tasks: int, chars: int, seed: int) -> None:
    """``tasks`` finished tasks in the store, run by a real echo worker."""
    from podium.service import Podium

    p = Podium.open(url)
    worker = None
    try:
        worker = C.podium_worker(url, "w1", "echo", log=tmp / "worker.log")
        C.wait_agents_idle(p.store, ["w1"], [worker], log=tmp / "worker.log")
        rnd = random.Random(seed)
        p.add_tasks([p.spec(_long_prompt(rnd, chars)) for _ in range(tasks)])
        deadline = time.monotonic() + 120
        while p.store.counts()["completed"] < tasks:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tasks not finished: {p.store.counts()}")
            time.sleep(0.05)
    finally:
        C.stop([worker] if worker else [])
        p.close()


def run(hosts: int, tasks: int, chars: int, seed: int) -> dict:
    from podium.service import Podium

    name, url = PG.fresh_schema("memhosts")
    tmp = C.tempdir("podium-bench-memhosts-")
    procs = []
    try:
        fill(url, tmp, tasks, chars, seed)
        p = Podium.open(url)
        try:
            t0 = time.monotonic()
            for i in range(hosts):
                runtime = tmp / f"host-{i}"
                runtime.mkdir(mode=0o700)
                procs.append(C.spawn([C.PY, "-m", "podium", "--store", url, "memory", "index",
                                      "--follow"], log=tmp / f"indexer-{i}.log",
                                     env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}))
            deadline = time.monotonic() + 600
            while True:
                counts = p.store.memory_counts()
                total = sum(counts.by_kind.values())
                if total and counts.cursor == counts.last_event_id and \
                        not counts.by_model.get(None):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not all embedded after 600 s: {counts}")
                for w in procs:
                    if w.poll() is not None:
                        raise RuntimeError(f"indexer exited {w.returncode}: "
                                           f"{(tmp / 'indexer-0.log').read_text()[-1000:]}")
                time.sleep(0.05)
            wall = time.monotonic() - t0
            cpu = C.cpu_of([w.pid for w in procs])
        finally:
            p.close()
        return {"wall": wall, "cpu": cpu, "memories": total}
    finally:
        C.stop(procs)
        PG.drop_schema(name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=150)
    ap.add_argument("--chars", type=int, default=3000)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    os.environ["PODIUM_MEMORY_INDEX"] = "off"  # (the filling worker starts no indexer)
    os.environ["PODIUM_PG_HOST"] = "off"
    print(f"memory indexers of 1 and {args.hosts} hosts on one PostgreSQL store; "
          f"{args.tasks} tasks of {args.chars} chars; {C.machine()}; other load before start: "
          f"{C.others_busy():.2f} cores busy", flush=True)
    results: dict[int, list[dict]] = {1: [], args.hosts: []}
    for r in range(args.repeat):
        for k in ((1, args.hosts) if r % 2 == 0 else (args.hosts, 1)):
            out = run(k, args.tasks, args.chars, r)
            results[k].append(out)
            print(f"  run {r + 1}, {k} host(s): {out['memories']} memories embedded in "
                  f"{out['wall']:.1f} s, indexers' CPU {out['cpu']:.1f} s", flush=True)
    one = C.median([x["cpu"] for x in results[1]])
    rows = []
    for k, rs in results.items():
        cpu = C.median([x["cpu"] for x in rs])
        rows.append([str(k), str(rs[0]["memories"]), f"{C.median([x['wall'] for x in rs]):.1f}",
                     f"{cpu:.1f}", f"{cpu / one:.2f}x"])
    print(C.table(rows, ["hosts", "memories", "all embedded after s", "indexers' CPU s",
                         "CPU to one host's"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
