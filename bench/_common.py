"""Shared helpers of the benchmarks: statistics, child processes, CPU accounting, temp stores.

Every child process a benchmark starts is registered here and ended (by pid, then its own
descendants by pid) when the benchmark exits, on error or on Ctrl-C too.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- statistics -----------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(1, math.ceil(q / 100.0 * len(s)))
    return s[min(k, len(s)) - 1]


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max (and n) of durations given in seconds, as milliseconds."""
    v = [x * 1000.0 for x in values_s]
    return {"n": len(v), "p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99),
            "max": max(v) if v else float("nan"), "min": min(v) if v else float("nan")}


def ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    out = []
    for i, r in enumerate([headers, *rows]):
        out.append("  ".join(str(x).rjust(w) if j else str(x).ljust(w)
                             for j, (x, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> str:
    import platform
    import sqlite3
    return (f"{os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}")


# -- processes ------------------------------------------------------------------------------

_children: list[subprocess.Popen] = []
_tempdirs: list[Path] = []


def descendants(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid`` (read from /proc)."""
    parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2:].split()
        parent.setdefault(int(rest[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in parent.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def spawn(argv: list[str], log: Path | None = None, **kw) -> subprocess.Popen:
    """Start a child in its own session (so a terminal ^C reaches only us); ended at exit."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", out), stderr=kw.pop("stderr", out),
                             stdin=kw.pop("stdin", subprocess.DEVNULL), start_new_session=True,
                             cwd=kw.pop("cwd", str(ROOT)), **kw)
    finally:
        if log:
            out.close()
    _children.append(p)
    return p


def stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal each process by pid, wait, then SIGKILL it and any descendants left behind."""
    procs = [p for p in procs if p is not None]
    kids: dict[int, list[int]] = {}
    for p in procs:
        if p.poll() is None:
            kids[p.pid] = descendants(p.pid)
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    for pid_list in kids.values():
        for pid in pid_list:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for p in procs:
        if p in _children:
            _children.remove(p)


def _cleanup() -> None:
    if _children:
        stop(list(_children), signal.SIGTERM, timeout=5.0)
    for d in _tempdirs:
        shutil.rmtree(d, ignore_errors=True)
        # The store's wake-up socket directory: $XDG_RUNTIME_DIR/podium/<hash> or
        # /tmp/podium-<uid>/<hash>.
    _tempdirs.clear()


atexit.register(_cleanup)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def tempdir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"podium-bench-{prefix}-"))
    _tempdirs.append(d)
    return d


def remove_wake_dir(db: Path) -> None:
    """Remove the wake-up socket directory Podium made for the store ``db``."""
    try:
        from podium.wake import channel_dir
        shutil.rmtree(channel_dir(str(db.resolve())), ignore_errors=True)
    except Exception:
        pass


def podium_url(db: Path, sync: str) -> str:
    return f"sqlite://{db}?synchronous={sync}"


def podium_store(prefix: str, sync: str, log_name: str = "workers.log"):
    """A fresh temporary SQLite store: (directory, db path, URL, worker log path, Podium)."""
    from podium.service import Podium

    tmp = tempdir(prefix)
    db = tmp / "podium.db"
    url = podium_url(db, sync)
    return tmp, db, url, tmp / log_name, Podium.open(url)


_POKE_BLOCKS: bool | None = None


def poke_blocks() -> bool:
    """Does the installed Podium's ``Listener.poke`` block once its socket queue is full?

    A worker with an inline backend (echo) pokes its own socket after every task and drains it
    only when the queue runs empty, so with a blocking poke it hangs after ~11 tasks in a row.
    """
    global _POKE_BLOCKS
    if _POKE_BLOCKS is None:
        import threading

        from podium.wake import Listener

        d = Path(tempfile.mkdtemp(prefix="podium-bench-poke-"))
        lst = Listener(d / "a.sock")
        t = threading.Thread(target=lambda: [lst.poke() for _ in range(64)], daemon=True)
        t.start()
        t.join(2.0)
        _POKE_BLOCKS = t.is_alive()
        while t.is_alive():
            lst.drain()
            t.join(0.05)
        lst.close()
        shutil.rmtree(d, ignore_errors=True)
    return _POKE_BLOCKS


def podium_worker(url: str, name: str, backend: str = "echo", options: Sequence[str] = (),
                  lease: float | None = None, log: Path | None = None,
                  patched: bool = False) -> subprocess.Popen:
    """A real ``python -m podium agent run`` process (``patched``: via bench/_worker.py)."""
    launcher = ([str(Path(__file__).resolve().parent / "_worker.py")] if patched
                else ["-m", "podium"])
    argv = [PY, *launcher, "--store", url, "agent", "run", "--name", name,
            "--backend", backend]
    for o in options:
        argv += ["--option", o]
    if lease is not None:
        argv += ["--lease", str(lease)]
    return spawn(argv, log=log)


def wait_agents_idle(store, names: Sequence[str], procs: Sequence[subprocess.Popen],
                     timeout: float = 120.0, log: Path | None = None) -> None:
    """Until every named agent is registered and idle (its worker sleeps on its socket)."""
    want = set(names)
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if p.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"worker pid {p.pid} exited with {p.returncode}\n{tail}")
        idle = {a.id for a in store.list_agents() if a.state.value == "idle"}
        if want <= idle:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"agents not idle after {timeout}s: {sorted(want - idle)[:5]}...")
        time.sleep(0.05)


# -- CPU accounting -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its own threads; not its waited-for children)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    rest = data[data.rfind(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def cpu_of(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def run_ns(pid: int) -> int:
    """CPU time in ns of the live threads of ``pid`` (schedstat: exact, not tick-rounded)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def run_ns_of(pids: Sequence[int]) -> int:
    return sum(run_ns(p) for p in pids)


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [float(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class HostLoad:
    """Machine-wide CPU busy (all processes, ours and others') over an interval, in cores."""

    def __init__(self):
        self.a = host_cpu()

    def cores(self) -> float:
        b = host_cpu()
        total = b[1] - self.a[1]
        return (b[0] - self.a[0]) / total * (os.cpu_count() or 1) if total else float("nan")


def others_busy(window: float = 1.0) -> float:
    """Cores busy over ``window`` seconds before we start (other tenants of the machine)."""
    h = HostLoad()
    time.sleep(window)
    return h.cores()


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"\n== {title}", flush=True)
    yield


def verdict(ok: bool) -> int:
    """Exit status for a benchmark that ran: 0, or 1 on a missed target when BENCH_STRICT=1."""
    return 0 if ok or os.environ.get("BENCH_STRICT") != "1" else 1


def fmt_ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


class FifoStamps:
    """When did a spawned command begin? It writes its number to a FIFO with ``echo N > path``
    (a builtin of every shell, so nothing more is spawned); a thread here stamps each line's
    arrival with ``time.time()``. The stamp includes that thread's wake-up, so it errs late, and
    the same way for every system measured."""

    def __init__(self, directory: Path):
        import threading

        self.path = directory / "began.fifo"
        os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDWR)  # both ends: writers never block on open
        self.times: dict[int, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def command(self, i: int) -> str:
        return f"echo {i} > {self.path}"

    def wait(self, ids, timeout: float = 10.0) -> dict[int, float]:
        """The stamps of ``ids``, once the reader thread has seen them all."""
        deadline = time.monotonic() + timeout
        while any(i not in self.times for i in ids):
            if time.monotonic() > deadline:
                missing = [i for i in ids if i not in self.times]
                raise RuntimeError(f"no start stamp from commands {missing[:10]}")
            time.sleep(0.01)
        return self.times

    def _read(self) -> None:
        buf = b""
        while True:
            data = os.read(self.fd, 4096)
            t = time.time()
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line == b"stop":
                    return
                self.times[int(line)] = t

    def close(self) -> None:
        os.write(self.fd, b"stop\n")
        self.thread.join(timeout=5)
        os.close(self.fd)
