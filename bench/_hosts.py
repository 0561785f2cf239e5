"""Hosts for ``bench/scale.py``: this machine as it is, or network namespaces that stand for
separate hosts, and a PostgreSQL server owned by the benchmark that they all reach.

A namespace host (``NetLab``) is joined to the root namespace by its own veth pair in a private
10.77.x.0/24 subnet, nothing routed between subnets, so no packet leaves this machine. Every
command run "on" a host goes through ``Host.wrap``: ``ip netns exec NS unshare --uts`` with the
host's own hostname (what Podium records as an agent's host, and what ``podium down`` matches),
and the host's own ``XDG_RUNTIME_DIR`` (0700), because wake-up sockets and per-host daemons live
there and a real host does not share them with another.

The server: ``initdb`` in a temporary directory as the ``postgres`` OS user, stock settings
(``max_connections = 100``) except that it listens only on the root-side end of each link (and
a private Unix socket), trusts those subnets, and detects a vanished client within seconds
(TCP keepalives). Each run gets a fresh database on it, dropped afterwards.

Everything made here (namespaces, links, the server, its directory, the processes in the
namespaces) is removed by ``NetLab.down``, which also runs at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import _common as C


def sh(*argv: str, timeout: float = 60) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def pg_bindir() -> Path | None:
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def netns_unavailable() -> str | None:
    """Why namespace hosts with a server of our own cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' OS user to run the benchmark's own PostgreSQL server"
    if pg_bindir() is None:
        return "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql"
    probe = f"pdmsprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@dataclass
class Host:
    """Where ``podium`` commands run: a network namespace, or this machine (``netns`` None)."""

    label: str
    hostname: str
    runtime_dir: Path                  # this host's XDG_RUNTIME_DIR (0700)
    netns: str | None = None
    url: str = ""                      # the store's URL as seen from this host
    env: dict[str, str] = field(default_factory=dict)  # more environment for its commands

    def wrap(self, argv: list[str]) -> list[str]:
        env = [f"XDG_RUNTIME_DIR={self.runtime_dir}", *(f"{k}={v}" for k, v in self.env.items())]
        cmd = ["env", *env, *argv]
        if self.netns is None:
            return cmd
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname, *cmd]


class NetLab:
    """``n`` namespace hosts linked to the root namespace, and a PostgreSQL server on the links."""

    def __init__(self, n: int = 2, max_connections: int | None = None,
                 statements: bool = False, conf: tuple[str, ...] = ()):
        self.n = n
        self.conf = conf  # extra postgresql.conf lines (a what-if: the default is stock)
        self.max_connections = max_connections  # None: the stock setting (100)
        self.statements = statements  # load pg_stat_statements (planning time included)
        self.token = secrets.token_hex(3)
        self.netns: list[str] = []
        self.server_ips: list[str] = []
        self.root_veths: list[str] = []
        self.dir: Path | None = None
        self.port = 0
        self.bindir = pg_bindir()
        self.admin_url = ""
        self._down = False
        atexit.register(self.down)

    def _subnets(self, n: int) -> list[int]:
        used = {int(x) for x in re.findall(r"inet 10\.77\.(\d+)\.", sh("ip", "-4", "-o", "addr"))}
        start = random.randrange(1, 240)
        for k in range(240):
            x = (start + k) % 240 + 1
            if x + n - 1 <= 254 and all(x + i not in used for i in range(n)):
                return [x + i for i in range(n)]
        raise RuntimeError("no free 10.77.x.0/24 subnets")

    def up(self) -> None:
        for i, third in enumerate(self._subnets(self.n)):
            ns = f"pdms{self.token}{i}"
            vr, vn = f"{ns}r", f"{ns}n"
            root_ip, ns_ip = f"10.77.{third}.1", f"10.77.{third}.2"
            sh("ip", "netns", "add", ns)
            self.netns.append(ns)
            sh("ip", "link", "add", vr, "type", "veth", "peer", "name", vn)
            self.root_veths.append(vr)
            sh("ip", "link", "set", vn, "netns", ns)
            sh("ip", "addr", "add", f"{root_ip}/24", "dev", vr)
            sh("ip", "link", "set", vr, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", vn)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", vn, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self.server_ips.append(root_ip)
        self.dir = Path(tempfile.mkdtemp(prefix="podium-bench-scale-pg-"))
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        sh("runuser", "-u", "postgres", "--", str(self.bindir / "initdb"), "-D", str(data),
           "-U", "podium", "-A", "trust", "-E", "UTF8", "--locale=C")
        with socket.socket() as s:
            s.bind(("", 0))
            self.port = s.getsockname()[1]
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '{','.join(self.server_ips)}'\n"
                    f"port = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    "tcp_keepalives_idle = 2\ntcp_keepalives_interval = 1\n"
                    "tcp_keepalives_count = 3\n")
            if self.max_connections is not None:
                f.write(f"max_connections = {self.max_connections}\n")
            if self.statements:
                f.write("shared_preload_libraries = 'pg_stat_statements'\n"
                        "pg_stat_statements.track_planning = on\n")
            for line in self.conf:
                f.write(line + "\n")
        with open(data / "pg_hba.conf", "w") as f:
            f.write("local all all trust\n")
            for ip in self.server_ips:
                f.write(f"host all all {ip.rsplit('.', 1)[0]}.0/24 trust\n")
        sh("runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D", str(data),
           "-l", str(self.dir / "server.log"), "-w", "-t", "30", "start")
        self.admin_url = f"postgresql://podium@{self.server_ips[0]}:{self.port}/postgres"

    def connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(self.admin_url.rsplit("/", 1)[0] + "/" + dbname,
                               autocommit=True, connect_timeout=5)

    def setting(self, name: str) -> str:
        with self.connect() as conn:
            return conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]

    def connections(self) -> dict[str, int]:
        """Client connections to the server now (all databases), by client address; this
        query's own connection left out."""
        with self.connect() as conn:
            rows = conn.execute("SELECT host(client_addr), count(*) FROM pg_stat_activity "
                                "WHERE backend_type = 'client backend' AND pid <> "
                                "pg_backend_pid() GROUP BY 1").fetchall()
        return {str(a): k for a, k in rows}

    def database(self) -> tuple[str, list[str]]:
        """A fresh database: (its name, its URL through each host's link)."""
        name = "scale_" + secrets.token_hex(4)
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name, [f"postgresql://podium@{ip}:{self.port}/{name}" for ip in self.server_ips]

    def reset_statements(self, dbname: str) -> None:
        """Start ``pg_stat_statements`` afresh (needs ``statements=True``)."""
        with self.connect(dbname) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")

    def top_statements(self, dbname: str, limit: int = 15) -> list[dict]:
        """The statements run in ``dbname`` since the reset, most server time (planning and
        execution) first."""
        with self.connect(dbname) as conn:
            rows = conn.execute(
                "SELECT calls, total_plan_time, total_exec_time, rows, query "
                "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = %s AND query NOT LIKE '%%pg_stat_statements%%' "
                "ORDER BY total_plan_time + total_exec_time DESC LIMIT %s",
                (dbname, limit)).fetchall()
        return [{"calls": c, "plan_ms": p, "exec_ms": e, "rows": r, "query": q}
                for c, p, e, r, q in rows]

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(Exception), self.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def hosts(self, base: Path) -> list[Host]:
        """One ``Host`` per namespace, each with a fresh private runtime dir under ``base``."""
        out = []
        for i, ns in enumerate(self.netns):
            label = "ab"[i] if self.n <= 2 else f"h{i}"
            out.append(Host(label, f"podium-bench-{label}", private_dir(base / f"run-{label}"),
                            ns))
        return out

    def pids(self) -> list[int]:
        """Every process in the lab's namespaces (only the benchmark starts any there)."""
        out = []
        for ns in self.netns:
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            out += [int(p) for p in r.stdout.split() if p.isdigit()]
        return out

    def server_pids(self) -> list[int]:
        """The server's processes: its postmaster and every child of it ([] when it is not
        running)."""
        try:
            pm = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, TypeError, ValueError, IndexError):
            return []
        return [pm, *C.descendants(pm)]

    def down(self) -> None:
        if self._down:
            return
        self._down = True
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for vr in self.root_veths:  # gone with its namespace, unless something held it open
            subprocess.run(["ip", "link", "del", vr], capture_output=True)
        if self.dir is not None:
            if (self.dir / "data" / "postmaster.pid").exists():
                subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"),
                                "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"],
                               capture_output=True, timeout=60)
            shutil.rmtree(self.dir, ignore_errors=True)
