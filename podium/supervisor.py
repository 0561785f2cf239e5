"""Starting and stopping background workers on this machine (``podium up`` / ``podium down``).

Workers are ordinary ``podium agent run`` processes in their own sessions, logging to
``<store dir>/logs/<name>.log``, forked by one spawner that imported Podium once
(``podium.agents.spawner``); the store, not this module, knows which are alive, and this
module asks it only through the service. When the store cannot answer, ``down_local`` stops
them by the records each worker keeps on this host (``podium.service.local``).
"""

from __future__ import annotations

import json
import os
import select
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
from podium.errors import NotFound, PodiumError, StoreError
from podium.models import Agent, AgentState
from podium.service import Podium
from podium.service.hosting import ensure_host_daemon, release_host_helpers
from podium.service.local import local_agents, running_here, store_url_of


def log_dir(podium: Podium) -> Path:
    return podium.home / "logs"


def free_names(podium: Podium, n: int, prefix: str) -> list[str]:
    """The first ``n`` names ``PREFIX-i`` that no agent holds: not a live one's, nor a dead
    one's whose worker still runs here (its lease ran out, its process did not)."""
    taken = {a.id for a in podium.agents() if a.state.live or
             a.state is AgentState.DEAD and running_here(a, podium.url)}
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
       wait_s: float | None = None,
       progress: Callable[[int, int], None] | None = None) -> list[Agent]:
    """Start ``n`` workers in the background and wait until each has registered (at most
    ``wait_s``; by default 20 s and a quarter of a second per agent: a margin, on a busy
    machine, over the ~4 s that 200 forked workers took on 2 cores, bench/scale.py)."""
    if n < 1:
        raise PodiumError("the number of agents must be at least 1")
    if wait_s is None:
        wait_s = 20.0 + 0.25 * n
    ensure_host_daemon(podium)  # (PostgreSQL: the workers share this host's connections)
    podium.private_home()  # (.podium/ of a PostgreSQL store: made here, private)
    logs = log_dir(podium)
    logs.mkdir(mode=0o700, exist_ok=True)
    names = free_names(podium, n, prefix)
    started = time.time()
    log_starts = {}  # (where this start's lines begin in each appended log)
    requests = []
    for name in names:
        # (private whatever the umask: a log holds prompts and outputs)
        log = logs / f"{name}.log"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        log_starts[name] = os.fstat(fd).st_size
        os.close(fd)
        argv = worker_argv(podium, name, backend, roles, options, lease_s, workdir)
        requests.append({"argv": argv[3:], "log": str(log)})  # (after "python -m podium")
    spawner = _Spawner(requests)

    def check() -> None:
        for nm, code in spawner.exits().items():
            with open(logs / f"{nm}.log", "rb") as f:
                f.seek(log_starts[nm])
                tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
            if not tail and shutil.disk_usage(logs).free < 64 * 1024:
                tail = [f"it could not write its log: the disk holding {logs} is full"]
            raise PodiumError(f"agent {nm} exited with code {code} during start-up: "
                              + " | ".join(tail))

    try:
        return wait_registered(podium, names, started, wait_s, check, f"see {logs}",
                               pids=spawner.pids, progress=progress)
    finally:
        spawner.close()


class _Spawner:
    """``podium.agents.spawner`` in a process of its own, forking the workers asked for; their
    pids, and the exit codes of those that exit while it runs."""

    def __init__(self, requests: list[dict]):
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "podium.agents.spawner"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=None, start_new_session=True, close_fds=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        self._exits: dict[str, int] = {}
        try:
            self._in.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests) + b"{}\n")
            self._in.flush()
            self.pids: dict[str, int] = {}
            while len(self.pids) < len(requests):
                self._read(block=True)
        except (OSError, ValueError) as e:
            self.close()
            raise PodiumError(f"could not start the agents: the spawner failed ({e})") from None

    def _read(self, block: bool) -> None:
        while block or select.select([self._out], [], [], 0)[0]:
            line = self._out.readline()
            if not line:
                raise OSError(f"it exited with code {self._proc.wait()}")
            message = json.loads(line)
            if "pid" in message:
                self.pids[message["name"]] = message["pid"]
            else:
                self._exits[message["name"]] = message["exit"]
            block = False

    def exits(self) -> dict[str, int]:
        """The workers that have exited so far, with their exit codes."""
        try:
            self._read(block=False)
        except (OSError, ValueError):
            pass  # (the spawner itself gone: what it said is what there is)
        return dict(self._exits)

    def close(self) -> None:
        """Let the spawner go; the workers run on."""
        try:
            self._in.close()
        except OSError:
            pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._out.close()


def wait_registered(podium: Podium, names: list[str], started: float, wait_s: float,
                    check: Callable[[], None] | None = None, hint: str = "",
                    pids: dict[str, int] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> list[Agent]:
    """Wait until every named agent registered after ``started`` (with the given pids)."""
    ready = podium.wait_registered(names, started - 1, wait_s, pids, check, progress)
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


def down(podium: Podium, timeout_s: float = 15.0, drain: bool = False,
         names: list[str] | None = None) -> list[str]:
    """Stop the live agents of this host: SIGTERM (SIGINT to drain), then SIGKILL at timeout;
    then kill the programs their tasks left running (a killed worker cannot); with the last
    agent gone, the host's helpers go too (``release_host_helpers``). Raises
    StoreError only when the store cannot list them, before anything is stopped (then
    ``down_local`` can stop them by this host's records); a store failing later is done
    without: the processes are watched by pid, and a lease records what a deregistration
    could not."""
    host = socket.gethostname()
    agents = podium.agents()
    unknown = sorted(set(names or ()) - {a.id for a in agents})
    if unknown:  # (nothing is stopped: a typo must not pass for "stopped 0 agents")
        raise NotFound(f"unknown agent{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(map(repr, unknown))}: 'podium agents' lists them")
    # Each with its pid. (A hung worker whose lease ran out is marked dead, yet runs on: it is
    # stopped too.)
    targets = [(a, a.pid) for a in agents
               if a.host == host and a.pid and (names is None or a.id in names)
               and (a.state.live or a.state is AgentState.DEAD and running_here(a, podium.url))]
    store = _StoreView(podium)
    sig = signal.SIGINT if drain else signal.SIGTERM
    for _, pid in targets:
        if _alive(pid):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    pending = {a.id: pid for a, pid in targets}
    while pending and time.monotonic() < deadline:
        for aid, pid in list(pending.items()):
            if not _alive(pid) or store.live(aid) is False:
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
        if store.live(a.id):
            try:
                podium.deregister(a.id)
            except StoreError:
                store.podium = None  # (its lease runs out instead)
        # Found by their environment (see podium.orphans): nothing the agent started survives it.
        orphans.kill(podium.url, a.id)
    sessions = {a.meta["tmux_session"] for a, _ in targets
                if a.meta.get("tmux_session") is not None}
    if sessions and names is None:
        from podium.tmux import Tmux

        for session in sessions:
            Tmux(socket_path=next(a.meta.get("tmux_socket") for a, _ in targets
                                  if a.meta.get("tmux_session") == session)).kill_session(session)
    release_host_helpers(podium.url)
    return [a.id for a, _ in targets]


class _StoreView:
    """What ``down`` asks the store once the agents are listed; after the store first fails it
    is not asked again (each try could wait for a connection), and only pids are watched."""

    def __init__(self, podium: Podium):
        self.podium: Podium | None = podium

    def live(self, agent_id: str) -> bool | None:
        """Whether the store has the agent live; None when it cannot say."""
        if self.podium is None:
            return None
        try:
            return self.podium.agent(agent_id).state.live
        except StoreError:
            self.podium = None
            return None


def down_local(store_url: str | None, timeout_s: float = 15.0, drain: bool = False,
               names: list[str] | None = None) -> list[str]:
    """``down`` without the store: stop the agents of the store at ``store_url`` that this
    host's own records name (``podium.service.local``) — SIGTERM (SIGINT to drain), SIGKILL
    with their process groups at timeout — then what their tasks left running; their names.
    Their leases, still held in the store, expire and are recovered once it is back."""
    url = store_url_of(store_url)
    targets = [a for a in local_agents(url) if names is None or a.name in names]
    sig = signal.SIGINT if drain else signal.SIGTERM
    for a in targets:
        a.signal(sig)
    deadline = time.monotonic() + timeout_s
    pending = list(targets)
    while pending and time.monotonic() < deadline:
        pending = [a for a in pending if a.running()]
        if pending:
            time.sleep(0.05)
    for a in pending:
        a.kill()
    end = time.monotonic() + 2
    while any(a.running() for a in pending) and time.monotonic() < end:
        time.sleep(0.02)
    for a in targets:
        orphans.kill(url, a.name)
    release_host_helpers(url)
    return [a.name for a in targets]
