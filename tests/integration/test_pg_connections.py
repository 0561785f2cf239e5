"""PostgreSQL connections are bounded per host, not per agent (``podium.store.pghost``).

Two hosts for real (``test_hosts_*``)
    A PostgreSQL server owned by the test (``initdb`` in a temporary directory, run as the
    ``postgres`` OS user) with ``max_connections = 40``, listening only on the root-side ends of
    two veth links, one per network namespace; each namespace has its own host name (``unshare
    --uts``) and its own ``XDG_RUNTIME_DIR``, as two machines would. ``podium up 30`` on each
    starts 60 agents, which would need ~180 connections on their own: with one host daemon each
    (one LISTEN connection, PgBouncer's pool of 8) the server sees ~20. The agents run 200
    tasks, each exactly once, and ``podium down`` on each host stops them; the daemons then exit.
    And the server restarts under a host's daemon: it listens again, and its PgBouncer serves
    the same workers, woken through the relay.

Loopback (``test_loopback_*``, always runs when PostgreSQL does)
    30 agents on this machine's server, in a fresh schema: the connections to the server from
    this host's processes are counted from the client side (``ss -tnp``: which process owns
    each TCP connection to the server's port), so other users of the server do not count.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
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
from podium.models import TaskSpec, TaskState
from podium.store import open_store

POOL = 8  # PgBouncer's server connections per host (the default, PODIUM_PG_POOL)


def _sh(*argv: str) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def _pg_bindir() -> Path | None:
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


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

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
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

def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "runuser", "pgbouncer"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' OS user to run the test's own PostgreSQL server"
    if _pg_bindir() is None:
        return "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return None


class SmallServer:
    """Two namespaces linked to the root namespace, and a PostgreSQL server with
    ``max_connections = 40`` on the root-side ends of the links."""

    MAX_CONNECTIONS = 40

    def __init__(self):
        self.token = secrets.token_hex(3)
        self.netns: list[str] = []
        self.server_ips: list[str] = []
        self.dir: Path | None = None
        self.bindir = _pg_bindir()
        self.port = 0

    def up(self) -> None:
        used = {int(x) for x in re.findall(r"inet 10\.78\.(\d+)\.", _sh("ip", "-4", "-o", "addr"))}
        thirds = [x for x in random.sample(range(1, 250), 40) if x not in used][:2]
        for label, third in zip("ab", thirds):
            ns = f"pdc{self.token}{label}"
            vr, vn = f"{ns}r", f"{ns}n"
            _sh("ip", "netns", "add", ns)
            self.netns.append(ns)
            _sh("ip", "link", "add", vr, "type", "veth", "peer", "name", vn)
            _sh("ip", "link", "set", vn, "netns", ns)
            _sh("ip", "addr", "add", f"10.78.{third}.1/24", "dev", vr)
            _sh("ip", "link", "set", vr, "up")
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.78.{third}.2/24", "dev", vn)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", vn, "up")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self.server_ips.append(f"10.78.{third}.1")
        self.dir = Path(tempfile.mkdtemp(prefix="podium-pg-conn-"))
        shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        _sh("runuser", "-u", "postgres", "--", str(self.bindir / "initdb"), "-D", str(data),
            "-U", "podium", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C")
        with socket.socket() as s:
            s.bind(("", 0))
            self.port = s.getsockname()[1]
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '{','.join(self.server_ips)}'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    f"max_connections = {self.MAX_CONNECTIONS}\n"
                    "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n")
        with open(data / "pg_hba.conf", "w") as f:
            f.write("local all all trust\n")
            for ip in self.server_ips:
                f.write(f"host all all {ip.rsplit('.', 1)[0]}.0/24 trust\n")
        _sh("runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D", str(data),
            "-l", str(self.dir / "server.log"), "-w", "-t", "30", "start")

        with self.admin() as conn:
            conn.execute("CREATE DATABASE podium")

    def admin(self):
        """A connection through the server's Unix socket (not counted among the hosts')."""
        import psycopg

        return psycopg.connect(host=str(self.dir), port=self.port, user="podium",
                               dbname="postgres", autocommit=True, connect_timeout=5)

    def url(self, i: int) -> str:
        return f"postgresql://podium@{self.server_ips[i]}:{self.port}/podium"

    def tcp_connections(self) -> int:
        """Client connections over the links (the hosts'), as the server counts them."""
        with self.admin() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                "'client backend' AND client_addr IS NOT NULL").fetchone()[0]

    def down(self) -> None:
        for ns in self.netns:
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                      text=True).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            subprocess.run(["ip", "link", "del", f"{ns}r"], capture_output=True)
        if self.dir is not None:
            if (self.dir / "data" / "postmaster.pid").exists():
                subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"),
                                "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"],
                               capture_output=True, timeout=60)
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def small_server():
    why = _netns_unavailable()
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
        # The daemons go once no agent uses them (~10 s), PgBouncer with them.
        wait_for(lambda: not any(h.daemon_dirs() for h in hosts), 25, 0.2,
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
    out = _sh("ss", "-tnpH", "state", "established", f"( dport = :{port} )")
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
        wait_for(lambda: not here.daemon_dirs(), 25, 0.2, what="the daemon to exit")
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
        _sh("runuser", "-u", "postgres", "--", str(small_server.bindir / "pg_ctl"), "-D",
            str(small_server.dir / "data"), "-l", str(small_server.dir / "server.log"),
            "-m", "fast", "-w", "-t", "30", "restart")
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
