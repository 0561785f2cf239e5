"""``podium demo``: a real team of agents running a small pipeline to completion, offline.

It starts N background shell agents and one ``local`` AI agent (Gemma 3 270M, in-process via
llama.cpp; skipped with a note when it is not installed; ``--ai-backend`` picks another, and an
unknown one or a bad ``--ai-option`` is refused before anything starts) on a fresh embedded
store, then queues:
  1. a broadcast so every shell agent reports where it runs,
  2. for the AI agent: write ``is_prime`` in Python (a base model completes the code),
  3. three counting tasks in parallel (primes in three ranges, each by a Python child),
  4. a summing task that depends on all three, reads their results back through the store
     (``podium task result`` from inside the task, as any agent script could) and puts the total
     into the shared context,
  5. for the AI agent, after the sum: a one-sentence summary (the shared context with the
     total is put in front of its prompt),
  6. for a shell agent, after the AI's code: test it against trial division,
  7. a task that overruns its timeout and is killed, and one that is cancelled while queued
     behind a dependency.
It waits for everything, prints each result with tokens and timings, what the AI wrote, the
tokens per agent, and stops the agents.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from podium import render
from podium.agents.backends import parse_options
from podium.errors import BackendUnavailable, PodiumError
from podium.models import Task
from podium.service import Podium
from podium.service.doctor import preflight
from podium.supervisor import down, up

PRIMES = (
    "{py} -c 'import sys; lo, hi = int(sys.argv[1]), int(sys.argv[2]); "
    "print(sum(all(n % d for d in range(2, int(n ** 0.5) + 1)) for n in range(max(lo, 2), hi)))' "
    "{lo} {hi}"
)
SUM = (
    "total=0; for t in {ids}; do "
    "n=$({podium} task result --raw $t); echo \"$t -> $n primes\"; total=$((total + n)); done; "
    "echo \"primes below {hi}: $total\"; "
    "{podium} context set result \"There are $total prime numbers below {hi_text}.\" >/dev/null"
)
# Runs the AI's code (its output, after the ``def`` line it was given) against trial division.
CHECK = r'''
import contextlib, io, re, sys
out = sys.stdin.read()
fenced = re.search(r"```(?:python)?\n(.*?)```", out, re.S)  # a chat model answers in a block
if fenced:
    out = fenced.group(1)
src = out if "def is_prime" in out else "def is_prime(n):\n" + out
ns = {}
try:
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(src, "ai_is_prime.py", "exec"), ns)
except Exception as e:
    print(f"the AI's code does not run: {type(e).__name__}: {e}")
    sys.exit(0)
truth = lambda n: n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))
wrong = []
for n in range(1000):
    try:
        ok = bool(ns["is_prime"](n)) == truth(n)
    except Exception:
        ok = False
    if not ok:
        wrong.append(n)
lines = len(src.strip().splitlines())
if wrong:
    print(f"the AI's is_prime ({lines} lines) is wrong for {len(wrong)} of 0..999, "
          f"first {wrong[:5]}")
else:
    print(f"the AI's is_prime ({lines} lines) is right for all of 0..999")
'''
AI_OPTIONS = ["seed={seed}", "temperature=0.3", "max_tokens=80", "threads=1"]
CODE_PROMPT = "Python function that tells whether n is prime:\n```python\ndef is_prime(n):\n"
SUMMARY_PROMPT = "## Summary of the result in one sentence\n"
#: The seed with which Gemma 3 270M writes a correct is_prime here (a 270M base model often
#: does not; the shell check says so when it does not).
AI_SEED = 25


def run_demo(n_agents: int, keep: bool, write: Callable[[str], None], ai_backend: str = "local",
             ai_options: list[str] | None = None) -> int:
    if ai_options is None:
        ai_options = _ai_options() if ai_backend == "local" else []
    # Before anything starts: an unknown backend or a bad option is the user's error (raised);
    # a known one that cannot run here (its package missing, not logged in) is skipped.
    unavailable = _ai_unavailable(ai_backend, ai_options)
    home = Path(tempfile.mkdtemp(prefix="podium-demo-"))
    podium = Podium.open(str(home / "podium.db"))
    py = shlex.quote(sys.executable)
    podium_cmd = f"{py} -m podium"
    started = time.monotonic()
    try:
        write(f"store: {podium.url}\n")
        agents = up(podium, n_agents, "shell", ["shell"], [], workdir=str(home))
        write(f"started {len(agents)} shell agents: {', '.join(a.id for a in agents)}\n")
        podium.set_context("project", "Podium demo: shell agents count the primes below 300,000 "
                                      "in parallel; a local AI agent writes code and a summary.")
        # Broadcast before the AI agent exists: one "where am I" per shell agent.
        where = podium.broadcast('echo "$PODIUM_AGENT_ID on $(hostname), pid $$"')

        ai = None
        if unavailable is not None:
            hint = "; ./scripts/bootstrap local installs it" if ai_backend == "local" else ""
            write(f"no {ai_backend} AI agent ({unavailable}){hint}\n\n")
        else:
            try:
                ai = up(podium, 1, ai_backend, ["writer"], ai_options, prefix="ai",
                        workdir=str(home), wait_s=120)[0]
                what = ("Gemma 3 270M in-process, llama.cpp" if ai_backend == "local"
                        else ai_backend)
                write(f"started 1 AI agent: {ai.id} ({what})\n\n")
            except PodiumError as e:  # (it could run here, yet did not start: its log says why)
                write(f"no {ai_backend} AI agent ({e})\n\n")

        code = None
        if ai is not None:  # queued first, so that the idle AI agent takes it at once
            code = podium.add_task(CODE_PROMPT, role="writer", timeout_s=120)
        hi, step = 300_000, 100_000
        counts = [podium.add_task(PRIMES.format(py=py, lo=lo, hi=lo + step), role="shell",
                                  timeout_s=120) for lo in range(0, hi, step)]
        total = podium.add_task(
            SUM.format(ids=" ".join(t.id for t in counts), podium=podium_cmd, hi=hi,
                       hi_text=f"{hi:,}"),
            depends_on=[t.id for t in counts], priority="high", role="shell")
        ai_tasks: list[Task] = []
        if code is not None:  # (there is an AI agent)
            summary = podium.add_task(SUMMARY_PROMPT, role="writer", depends_on=[total.id],
                                      timeout_s=120)
            (home / "check_is_prime.py").write_text(CHECK)
            check = podium.add_task(
                f"{podium_cmd} task result --raw {code.id} | {py} check_is_prime.py",
                role="shell", depends_on=[code.id], timeout_s=30)
            ai_tasks = [code, summary, check]
        slow = podium.add_task("sleep 30", timeout_s=1, role="shell")
        doomed = podium.add_task("echo never runs", depends_on=[total.id], role="shell")
        podium.cancel(doomed.id, "cancelled by the demo")

        everything = [*where, *counts, total, *ai_tasks, slow, doomed]
        for t in everything:
            podium.wait(t.id, timeout_s=300)

        rows = []
        for t in everything:
            t = podium.task(t.id)
            text = render.output_text(t.output).strip().splitlines()
            shown = render.short(text[-1] if text else (t.error or ""), 60)
            ms = f"{t.duration_ms:.1f}" if t.duration_ms is not None else "-"
            tokens = f"{t.tokens_in}/{t.tokens_out}" if t.tokens_in is not None else "-"
            rows.append([t.id, t.state.value, t.agent_id or "-", ms, tokens, shown])
        write(render.table(rows, ["TASK", "STATE", "AGENT", "MS", "TOKENS", "OUTPUT / ERROR"]))
        final = podium.task(total.id)
        ok = final.state.value == "completed" and podium.task(slow.id).state.value == "failed"
        write("\n" + (final.output or b"").decode())
        if ai_tasks:
            assert ai is not None  # AI tasks are added only for an AI agent
            code_t, summary_t, check_t = (podium.task(t.id) for t in ai_tasks)
            ok = ok and all(t.state.value == "completed" for t in (code_t, summary_t, check_t))
            code_text = _text(code_t.output)
            if "def is_prime" not in code_text:
                code_text = "def is_prime(n):\n" + code_text.strip("\n")
            write(f"\n{ai.id} wrote (prompt: {CODE_PROMPT.splitlines()[0]!r}):\n"
                  f"{_indent(code_text.encode())}\n")
            write(f"shell check of that code: {_text(check_t.output).strip()}\n")
            write(f"\n{ai.id} summarised (prompt: {SUMMARY_PROMPT!r}, after the shared "
                  f"context):\n{_indent(summary_t.output)}\n")
            write("\ntokens and cost per agent (podium costs):\n")
            for a in podium.costs().agents:
                if a.tokens_in or a.tokens_out:
                    write(f"    {a.id:<8} {a.backend:<6} {a.tasks_done} tasks, "
                          f"{a.tokens_in} tokens in, {a.tokens_out} out, ${a.cost_usd:.2f}\n")
        write(f"\n{len(everything)} tasks in {time.monotonic() - started:.2f}s; "
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


def _ai_unavailable(ai_backend: str, ai_options: list[str]) -> BackendUnavailable | None:
    """Why the AI agent's backend cannot run here (None: it can), as ``podium up`` would refuse
    it; ``InvalidInput`` for an unknown backend or an option it does not take."""
    try:
        preflight(ai_backend, parse_options(ai_options), Path.cwd())
    except BackendUnavailable as e:
        return e
    return None


def _ai_options() -> list[str]:
    return [o.format(seed=AI_SEED) for o in AI_OPTIONS] + ["stop=\\n#"]


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def _indent(data: bytes | None) -> str:
    lines = _text(data).strip("\n").splitlines() or ["(nothing)"]
    return "\n".join("    " + line for line in lines)
