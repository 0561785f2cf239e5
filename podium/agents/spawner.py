"""Starting many workers at once: one Python that has imported Podium forks each of them.

A worker started as a new ``python -m podium agent run`` spends ~0.15-0.2 s of CPU importing
Podium (and psycopg) before it does anything: 200 of them took 28 s on 2 cores
(bench/scale.py), and each held its own copy of those modules. ``podium up`` instead starts
this module once (``python -m podium.agents.spawner``, so it has opened no store and started
no thread), which imports what a worker needs and then forks one child per worker. A child
starts its own session, writes to its log, and runs the same command line a worker started
by hand would (``podium agent run --name ...``): the same code from there on. Pages of the
imported modules stay shared until written.

The protocol, over the spawner's stdin and stdout, one JSON object per line:

- in: ``{"argv": [...], "log": "<path>"}`` per worker (``argv`` as after ``podium``); the end
  of the list is a line ``{}``;
- out: ``{"name": ..., "pid": N}`` for each worker forked, then ``{"name": ..., "exit": code}``
  for each that exits while the spawner runs (a worker that failed to start);
- the spawner exits when its stdin closes (``podium up`` has seen the workers register); the
  workers run on, as the children of an exited ``podium up`` did before.

A child must not inherit a thread (fork copies only the calling one, and with it every lock
another thread held): if the imports started one, each worker is exec'd afresh instead.
"""

from __future__ import annotations

import json
import os
import select
import sys
import threading
from typing import Any


def _worker_name(argv: list[str]) -> str:
    return argv[argv.index("--name") + 1] if "--name" in argv else "?"


def _child(argv: list[str], log: str) -> None:
    """In the forked child: become the worker (never returns)."""
    code = 1
    try:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 1024)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the worker's own, for its life
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        name = _worker_name(argv)
        try:  # what ps and top show as its name (its command line stays the spawner's)
            with open("/proc/self/comm", "w") as comm:
                comm.write(f"podium {name}"[:15])
        except OSError:
            pass
        if threading.active_count() > 1:  # (see the module's docstring)
            os.execv(sys.executable, [sys.executable, "-m", "podium", *argv])
        from podium.cli import main

        sys.argv = ["podium", *argv]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - a child must never return into the spawner
        try:
            os.write(2, f"podium: error: the worker could not start: {e}\n".encode())
        except OSError:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _send(out: Any, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def main() -> None:
    # What every worker imports, once, before the first fork.
    import podium.agents.worker  # noqa: F401
    import podium.cli  # noqa: F401

    requests = []
    while request := json.loads(sys.stdin.readline() or "{}"):
        requests.append(request)
    if any("postgres" in arg for r in requests for arg in r["argv"]):
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401

        import podium.store.postgres  # noqa: F401
    names: dict[int, str] = {}
    for r in requests:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(r["argv"], r["log"])
        names[pid] = _worker_name(r["argv"])
        _send(sys.stdout, {"name": names[pid], "pid": pid})
    # Until podium up is done with us: report the workers that exit.
    while True:
        while names:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in names:
                code = os.waitstatus_to_exitcode(status)
                _send(sys.stdout, {"name": names.pop(pid), "exit": code})
        ready, _, _ = select.select([sys.stdin], [], [], 0.05)
        if ready and not sys.stdin.readline():
            return


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
