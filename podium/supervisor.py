"""Starting and stopping background workers on this machine (``podium up`` / ``podium down``).

Workers are ordinary ``podium agent run`` processes in their own sessions, logging to
``<store dir>/logs/<name>.log``; the store, not this module, knows which are alive, and this
module asks it only through the service.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from podium import orphans, pids
from podium.errors import PodiumError
from podium.models import Agent, AgentState
from podium.service import Podium


def log_dir(podium: Podium) -> Path:
    return podium.home / "logs"


def free_names(podium: Podium, n: int, prefix: str) -> list[str]:
    taken = {a.id for a in podium.agents() if a.state.live}
    names: list[str] = []
    i = 1
    while len(names) < n:
        name = f"{prefix}-{i}"
        if name not in taken:
            names.append(name)
        i += 1
    return names


def worker_argv(podium: Podium, name: str, backend: str, roles: list[str],
                options: list[str], lease_s: float | None, workdir: str | None) -> list[str]:
    argv = [sys.executable, "-m", "podium", "--store", podium.url, "agent", "run",
            "--name", name, "--backend", backend]
    for r in roles:
        argv += ["--role", r]
    for o in options:
        argv += ["--option", o]
    if lease_s is not None:
        argv += ["--lease", str(lease_s)]
    if workdir:
        argv += ["--workdir", workdir]
    return argv


def up(podium: Podium, n: int, backend: str, roles: list[str], options: list[str],
       prefix: str = "agent", lease_s: float | None = None, workdir: str | None = None,
       wait_s: float = 20.0) -> list[Agent]:
    """Start ``n`` workers in the background and wait until each has registered."""
    if n < 1:
        raise PodiumError("the number of agents must be at least 1")
    logs = log_dir(podium)
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = free_names(podium, n, prefix)
    started = time.time()
    procs = {}
    log_starts = {}  # (where this start's lines begin in each appended log)
    for name in names:
        # (private whatever the umask: a log holds prompts and outputs)
        fd = os.open(logs / f"{name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        log_starts[name] = os.fstat(fd).st_size
        with open(fd, "ab") as log:
            procs[name] = subprocess.Popen(
                worker_argv(podium, name, backend, roles, options, lease_s, workdir),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True)

    def check() -> None:
        for nm, p in procs.items():
            if p.poll() is not None:
                with open(logs / f"{nm}.log", "rb") as f:
                    f.seek(log_starts[nm])
                    tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
                if not tail and shutil.disk_usage(logs).free < 64 * 1024:
                    tail = [f"it could not write its log: the disk holding {logs} is full"]
                raise PodiumError(f"agent {nm} exited with code {p.returncode} during start-up: "
                                  + " | ".join(tail))

    return wait_registered(podium, names, started, wait_s, check, f"see {logs}",
                           pids={nm: p.pid for nm, p in procs.items()})


def wait_registered(podium: Podium, names: list[str], started: float, wait_s: float,
                    check: Callable[[], None] | None = None, hint: str = "",
                    pids: dict[str, int] | None = None) -> list[Agent]:
    """Wait until every named agent registered after ``started`` (with the given pids)."""
    ready = podium.wait_registered(names, started - 1, wait_s, pids, check)
    if len(ready) < len(names):
        raise PodiumError(f"agents did not register within {wait_s:g}s; {hint}".rstrip("; "))
    return ready


def up_tmux(podium: Podium, n: int, backend: str, roles: list[str], options: list[str],
            prefix: str = "agent", lease_s: float | None = None, workdir: str | None = None,
            session: str = "podium", interactive: str | None = None,
            wait_s: float = 30.0) -> list[Agent]:
    """Start ``n`` agents in panes of a new tmux session, with a dashboard pane."""
    from podium.tmux import Tmux

    if n < 1:
        raise PodiumError("the number of agents must be at least 1")
    names = free_names(podium, n, prefix)
    base = [sys.executable, "-m", "podium", "--store", podium.url]
    panes = []
    for name in names:
        if interactive:
            argv = [*base, "agent", "interactive", "--name", name]
            for r in roles:
                argv += ["--role", r]
            argv += ["--", *shlex.split(interactive)]
        else:
            argv = worker_argv(podium, name, backend, roles, options, lease_s, workdir)
            argv.append("--echo-output")
        panes.append((name, "exec " + shlex.join(argv)))
    dashboard = "exec " + shlex.join([*base, "dashboard"])
    started = time.time()
    tmux = Tmux.from_env()
    cwd = str(Path(workdir).resolve()) if workdir else os.getcwd()
    env_cmd = f"export PODIUM_TMUX_SESSION={shlex.quote(session)}; "
    tmux.create_team(session, env_cmd + dashboard, [(nm, env_cmd + c) for nm, c in panes], cwd)
    try:
        return wait_registered(podium, names, started, wait_s,
                               hint=f"look at the panes: tmux attach -t {session}")
    except PodiumError:
        tmux.kill_session(session)
        raise


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own child (otherwise a zombie looks alive)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    return pids.exists(pid)


def _runs_agent(pid: int, agent_id: str) -> bool:
    """Whether process ``pid`` is still the worker of ``agent_id`` (not a pid reused since)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    name = agent_id.encode()
    return any(a == b"--name" and b == name for a, b in zip(argv, argv[1:]))


def down(podium: Podium, timeout_s: float = 15.0, drain: bool = False,
         names: list[str] | None = None) -> list[str]:
    """Stop the live agents of this host: SIGTERM (SIGINT to drain), then SIGKILL at timeout;
    then kill the programs their tasks left running (a killed worker cannot)."""
    host = socket.gethostname()
    # Each with its pid. (A hung worker whose lease ran out is marked dead, yet runs on: it is
    # stopped too.)
    targets = [(a, a.pid) for a in podium.agents()
               if a.host == host and a.pid and (names is None or a.id in names)
               and (a.state.live or a.state is AgentState.DEAD and _runs_agent(a.pid, a.id))]
    sig = signal.SIGINT if drain else signal.SIGTERM
    for _, pid in targets:
        if _alive(pid):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    pending = {a.id: pid for a, pid in targets}
    while pending and time.monotonic() < deadline:
        for aid, pid in list(pending.items()):
            if not _alive(pid) or not podium.agent(aid).state.live:
                pending.pop(aid)
        if pending:
            time.sleep(0.05)
    for pid in pending.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    # Wait for stopped workers to be reaped, and record the ones that could not deregister.
    for a, pid in targets:
        end = time.monotonic() + 2
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.02)
        if podium.agent(a.id).state.live:
            podium.deregister(a.id)
        # Found by their environment (see podium.orphans): nothing the agent started survives it.
        orphans.kill(podium.url, a.id)
    sessions = {a.meta["tmux_session"] for a, _ in targets
                if a.meta.get("tmux_session") is not None}
    if sessions and names is None:
        from podium.tmux import Tmux

        for session in sessions:
            Tmux(socket_path=next(a.meta.get("tmux_socket") for a, _ in targets
                                  if a.meta.get("tmux_session") == session)).kill_session(session)
    return [a.id for a, _ in targets]
