"""PostgreSQL connections are bounded per host, not per agent (``podium.store.pghost``).

Two hosts for real (``test_hosts_*``)
    A PostgreSQL server owned by the test (``initdb`` in a temporary directory, run as the
    ``postgres`` OS user) with ``max_connections = 40``, listening only on the root-side ends of
    two veth links, one per network namespace; each namespace has its own host name (``unshare
    --uts``) and its own ``XDG_RUNTIME_DIR``, as two machines would. ``podium up 30`` on each
    starts 60 agents, which would need ~180 connections on their own: with one host daemon each
    (one LISTEN connection, PgBouncer's pool of 8) the server sees ~20. The agents run 200
    tasks, each exactly once, and ``podium down`` on each host stops them, the daemons with them.
    And the server restarts under a host's daemon: it listens again, and its PgBouncer serves
    the same workers, woken through the relay.

Loopback (``test_loopback_*``, always runs when PostgreSQL does)
    30 agents on this machine's server, in a fresh schema: the connections to the server from
    this host's processes are counted from the client side (``ss -tnp``: which process owns
    each TCP connection to the server's port), so other users of the server do not count.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import all_events, wait_for
from netlab import Links, OwnServer, sh, unavailable
from podium import pids
from podium.models import TaskSpec, TaskState
from podium.store import open_store

POOL = 8  # PgBouncer's server connections per host (the default, PODIUM_PG_POOL)


def _private_tmp(prefix: str) -> Path:
    """A short (socket paths are limited to ~108 bytes) 0700 directory."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o700)
    return d


class Place:
    """Where ``podium`` commands run: a namespace with its own host name, runtime directory
    and working directory, or this machine as it is (``netns`` None)."""

    def __init__(self, label: str, url: str, netns: str | None = None):
        self.label = label
        self.url = url
        self.netns = netns
        self.hostname = f"podium-conn-{label}" if netns else socket.gethostname()
        self.runtime = _private_tmp(f"pdx{label}")  # (XDG_RUNTIME_DIR: the daemon's files)
        self.cwd = _private_tmp(f"pdw{label}")  # (logs/ of podium up)
        self.path: str | None = None  # (PATH, when not this process's)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        if self.path is not None:
            env["PATH"] = self.path
        return {**env, "XDG_RUNTIME_DIR": str(self.runtime)}

    def wrap(self, argv: list[str]) -> list[str]:
        if self.netns is None:
            return argv
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname, *argv]

    def podium(self, *args: str, timeout: float = 60) -> str:
        argv = self.wrap([sys.executable, "-m", "podium", "--store", self.url, *args])
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env(),
                           cwd=self.cwd)
        assert r.returncode == 0, f"podium {' '.join(args)} on {self.label}: {r.stderr}"
        return r.stdout

    def daemon_dirs(self) -> list[Path]:
        """The host daemons' directories that say a daemon is serving."""
        return [p.parent for p in (self.runtime / "podium").glob("pg.*/state.json")]

    def cleanup(self) -> None:
        # (a test that failed midway leaves its agents up: stop them, as its end would have)
        argv = self.wrap([sys.executable, "-m", "podium", "--store", self.url, "down"])
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(argv, capture_output=True, timeout=60, env=self.env(), cwd=self.cwd)
        for d in (self.runtime, self.cwd):
            shutil.rmtree(d, ignore_errors=True)


def up(place: Place, n: int, prefix: str) -> list[dict]:
    agents = json.loads(place.podium("up", str(n), "--backend", "shell", "--prefix", prefix,
                                     "--lease", "20", "--json", timeout=90))
    assert len(agents) == n
    return agents


def check_exactly_once(store, ids: list[str]) -> dict[str, int]:
    """Every task completed once, by one claim; returns how many each host ran."""
    per_host: dict[str, int] = {}
    by_task: dict[str, list[str]] = {t: [] for t in ids}
    for ev in all_events(store):
        if ev.task_id in by_task:
            by_task[ev.task_id].append(ev.kind)
    for tid in ids:
        t = store.get_task(tid)
        assert t.state is TaskState.COMPLETED, (tid, t.state, t.error)
        assert t.attempts == 1, (tid, t.attempts)
        kinds = by_task[tid]
        assert kinds.count("task.completed") == 1, (tid, kinds)
        assert kinds.count("task.claimed") <= 1, (tid, kinds)
        assert not {"task.requeued", "task.stale_result", "task.failed"} & set(kinds), kinds
        host = t.output.decode().strip()
        per_host[host] = per_host.get(host, 0) + 1
    return per_host


# -- two hosts for real: network namespaces -----------------------------------------------------

class SmallServer(OwnServer):
    """Two namespaces linked to the root namespace, and a PostgreSQL server with
    ``max_connections = 40`` on the root-side ends of the links."""

    MAX_CONNECTIONS = 40

    def __init__(self):
        super().__init__("podium-pg-conn-")
        self.links = Links(78, "pdc")
        self.netns: list[str] = []
        self.server_ips: list[str] = []

    def up(self) -> None:
        self.links.add("ab")
        self.netns = list(self.links.netns.values())
        self.server_ips = list(self.links.root_ip.values())
        self.start(self.server_ips, f"max_connections = {self.MAX_CONNECTIONS}\n"
                                    "synchronous_commit = off\n")
        with self.admin() as conn:
            conn.execute("CREATE DATABASE podium")

    def url(self, i: int) -> str:
        return f"postgresql://podium@{self.server_ips[i]}:{self.port}/podium"

    def tcp_connections(self) -> int:
        """Client connections over the links (the hosts'), as the server counts them."""
        with self.admin() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                "'client backend' AND client_addr IS NOT NULL").fetchone()[0]

    def down(self) -> None:
        self.links.down()
        self.stop()


@pytest.fixture
def small_server():
    why = unavailable("pgbouncer")
    if why:
        pytest.skip(f"cannot run two hosts here ({why}); the loopback variant runs instead")
    server = SmallServer()
    try:
        server.up()
        yield server
    finally:
        server.down()


class Sampler:
    """The most connections the server had, sampled every 50 ms in a thread."""

    def __init__(self, count):
        self.count = count
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.most = max(self.most, self.count())
            except Exception:
                pass

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


def test_hosts_60_agents_on_a_40_connection_server(small_server):
    hosts = [Place(label, small_server.url(i), small_server.netns[i])
             for i, label in enumerate("ab")]
    hosts[0].podium("init")
    sampler = Sampler(small_server.tcp_connections)
    store = None
    try:
        up(hosts[0], 30, "a")
        up(hosts[1], 30, "b")
        # One daemon per host, each in its own runtime directory, with its own PgBouncer.
        for h in hosts:
            assert len(h.daemon_dirs()) == 1, h.label
            state = json.loads((h.daemon_dirs()[0] / "state.json").read_text())
            assert state["bouncer"] and state["pool"] == POOL, state
        time.sleep(1.0)  # (all 60 idle now)
        idle = small_server.tcp_connections()
        # Each host: 1 LISTEN + at most POOL server connections. (60 agents alone: ~180.)
        assert idle <= 2 * (POOL + 1), idle

        store = open_store(f"postgresql://podium@/podium?host={small_server.dir}"
                           f"&port={small_server.port}")
        agents = {a.id: a for a in store.list_agents()}
        assert len(agents) == 60 and {a.host for a in agents.values()} == \
            {"podium-conn-a", "podium-conn-b"}
        ids = [t.id for t in store.add_tasks([TaskSpec(prompt="hostname")
                                              for _ in range(200)])]
        wait_for(lambda: all(store.task_state(t).finished for t in ids), 60, 0.1,
                 what="the 200 tasks to finish")
        per_host = check_exactly_once(store, ids)
        assert set(per_host) == {"podium-conn-a", "podium-conn-b"}, per_host
        assert sum(per_host.values()) == 200

        for h in hosts:
            h.podium("down")
        assert not [a.id for a in store.list_agents() if a.state.live]
        most = sampler.stop()
        # (plus the short-lived connections of the podium commands themselves: up, down)
        print(f"server connections of the two hosts: {idle} idle, at most {most}")
        assert most <= 2 * (POOL + 1) + 4 < SmallServer.MAX_CONNECTIONS, most
        # ``podium down`` stopped each host's last agent: the daemons go at once (not
        # IDLE_EXIT_S later, as when left alone), PgBouncer with them.
        wait_for(lambda: not any(h.daemon_dirs() for h in hosts), 8, 0.1,
                 what="both hosts' daemons to exit")
        wait_for(lambda: small_server.tcp_connections() == 0, 10, 0.1,
                 what="the hosts' connections to close")
    finally:
        sampler.stop()
        if store is not None:
            store.close()
        for h in hosts:
            h.cleanup()


# -- loopback -----------------------------------------------------------------------------------

def _server_connections_of(port: int, pids: set[int]) -> int:
    """TCP connections to ``port`` owned by any of ``pids`` (read from ``ss -tnp``)."""
    out = sh("ss", "-tnpH", "state", "established", f"( dport = :{port} )")
    return sum(1 for line in out.splitlines() for pid in re.findall(r"pid=(\d+)", line)[:1]
               if int(pid) in pids)


def _pgbouncer_pid(daemon_dir: Path) -> int:
    return int((daemon_dir / "pgbouncer.pid").read_text().strip())


def test_loopback_30_agents_use_the_pool_and_one_listen(pg_url):
    if shutil.which("pgbouncer") is None or shutil.which("ss") is None:
        pytest.skip("needs pgbouncer and ss (apt-get install pgbouncer iproute2)")
    here = Place("l", pg_url)
    port = urlsplit(pg_url).port or 5432
    store = open_store(pg_url)
    try:
        agents = up(here, 30, "l")
        (daemon_dir,) = here.daemon_dirs()
        state = json.loads((daemon_dir / "state.json").read_text())
        assert state["pool"] == POOL and state["bouncer"], state
        ours = {state["pid"], _pgbouncer_pid(daemon_dir)} | {a["pid"] for a in agents}
        # The workers hold no server connection of their own: only the daemon (LISTEN) and
        # PgBouncer (its pool) do.
        assert _server_connections_of(port, {a["pid"] for a in agents}) == 0
        assert _server_connections_of(port, ours) <= POOL + 2

        ids = [t.id for t in store.add_tasks([TaskSpec(prompt="hostname") for _ in range(60)])]
        wait_for(lambda: all(store.task_state(t).finished for t in ids), 40, 0.1,
                 what="the 60 tasks to finish")
        assert check_exactly_once(store, ids) == {socket.gethostname(): 60}
        assert _server_connections_of(port, ours) <= POOL + 2

        # A task added later is handed over and started at once: the relay wakes its agent.
        t0 = time.time()
        tid = store.add_tasks([TaskSpec(prompt="true")])[0].id
        t = wait_for(lambda: (x := store.get_task(tid)).state.finished and x, 10, 0.005,
                     what="the late task to finish")
        assert t.started_at - t0 < 1.0, t.started_at - t0

        here.podium("down")
        assert not [a.id for a in store.list_agents() if a.state.live]
        wait_for(lambda: not here.daemon_dirs(), 8, 0.1, what="the daemon to stop serving")
        # (it says so first, then stops PgBouncer, then removes what it wrote)
        wait_for(lambda: not pids.exists(state["pid"]), 15, 0.1, what="the daemon to exit")
        assert not (daemon_dir / "pgbouncer.ini").exists()  # (it held the credentials)
    finally:
        store.close()
        here.cleanup()


def test_hosts_server_restart_the_daemon_listens_and_pools_again(small_server):
    host = Place("r", small_server.url(0), small_server.netns[0])
    host.podium("init")
    store = None
    try:
        # Lease 60 s: a heartbeat every 10 s, so tasks picked up within seconds were woken.
        agents = json.loads(host.podium("up", "3", "--backend", "shell", "--prefix", "r",
                                        "--lease", "60", "--json", timeout=90))
        (daemon_dir,) = host.daemon_dirs()
        store = open_store(f"postgresql://podium@/podium?host={small_server.dir}"
                           f"&port={small_server.port}")
        channel = store.channel_wake

        def listeners() -> list[int]:
            with small_server.admin() as conn:
                return [r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query = %s",
                    (f"LISTEN {channel}",)).fetchall()]
        before = wait_for(lambda: len(x := listeners()) == 1 and x, 10, what="the daemon's LISTEN")
        store.close()
        store = None
        small_server.pg_ctl("-l", str(small_server.dir / "server.log"), "-m", "fast", "-w",
                            "-t", "30", "restart")
        after = wait_for(lambda: len(x := listeners()) == 1 and x, 20,
                         what="the daemon to listen again")
        assert after != before
        store = open_store(f"postgresql://podium@/podium?host={small_server.dir}"
                           f"&port={small_server.port}")
        ids = [t.id for t in store.add_tasks([TaskSpec(prompt="hostname") for _ in range(6)])]
        wait_for(lambda: all(store.task_state(t).finished for t in ids), 8, 0.05,
                 what="the tasks to run (woken through the relay, well before a heartbeat)")
        assert check_exactly_once(store, ids) == {host.hostname: 6}
        # The same workers, through the same daemon.
        assert {a.pid for a in store.list_agents() if a.state.live} == {a["pid"] for a in agents}
        assert host.daemon_dirs() == [daemon_dir]
        host.podium("down")
    finally:
        if store is not None:
            store.close()
        host.cleanup()


def test_loopback_pgbouncer_killed_under_the_daemon_is_started_again(pg_url):
    """PgBouncer dies under the host's daemon: the daemon starts it again, with the
    configuration it had, at the same socket, and the host's workers carry on through it."""
    if shutil.which("pgbouncer") is None:
        pytest.skip("needs pgbouncer (apt-get install pgbouncer)")
    here = Place("k", pg_url)
    store = open_store(pg_url)
    try:
        up(here, 3, "k")
        (daemon_dir,) = here.daemon_dirs()
        state = json.loads((daemon_dir / "state.json").read_text())
        first = _pgbouncer_pid(daemon_dir)
        ini = (daemon_dir / "pgbouncer.ini").read_text()
        os.kill(first, 9)
        wait_for(lambda: (daemon_dir / "pgbouncer.pid").exists()
                 and _pgbouncer_pid(daemon_dir) != first, 15, 0.1,
                 what="the daemon to start PgBouncer again")
        assert pids.exists(state["pid"])  # (the same daemon)
        assert (daemon_dir / "pgbouncer.ini").read_text() == ini
        assert oct((daemon_dir / "pgbouncer.ini").stat().st_mode & 0o777) == "0o600"
        assert "PgBouncer exited" in (daemon_dir / "daemon.log").read_text()

        ids = [t.id for t in store.add_tasks([TaskSpec(prompt="hostname") for _ in range(12)])]
        wait_for(lambda: all(store.task_state(t).finished for t in ids), 40, 0.1,
                 what="the tasks added after the restart to finish")
        assert check_exactly_once(store, ids) == {socket.gethostname(): 12}
        here.podium("down")
        wait_for(lambda: not pids.exists(state["pid"]), 15, 0.1, what="the daemon to exit")
    finally:
        store.close()
        here.cleanup()


def test_loopback_a_daemon_a_worker_started_again_outlives_the_workers_programs(pg_url):
    """The host's daemon killed: the next worker whose connection fails starts a new one
    (``revive``), as its own child. A worker ends every child that is not a program it runs
    after each program (``podium.agents.reaper``); the daemon it started must not be one."""
    if shutil.which("pgbouncer") is None:
        pytest.skip("needs pgbouncer (apt-get install pgbouncer)")
    here = Place("v", pg_url)
    store = open_store(pg_url)
    try:
        (agent,) = up(here, 1, "v")
        (daemon_dir,) = here.daemon_dirs()
        first = json.loads((daemon_dir / "state.json").read_text())["pid"]
        os.kill(first, 9)
        wait_for(lambda: not pids.exists(first), 5, 0.05, what="the daemon to die")
        revived: list[int] = []

        def new_daemon() -> bool:
            try:
                pid = json.loads((daemon_dir / "state.json").read_text())["pid"]
            except (OSError, ValueError):
                return False
            if pid != first and pids.exists(pid):
                revived.append(pid)
                return True
            return False
        # (the worker finds out at its next transaction: its heartbeat's, within seconds)
        wait_for(new_daemon, 30, 0.1, what="a worker to start the daemon again")
        for _ in range(3):
            tid = store.add_tasks([TaskSpec(prompt="true")])[0].id
            wait_for(lambda tid=tid: store.task_state(tid).finished, 30, 0.05,
                     what="a task to finish")
            assert store.get_task(tid).state is TaskState.COMPLETED
        time.sleep(0.5)
        assert pids.exists(revived[0]), "the worker's reaper killed the daemon it started"
        assert pids.exists(agent["pid"])
        here.podium("down")
        wait_for(lambda: not pids.exists(revived[0]), 15, 0.1, what="the daemon to exit")
    finally:
        store.close()
        here.cleanup()


def test_loopback_a_daemon_started_again_without_pgbouncer_serves_the_workers_directly(pg_url):
    """The host's daemon and its PgBouncer killed, and PgBouncer no longer to be found when a
    worker starts the daemon again: the new daemon relays wake-ups without it, and the workers,
    whose pools went to the old PgBouncer's socket, connect directly instead of retrying a
    socket that nothing serves."""
    real = shutil.which("pgbouncer")
    if real is None:
        pytest.skip("needs pgbouncer (apt-get install pgbouncer)")
    here = Place("b", pg_url)
    bin_dir = _private_tmp("pdbin")
    (bin_dir / "pgbouncer").symlink_to(real)
    here.path = os.pathsep.join([str(bin_dir)] + [
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not os.path.exists(os.path.join(d, "pgbouncer"))])
    store = open_store(pg_url)
    try:
        agents = up(here, 2, "b")
        (daemon_dir,) = here.daemon_dirs()
        first = json.loads((daemon_dir / "state.json").read_text())
        assert first["bouncer"], first
        (bin_dir / "pgbouncer").unlink()  # (the next daemon finds none)
        bouncer = _pgbouncer_pid(daemon_dir)
        os.kill(first["pid"], 9)
        with contextlib.suppress(ProcessLookupError):
            os.kill(bouncer, 9)
        wait_for(lambda: not pids.exists(first["pid"]) and not pids.exists(bouncer), 5, 0.05,
                 what="the daemon and its PgBouncer to die")

        def new_state() -> dict | None:
            try:
                state = json.loads((daemon_dir / "state.json").read_text())
            except (OSError, ValueError):
                return None
            return state if state["pid"] != first["pid"] and pids.exists(state["pid"]) else None
        # (the workers find out at their next transaction: a heartbeat's, within seconds)
        state = wait_for(new_state, 30, 0.1, what="a worker to start the daemon again")
        assert not state["bouncer"], state
        ids = [t.id for t in store.add_tasks([TaskSpec(prompt="hostname") for _ in range(6)])]
        wait_for(lambda: all(store.task_state(t).finished for t in ids), 30, 0.1,
                 what="the tasks added after the new daemon started to finish")
        assert check_exactly_once(store, ids) == {socket.gethostname(): 6}
        assert {a.pid for a in store.list_agents() if a.state.live} == {a["pid"] for a in agents}
        here.podium("down")
        wait_for(lambda: not pids.exists(state["pid"]), 15, 0.1, what="the daemon to exit")
    finally:
        store.close()
        here.cleanup()
        shutil.rmtree(bin_dir, ignore_errors=True)


def test_loopback_a_listen_connection_that_cannot_be_made_leaves_nothing_open(pg_url):
    """A process's own LISTEN connection (no host daemon) refused, again and again (the web
    dashboard's event thread tries once a second while the server is down): each attempt fails
    with one clear error and leaves no descriptor behind."""
    from podium.errors import StoreError
    from podium.store.postgres import PostgresStore

    store = PostgresStore(pg_url, pool_size=1, host_route=False)
    try:
        store.url = "postgresql://127.0.0.1:1/nothing"  # (where the listener connects: nobody)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            with pytest.raises(StoreError, match="cannot reach PostgreSQL"):
                store.event_waiter()
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        store.close()
