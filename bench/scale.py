#!/usr/bin/env python3
"""Scale: what N agents on one store cost and how fast they serve, for N up to 200.

For each system (SQLite on this machine; PostgreSQL with the agents split over two hosts),
backend (echo, shell) and N, in a fresh temporary store, with the real commands:

  * start-up: ``podium up N --backend B`` (PostgreSQL: ``podium up N/2`` on each host at once),
    from the command's start until all N agents are registered and idle in the store;
  * idle CPU: utime + stime (``/proc/PID/stat``) of every process started for this store --
    the workers and any helper Podium starts beside them (e.g. a per-host daemon), found by an
    environment marker they all inherit -- over an idle window (10 s; 3 s with ``--quick``)
    that starts 12 s after all are idle (one idle heartbeat interval and two seconds: the team
    at rest, after each worker's first idle beat), as % of one core, all of them together; also
    the exact scheduler time (``schedstat``), and the helpers' part by kind;
  * memory per worker: RSS and PSS (``/proc/PID/smaps_rollup``), median over the workers;
  * dispatch to an idle agent: 300 single tasks (after 10 unmeasured ones) one after another
    through the service API (``Podium.add_task``), a random 5-15 ms apart, each waited for on
    an event follower (300, not 100: the p99 of 100 is the second-worst sample alone);
    latency = the task's ``completed_at`` (stamped by the worker) minus the time just before
    ``add_task`` (same clock: one machine); p50 / p99; and the CPU time per dispatch that each
    kind of process used meanwhile (the workers, each kind of helper, the PostgreSQL server's
    processes, this benchmark: its adds and its follower);
  * throughput with all busy: 20 x N tasks added at once (``add_tasks``, one transaction),
    tasks/s = 20 N / (last ``completed_at`` - just before the add);
  * broadcast to all: ``broadcast()`` of one task to every agent, seconds until the last of the
    N completed (median of 3; 2 with ``--quick``);
  * down: ``podium down`` (on each host), its wall time; then every process of the store must be
    gone (helpers get 15 s to exit on their own): what is left is reported, then killed.

Prompts: ``ok`` for echo, ``true`` for shell. PostgreSQL: a server owned by the benchmark
(``initdb`` as the ``postgres`` user, stock ``max_connections = 100``) listening on the links of
two network namespaces (``bench/_hosts.py``), each namespace a host with its own hostname and
``XDG_RUNTIME_DIR``; a fresh database per row. A row that fails (e.g. "too many clients") says so
and the benchmark goes on. Targets at 200 agents (issue 13): idle <= 2 % of one core in total,
dispatch p99 <= 10 ms, start-up <= 20 s, PSS per worker <= 25 MB.

    .venv/bin/python bench/scale.py [--n 10,50,100,200] [--backends echo,shell]
        [--systems sqlite,pg] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import _hosts as H  # noqa: E402

MARK = "PODIUM_BENCH_SCALE"
#: Dispatches timed per row (``--quick``: 30).
DISPATCHES = 300
PROMPT = {"echo": "ok", "shell": "true"}
#: From all agents idle to the idle window: one idle heartbeat interval (lease/3 of the default
#: 30 s lease) and two seconds.
SETTLE_S = 12.0
TARGETS = {"idle_pct": 2.0, "p99_ms": 10.0, "startup_s": 20.0, "pss_mb": 25.0}
FINISHED = ("completed", "failed", "cancelled")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")

#: Marker tokens of every run, so that whatever survives is killed at exit.
_tokens: list[str] = []


# -- the processes of one run, found by the marker in their environment ---------------------

def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def marked(token: str) -> dict[int, str]:
    """pid -> command line of every live process carrying ``MARK=token`` (zombies left out)."""
    needle = f"{MARK}={token}".encode()
    out = {}
    me = os.getpid()
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == me:
            continue
        env = _read(f"/proc/{e}/environ")
        if not env or needle not in env.split(b"\0"):
            continue
        stat = _read(f"/proc/{e}/stat")
        if not stat or stat[stat.rfind(b")") + 2:].split()[0] == b"Z":
            continue
        cmd = (_read(f"/proc/{e}/cmdline") or b"").replace(b"\0", b" ").decode(errors="replace")
        out[int(e)] = cmd.strip()
    return out


def is_worker(cmd: str) -> bool:
    """A worker: started as ``podium agent run``, or forked by ``podium up``'s spawner (whose
    command line it keeps; the spawner itself is gone once ``up`` returns)."""
    return (" agent run " in f" {cmd} " and "podium" in cmd) or "podium.agents.spawner" in cmd


def kill_marked(token: str) -> list[str]:
    """SIGKILL every process of the run, by pid; their command lines."""
    left = marked(token)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return list(left.values())


def _kill_all_marked() -> None:
    for t in _tokens:
        kill_marked(t)


def _kind(cmd: str) -> str:
    """A helper's kind, from its command line: ``pgbouncer``, ``podium pg-host``..."""
    argv = cmd.split()
    if not argv:
        return "?"
    name = os.path.basename(argv[0])
    if "-m" in argv and "podium" in argv:
        rest = argv[argv.index("podium") + 1:]
        name = "podium " + " ".join(a for a in rest[:2] if not a.startswith("-"))
    return name.strip()


def _kinds(cmds) -> str:
    """``2x podium pg-host, 2x pgbouncer``: what the helper processes are, counted."""
    from collections import Counter

    names = Counter(_kind(c) for c in cmds)
    return ", ".join(f"{k}x {n}" for n, k in sorted(names.items()))


def smaps(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of ``pid`` in MB, from ``/proc/PID/smaps_rollup``."""
    rss = pss = 0.0
    for line in (_read(f"/proc/{pid}/smaps_rollup") or b"").decode().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    return rss, pss


# -- one store, with its hosts ---------------------------------------------------------------

class Target:
    """A fresh store and the hosts that run its agents; ``close`` removes the store."""

    def __init__(self, system: str, lab: H.NetLab | None, token: str, n: int,
                 pg_host: str | None = None):
        self.system, self.lab, self.token, self.n = system, lab, token, n
        self.tmp = C.tempdir(f"scale-{system}")
        self.dbname = None
        self._env_before = os.environ.get("XDG_RUNTIME_DIR")
        marker = {MARK: token}
        if system == "sqlite":
            rt = H.private_dir(self.tmp / "run")
            self.url = f"sqlite://{self.tmp / 'podium.db'}"
            self.hosts = [H.Host("local", os.uname().nodename, rt, None, self.url, dict(marker))]
            # This process adds the tasks: it must poke the sockets the workers listen on.
            os.environ["XDG_RUNTIME_DIR"] = str(rt)
        else:
            self.dbname, urls = lab.database()
            self.hosts = lab.hosts(self.tmp)
            for h, url in zip(self.hosts, urls):
                h.url = url
                h.env = {**marker, "PODIUM_HOME": str(H.private_dir(self.tmp / f"home-{h.label}"))}
                if pg_host:
                    h.env["PODIUM_PG_HOST"] = pg_host
            self.url = urls[0]  # this process reaches the server at the first link's root end
            os.environ["XDG_RUNTIME_DIR"] = str(H.private_dir(self.tmp / "run-bench"))
        from podium.service import Podium

        try:
            self.p = Podium.open(self.url)
        except BaseException:
            self.p = None
            self.close()
            raise

    def popen(self, host: H.Host, args: list[str], log: Path) -> subprocess.Popen:
        argv = host.wrap([C.PY, "-m", "podium", "--store", host.url, *args])
        with open(log, "ab") as f:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                    cwd=str(self.tmp), start_new_session=True)

    def tx(self, sql: str, params: tuple = ()):
        with self.p.store._reader() as tx:
            return tx.one(sql, params)

    def close(self) -> None:
        if self.p is not None:
            with contextlib.suppress(Exception):
                self.p.close()
        if self.dbname:
            self.lab.drop_database(self.dbname)
        if self._env_before is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = self._env_before
        shutil.rmtree(self.tmp, ignore_errors=True)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(x.strip() for x in text[-lines:])


def _wait_cmds(procs: list[subprocess.Popen], timeout: float) -> float:
    """Wait for the commands; their wall time from now (they were started just before)."""
    t0 = time.monotonic()
    for q in procs:
        try:
            q.wait(max(0.1, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            q.kill()
            q.wait()
    return time.monotonic() - t0


# -- the measurements ------------------------------------------------------------------------

def _alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (every host shares this machine's pid namespace)."""
    stat = _read(f"/proc/{pid}/stat") if pid else None
    return bool(stat) and stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


def start_up(T: Target, backend: str, n: int, row: dict) -> None:
    counts = [n // len(T.hosts) + (1 if i < n % len(T.hosts) else 0) for i in range(len(T.hosts))]
    logs = [T.tmp / f"up-{h.label}.log" for h in T.hosts]
    t0 = time.time()
    ups = [T.popen(h, ["up", str(k), "--backend", backend, "--prefix", f"{h.label}"], log)
           for h, k, log in zip(T.hosts, counts, logs) if k]
    # Until all n are idle. The store may refuse us meanwhile (e.g. too many clients): retry.
    deadline = time.monotonic() + max(60.0, 1.0 * n)
    idle = last = 0
    moved = time.monotonic()
    errors = []
    up_done: dict[int, float] = {}
    t_idle = None
    while True:
        for i, q in enumerate(ups):
            if i not in up_done and q.poll() is not None:
                up_done[i] = time.time() - t0
        try:
            idle_pids = [a.pid for a in T.p.store.list_agents() if a.state.value == "idle"]
            # (an agent whose process died after registering still shows idle: not counted)
            idle = len(idle_pids) if len(idle_pids) < n else sum(map(_alive, idle_pids))
        except Exception as e:  # noqa: BLE001 - reported in the row
            errors.append(str(e).strip().splitlines()[0][:200])
        if idle >= n and t_idle is None:
            t_idle = time.time() - t0
        if t_idle is not None and len(up_done) == len(ups):
            break
        if idle != last:
            last, moved = idle, time.monotonic()
        all_up_done = len(up_done) == len(ups)
        if all_up_done and time.monotonic() - moved > 15 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    _wait_cmds(ups, 60)
    row["startup_s"] = t_idle
    row["idle_agents"] = idle
    row["up_s"] = [round(up_done.get(i, float("nan")), 2) for i in range(len(ups))]
    row["up_rc"] = [q.returncode for q in ups]
    for q, log, h in zip(ups, logs, T.hosts):
        if q.returncode:
            row["notes"].append(f"podium up on {h.label}: exit {q.returncode}: {_tail(log)}")
    if errors:
        row["notes"].append(f"store errors while polling ({len(errors)}x): {errors[-1]}")
    if t_idle is None:
        raise RuntimeError(f"only {idle} of {n} agents idle (with a live process) after "
                           f"{time.time() - t0:.0f}s")


def idle_window(T: Target, seconds: float, row: dict) -> None:
    procs = marked(T.token)
    pids = list(procs)
    workers = [p for p, c in procs.items() if is_worker(c)]
    helpers = {p: c for p, c in procs.items() if not is_worker(c)}
    load = C.HostLoad()
    ns_start = {p: C.run_ns(p) for p in pids}
    # What a worker has used so far: its start-up (import, connect, register) and the settle.
    row["startup_cpu_ms_per_worker"] = C.median([ns_start[p] / 1e6 for p in workers])
    ticks0, ns0 = C.cpu_of(pids), sum(ns_start.values())
    t0 = time.monotonic()
    time.sleep(seconds)
    ns_end = {p: C.run_ns(p) for p in pids}
    ticks1, ns1 = C.cpu_of(pids), sum(ns_end.values())
    el = time.monotonic() - t0
    busy = load.cores()
    row["idle_pct"] = (ticks1 - ticks0) / el * 100.0
    row["idle_exact_pct"] = (ns1 - ns0) / 1e9 / el * 100.0
    row["others_busy_cores"] = max(0.0, busy - (ns1 - ns0) / 1e9 / el)
    row["workers"] = len(workers)
    if len(workers) != T.n:
        row["notes"].append(f"{len(workers)} worker processes found, not {T.n}")
    row["helpers"] = _kinds(helpers.values())
    row["idle_helpers_exact_pct"] = sum(
        max(0, ns_end[p] - ns_start[p]) for p in helpers) / 1e9 / el * 100.0
    by_kind: dict[str, float] = {}
    for p, c in helpers.items():
        by_kind[_kind(c)] = by_kind.get(_kind(c), 0.0) + max(0, ns_end[p] - ns_start[p])
    row["idle_helpers_by_kind_pct"] = {k: v / 1e9 / el * 100.0 for k, v in by_kind.items()}
    mem = [smaps(p) for p in workers]
    row["rss_mb"] = C.median([m[0] for m in mem])
    row["pss_mb"] = C.median([m[1] for m in mem])
    row["helpers_pss_mb"] = sum(smaps(p)[1] for p in helpers)
    if T.lab is not None:
        with contextlib.suppress(Exception):
            conns = T.lab.connections()
            # The namespaces' ends of the links are .2; this process connects from .1.
            row["server_conns"] = sum(k for a, k in conns.items() if a.endswith(".2"))
            row["bench_conns"] = sum(k for a, k in conns.items() if not a.endswith(".2"))


def cpu_groups(T: Target) -> dict[str, list[int]]:
    """The processes of a run by kind (workers, each helper kind, the PostgreSQL server's, this
    benchmark's), for what each kind uses during the dispatches."""
    groups: dict[str, list[int]] = {"workers": [], "benchmark": [os.getpid()]}
    for pid, cmd in marked(T.token).items():
        groups.setdefault("workers" if is_worker(cmd) else _kind(cmd), []).append(pid)
    if T.lab is not None:
        groups["postgres"] = T.lab.server_pids()
    return groups


def dispatch(T: Target, backend: str, k: int, warmup: int, row: dict) -> None:
    from podium.service.events import FINISHING_KINDS

    p = T.p
    rnd = random.Random(1)
    sent = []
    load = C.HostLoad()
    groups = cpu_groups(T)
    statements = T.lab is not None and T.lab.statements
    if statements:
        T.lab.reset_statements(T.dbname)
    ns0 = {kind: sum(C.run_ns(pid) for pid in pids) for kind, pids in groups.items()}
    with p.follower() as follower:
        for i in range(k + warmup):
            time.sleep(rnd.uniform(0.005, 0.015))
            t0 = time.time()
            task = p.add_task(PROMPT[backend])
            deadline = time.monotonic() + 30
            done = False
            while not done:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dispatch: task {task.id} not finished after 30 s")
                for ev in follower.poll(1.0):
                    if ev.task_id == task.id and ev.kind in FINISHING_KINDS:
                        done = True
            t_seen = time.time()
            if i >= warmup:
                sent.append((task.id, t0, t_seen))
    row["dispatch_machine_busy_cores"] = load.cores()
    row["dispatch_cpu_ms_by_kind"] = {
        kind: (sum(C.run_ns(pid) for pid in pids) - ns0[kind]) / 1e6 / (k + warmup)
        for kind, pids in groups.items()}
    if statements:
        row["dispatch_statements"] = [
            {**st, **{key: st[key] / (k + warmup) for key in ("calls", "plan_ms", "exec_ms")}}
            for st in T.lab.top_statements(T.dbname)]
    lat, started, wall, failed = [], [], [], 0
    for tid, t0, t_seen in sent:
        t = p.task(tid)
        if t.state.value != "completed":
            failed += 1
            continue
        lat.append(t.completed_at - t0)
        started.append(t.started_at - t0)
        wall.append(t_seen - t0)
    s = C.summary_ms(lat)
    row.update(dispatch_n=len(lat), dispatch_p50_ms=s["p50"], dispatch_p99_ms=s["p99"],
               dispatch_max_ms=s["max"], started_p50_ms=C.summary_ms(started)["p50"],
               wall_p50_ms=C.summary_ms(wall)["p50"])
    if failed:
        row["notes"].append(f"dispatch: {failed} of {len(sent)} tasks did not complete")


def _finished_since(T: Target, lo: str) -> tuple[int, float | None, int]:
    r = T.tx("SELECT COUNT(*) AS n, MAX(completed_at) AS last, COUNT(DISTINCT agent_id) AS a "
             "FROM tasks WHERE id >= ? AND state IN ('completed', 'failed', 'cancelled')", (lo,))
    return r["n"], r["last"], r["a"]


def _wait_finished(count, n: int, timeout: float, what: str, stall_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while (k := count()) < n:
        if k != last:
            last, moved = k, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise RuntimeError(f"{what}: stuck at {k} of {n} tasks for {stall_s:g}s")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: only {k} of {n} tasks finished after {timeout:g}s")
        time.sleep(0.02)


def throughput(T: Target, backend: str, n: int, row: dict) -> None:
    p = T.p
    m = 20 * n
    specs = [p.spec(PROMPT[backend]) for _ in range(m)]
    t0 = time.time()
    tasks = p.add_tasks(specs)
    row["enqueue_s"] = time.time() - t0
    lo = min(t.id for t in tasks)
    assert _SAFE_ID.match(lo)
    _wait_finished(lambda: _finished_since(T, lo)[0], m, 600, "throughput")
    k, last, agents = _finished_since(T, lo)
    done = T.tx("SELECT COUNT(*) AS n FROM tasks WHERE id >= ? AND state = 'completed'", (lo,))
    row["throughput_tps"] = m / (last - t0)
    row["throughput_agents"] = agents
    if done["n"] != m:
        row["notes"].append(f"throughput: {m - done['n']} of {m} tasks did not complete")


def broadcast(T: Target, backend: str, n: int, repeats: int, row: dict) -> None:
    p = T.p
    times = []
    for _ in range(repeats):
        time.sleep(0.2)
        t0 = time.time()
        tasks = p.broadcast(PROMPT[backend])
        if len(tasks) != n:
            row["notes"].append(f"broadcast reached {len(tasks)} agents, not {n}")
        group = tasks[0].broadcast_id
        assert _SAFE_ID.match(group)

        def count(group=group):
            return T.tx("SELECT COUNT(*) AS n FROM tasks WHERE broadcast_id = ? AND state IN "
                        "('completed', 'failed', 'cancelled')", (group,))["n"]

        _wait_finished(count, len(tasks), 120, "broadcast")
        last = T.tx("SELECT MAX(completed_at) AS last FROM tasks WHERE broadcast_id = ?",
                    (group,))["last"]
        times.append(last - t0)
    row["broadcast_s"] = C.median(times)
    row["broadcast_each_s"] = [round(x, 3) for x in times]


def shut_down(T: Target, row: dict, linger_s: float = 15.0) -> None:
    logs = [T.tmp / f"down-{h.label}.log" for h in T.hosts]
    t0 = time.monotonic()
    downs = [T.popen(h, ["down"], log) for h, log in zip(T.hosts, logs)]
    _wait_cmds(downs, 120)
    row["down_s"] = time.monotonic() - t0
    for q, log, h in zip(downs, logs, T.hosts):
        if q.returncode:
            row["notes"].append(f"podium down on {h.label}: exit {q.returncode}: {_tail(log)}")
    at_once = marked(T.token)
    deadline = time.monotonic() + linger_s
    left = at_once
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked(T.token)
    lingered = time.monotonic() - t0 - row["down_s"]
    row["left_after_down"] = len(at_once)
    if at_once:
        workers = sum(is_worker(c) for c in at_once.values())
        row["notes"].append(
            f"after podium down: {len(at_once)} processes of the store still alive "
            f"({workers} workers; e.g. {next(iter(at_once.values()))[:100]!r}); "
            + (f"all gone {lingered:.1f}s later" if not left else
               f"{len(left)} still alive after {linger_s:g}s, killed: "
               f"{sorted(set(c[:80] for c in left.values()))[:3]}"))
    kill_marked(T.token)
    try:
        live = [a.id for a in T.p.store.list_agents() if a.state.live]
    except Exception as e:  # noqa: BLE001
        live = [f"(store unreadable: {str(e).strip()[:100]})"]
    if live:
        row["notes"].append(f"after podium down, {len(live)} agents still live in the store: "
                            f"{live[:5]}")


def run_row(system: str, lab: H.NetLab | None, backend: str, n: int, args) -> dict:
    row: dict = {"system": system, "backend": backend, "n": n, "notes": [], "error": None}
    token = secrets.token_hex(6)
    _tokens.append(token)
    T = None
    try:
        T = Target(system, lab, token, n, args.pg_host)
        start_up(T, backend, n, row)
        # The team at rest, not its first beats: every worker's first idle beat (a while
        # after it registered) comes before the window.
        time.sleep(1.0 if args.quick else SETTLE_S)
        idle_window(T, 3.0 if args.quick else 10.0, row)
        dispatch(T, backend, 30 if args.quick else DISPATCHES, 3 if args.quick else 10, row)
        throughput(T, backend, n, row)
        broadcast(T, backend, n, 2 if args.quick else 3, row)
    except Exception as e:  # noqa: BLE001 - a row that fails says so; the run goes on
        row["error"] = f"{type(e).__name__}: {str(e).strip()[:300]}"
    finally:
        if T is not None:
            try:
                shut_down(T, row)
            except Exception as e:  # noqa: BLE001
                row["notes"].append(f"down failed: {type(e).__name__}: {str(e)[:200]}")
                kill_marked(token)
            T.close()
    return row


# -- output ------------------------------------------------------------------------------------

def _f(x, fmt: str = ".2f") -> str:
    if x is None or isinstance(x, float) and x != x:
        return "-"
    return format(x, fmt)


def print_table(system: str, rows: list[dict]) -> None:
    headers = ["N", "backend", "start-up s", "idle CPU %", "(exact %)", "RSS MB", "PSS MB",
               "dispatch p50 ms", "p99 ms", "throughput tasks/s", "broadcast s", "down s"]
    if system == "pg":
        headers.append("hosts' server conns")
    out = []
    for r in rows:
        line = [str(r["n"]), r["backend"]] + [
            _f(r.get(key), fmt) for key, fmt in (
                ("startup_s", ".1f"), ("idle_pct", ".2f"), ("idle_exact_pct", ".3f"),
                ("rss_mb", ".1f"), ("pss_mb", ".1f"), ("dispatch_p50_ms", ".2f"),
                ("dispatch_p99_ms", ".2f"), ("throughput_tps", ".0f"), ("broadcast_s", ".3f"),
                ("down_s", ".1f"))]
        if system == "pg":
            line.append(str(r.get("server_conns", "-")))
        out.append(line)
    print(C.table(out, headers))
    for r in rows:
        what = []
        if r["error"]:
            what.append(f"FAILED: {r['error']}")
        what += r["notes"]
        if r.get("others_busy_cores") is not None:
            what.append(f"(idle window: other processes kept {r['others_busy_cores']:.2f} "
                        "cores busy; during the dispatches the machine was "
                        f"{r.get('dispatch_machine_busy_cores', float('nan')):.2f} cores busy)")
        if r.get("helpers"):
            what.append(f"helper processes: {r['helpers']} (PSS {r['helpers_pss_mb']:.1f} MB in "
                        f"total, idle CPU {r['idle_helpers_exact_pct']:.3f}% of a core, "
                        "counted in the idle column: " + ", ".join(
                            f"{k} {v:.3f}%" for k, v in
                            sorted(r.get("idle_helpers_by_kind_pct", {}).items())) + ")")
        if r.get("dispatch_cpu_ms_by_kind"):
            by_kind = r["dispatch_cpu_ms_by_kind"]
            what.append(f"CPU per dispatch {sum(by_kind.values()):.2f} ms: " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])))
        for w in what:
            print(f"  N={r['n']} {r['backend']}: {w}")
        if r.get("dispatch_statements"):
            print(f"  N={r['n']} {r['backend']}: the server's statements per dispatch "
                  "(pg_stat_statements; ms of planning and execution):")
            print(C.table([[f"{st['calls']:.2f}", f"{st['plan_ms']:.3f}", f"{st['exec_ms']:.3f}",
                            " ".join(st["query"].split())[:110]]
                           for st in r["dispatch_statements"]],
                          ["calls", "plan ms", "exec ms", "statement"]))


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        checks = [("idle <= 2% of a core", r.get("idle_pct"), TARGETS["idle_pct"], "%"),
                  ("dispatch p99 <= 10 ms", r.get("dispatch_p99_ms"), TARGETS["p99_ms"], " ms"),
                  ("start-up <= 20 s", r.get("startup_s"), TARGETS["startup_s"], " s"),
                  ("PSS <= 25 MB", r.get("pss_mb"), TARGETS["pss_mb"], " MB")]
        parts = []
        for name, v, lim, unit in checks:
            if v is None or v != v:
                parts.append(f"{name}: MISS (not measured)")
            else:
                parts.append(f"{name}: {'PASS' if v <= lim else 'MISS'} ({v:.2f}{unit})")
        exact = r.get("idle_exact_pct")
        if exact is not None and r.get("idle_pct") is not None and \
                (exact <= TARGETS["idle_pct"]) != (r["idle_pct"] <= TARGETS["idle_pct"]):
            parts[0] = parts[0][:-1] + (f"; by exact run time {exact:.2f}%: "
                                        f"{'PASS' if exact <= TARGETS['idle_pct'] else 'MISS'})")
        r["targets_ok"] = all(p.split(": ")[1].startswith("PASS") for p in parts)
        out.append(f"  {r['system']} {r['backend']} N={r['n']}: " + "; ".join(parts))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="10,50,100,200", help="comma list of agent counts")
    ap.add_argument("--backends", default="echo,shell", help="comma list: echo, shell")
    ap.add_argument("--systems", default="sqlite,pg", help="comma list: sqlite, pg")
    ap.add_argument("--quick", action="store_true",
                    help="shorter idle window (3 s), 30 dispatches, 2 broadcasts")
    ap.add_argument("--json", metavar="PATH", help="also write the results here")
    ap.add_argument("--pg-host", choices=["auto", "on", "off"],
                    help="PODIUM_PG_HOST for the PostgreSQL hosts' commands (default: unset, "
                         "i.e. Podium's default); 'off': every process connects on its own")
    ap.add_argument("--pg-statements", action="store_true",
                    help="load pg_stat_statements in the benchmark's server and print, per "
                         "dispatch, the statements that took most of its time")
    ap.add_argument("--pg-conf", action="append", default=[], metavar="LINE",
                    help="a line added to the benchmark's server's postgresql.conf (a what-if; "
                         "repeatable), e.g. 'synchronous_commit = off'")
    args = ap.parse_args()
    ns = [int(x) for x in args.n.split(",") if x.strip()]
    backends = [x.strip() for x in args.backends.split(",") if x.strip()]
    systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    for b in backends:
        if b not in PROMPT:
            ap.error(f"unknown backend {b!r}")
    for s in systems:
        if s not in ("sqlite", "pg"):
            ap.error(f"unknown system {s!r}")
    import atexit
    atexit.register(_kill_all_marked)

    import podium

    where = str(Path(podium.__file__).resolve().parent)
    busy = C.others_busy()
    print(f"podium from {where}")
    print(f"scale: N = {ns}, backends {backends}, systems {systems}"
          f"{' (quick)' if args.quick else ''}; {C.machine()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; other load before start: "
          f"{busy:.2f} cores busy", flush=True)
    results: dict = {"machine": C.machine(), "load_before": busy, "quick": args.quick,
                     "pg_host": args.pg_host, "podium": where,
                     "rows": []}
    ok = True
    for system in systems:
        lab = None
        rows: list[dict] = []
        title = ("SQLite (one machine, synchronous=NORMAL)" if system == "sqlite" else
                 "PostgreSQL (agents split over 2 network-namespace hosts"
                 + (f", PODIUM_PG_HOST={args.pg_host}" if args.pg_host else "") + ")")
        print(f"\n== {title}", flush=True)
        setup_error = None
        if system == "pg":
            why = H.netns_unavailable()
            if why:
                setup_error = f"no namespace hosts here: {why}"
            else:
                try:
                    lab = H.NetLab(2, statements=args.pg_statements,
                                   conf=tuple(args.pg_conf))
                    lab.up()
                    print(f"  server: PostgreSQL {lab.setting('server_version')} owned by the "
                          f"benchmark, max_connections = {lab.setting('max_connections')}, "
                          f"on {', '.join(lab.server_ips)} port {lab.port}"
                          + "".join(f"; {line}" for line in args.pg_conf), flush=True)
                except Exception as e:  # noqa: BLE001
                    setup_error = f"could not set up the hosts and server: {e}"
        try:
            for n in ns:
                for backend in backends:
                    if setup_error:
                        row = {"system": system, "backend": backend, "n": n, "notes": [],
                               "error": setup_error}
                    else:
                        row = run_row(system, lab, backend, n, args)
                    rows.append(row)
                    status = f"FAILED: {row['error']}" if row["error"] else "done"
                    print(f"  N={n} {backend}: {status} (load average "
                          f"{os.getloadavg()[0]:.2f})", flush=True)
        finally:
            if lab is not None:
                lab.down()
        print()
        print_table(system, rows)
        big = [r for r in rows if r["n"] == max(ns)]
        if max(ns) == 200:
            print("targets at 200 agents:")
        else:
            print(f"targets (meant for 200 agents; shown for N={max(ns)}):")
        for line in verdicts(big):
            print(line)
        ok = ok and all(r.get("targets_ok") for r in big)
        results["rows"] += rows
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.json}")
    return C.verdict(ok)


if __name__ == "__main__":
    sys.exit(main())
