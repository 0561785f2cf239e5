"""``podium demo``: a real team of shell agents running a small pipeline to completion.

It starts N background agents on a fresh embedded store, then queues:
  1. three counting tasks in parallel (primes in three ranges, each by a Python child),
  2. a summing task that depends on all three and reads their results back through the store
     (``podium result`` from inside the task, as any agent script could),
  3. a broadcast so every agent reports where it runs,
  4. a task that overruns its timeout and is killed, and one that is cancelled while queued
     behind a dependency.
It waits for everything, prints each result, and stops the agents.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from podium.service import Podium
from podium.supervisor import down, up

PRIMES = (
    "{py} -c 'import sys; lo, hi = int(sys.argv[1]), int(sys.argv[2]); "
    "print(sum(all(n % d for d in range(2, int(n ** 0.5) + 1)) for n in range(max(lo, 2), hi)))' {lo} {hi}"
)
SUM = (
    "total=0; for t in {ids}; do "
    "n=$({podium} result --raw $t); echo \"$t -> $n primes\"; total=$((total + n)); done; "
    "echo \"primes below {hi}: $total\""
)


def run_demo(n_agents: int, keep: bool, write: Callable[[str], None]) -> int:
    home = Path(tempfile.mkdtemp(prefix="podium-demo-"))
    podium = Podium.open(str(home / "podium.db"))
    py = shlex.quote(sys.executable)
    podium_cmd = f"{py} -m podium"
    started = time.monotonic()
    try:
        write(f"store: {podium.store.url}\n")
        agents = up(podium, n_agents, "shell", [], [], workdir=str(home))
        write(f"started {len(agents)} shell agents: {', '.join(a.id for a in agents)}\n\n")
        podium.set_context("project", "Podium demo: count primes below 300,000 in parallel")

        hi, step = 300_000, 100_000
        counts = [podium.add_task(PRIMES.format(py=py, lo=lo, hi=lo + step), timeout_s=120)
                  for lo in range(0, hi, step)]
        total = podium.add_task(
            SUM.format(ids=" ".join(t.id for t in counts), podium=podium_cmd, hi=hi),
            depends_on=[t.id for t in counts], priority="high")
        where = podium.broadcast('echo "$PODIUM_AGENT_ID on $(hostname), pid $$"')
        slow = podium.add_task("sleep 30", timeout_s=1)
        doomed = podium.add_task("echo never runs", depends_on=[total.id])
        podium.cancel(doomed.id, "cancelled by the demo")

        everything = [*counts, total, *where, slow, doomed]
        for t in everything:
            podium.wait(t.id, timeout_s=300)

        write(f"{'task':<13} {'state':<10} {'agent':<8} {'ms':>8}  output / error\n")
        ok = True
        for t in everything:
            t = podium.task(t.id)
            r = t.result()
            text = (r["output"] or "").strip().splitlines()
            shown = text[-1] if text else (t.error or "")
            ms = f"{r['duration_ms']:.1f}" if r["duration_ms"] is not None else "-"
            write(f"{t.id:<13} {t.state.value:<10} {t.agent_id or '-':<8} {ms:>8}  {shown}\n")
        final = podium.task(total.id)
        ok = final.state.value == "completed" and podium.task(slow.id).state.value == "failed"
        write("\n" + (final.output or b"").decode() + "\n")
        write(f"{len(everything)} tasks in {time.monotonic() - started:.2f}s; "
              f"timeout killed as expected: {podium.task(slow.id).error}\n")
        return 0 if ok else 1
    finally:
        stopped = down(podium)
        write(f"stopped {len(stopped)} agents\n")
        podium.close()
        if keep:
            write(f"store kept at {home}\n")
        else:
            import shutil

            shutil.rmtree(home, ignore_errors=True)
