"""Hosts for real, for the multi-host tests: network namespaces linked to this machine, and a
PostgreSQL server of the test's own listening on the links.

Each namespace is joined to the root namespace by its own veth pair in a private /24 subnet;
nothing is forwarded between subnets, so a namespace reaches only the root-side end of its own
link and no packet leaves the machine. The server is ``initdb`` in a temporary directory, run
as the ``postgres`` OS user, trusting the links, listening on their root-side ends only.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path


def sh(*argv: str) -> str:
    """Run a command; its stdout, or RuntimeError with what it said."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server's binaries on this machine."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def unavailable(*tools: str) -> str | None:
    """Why namespaces and a server of the test's own cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "runuser", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' OS user to run the test's own PostgreSQL server"
    if pg_bindir() is None:
        return "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    probe = f"pdmprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Links:
    """Namespaces, one per label, each linked to the root namespace in a 10.``net``.x.0/24
    subnet of its own: ``root_ip[label]`` is the root side, ``ns_ip[label]`` the namespace's."""

    def __init__(self, net: int, name_prefix: str):
        self.net, self.token = net, f"{name_prefix}{secrets.token_hex(3)}"
        self.netns: dict[str, str] = {}
        self.veth: dict[str, str] = {}  # the namespace's end
        self.root_ip: dict[str, str] = {}
        self.ns_ip: dict[str, str] = {}
        self._root_veths: list[str] = []

    def _subnets(self, n: int) -> list[int]:
        used = {int(x) for x in re.findall(rf"inet 10\.{self.net}\.(\d+)\.",
                                           sh("ip", "-4", "-o", "addr"))}
        start = random.randrange(1, 240)
        for k in range(240):
            x = (start + k) % 240 + 1
            if all(x + i not in used for i in range(n)):
                return [x + i for i in range(n)]
        raise RuntimeError(f"no free 10.{self.net}.x.0/24 subnets")

    def add(self, labels: str) -> None:
        for label, third in zip(labels, self._subnets(len(labels))):
            ns = f"{self.token}{label}"
            vr, vn = f"{ns}r", f"{ns}n"
            root_ip, ns_ip = f"10.{self.net}.{third}.1", f"10.{self.net}.{third}.2"
            sh("ip", "netns", "add", ns)
            self.netns[label] = ns
            sh("ip", "link", "add", vr, "type", "veth", "peer", "name", vn)
            self._root_veths.append(vr)
            sh("ip", "link", "set", vn, "netns", ns)
            sh("ip", "addr", "add", f"{root_ip}/24", "dev", vr)
            sh("ip", "link", "set", vr, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", vn)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", vn, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self.veth[label], self.root_ip[label], self.ns_ip[label] = vn, root_ip, ns_ip

    def down(self) -> list[str]:
        """Kill what runs in the namespaces (only what the test started), remove them and their
        links; the errors of removing them."""
        errors = []
        for ns in self.netns.values():
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                      text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if r.returncode:
                errors.append(r.stderr)
        for vr in self._root_veths:  # gone with its namespace, unless something held that open
            subprocess.run(["ip", "link", "del", vr], capture_output=True)
        return errors


class OwnServer:
    """A PostgreSQL server of the test's own on ``listen`` (addresses), trusting their /24s,
    with ``conf`` appended to its postgresql.conf; superuser ``podium``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.bindir = pg_bindir()
        self.dir: Path | None = None
        self.port = 0

    def start(self, listen: list[str], conf: str = "") -> None:
        assert self.bindir is not None
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix))
        shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        sh("runuser", "-u", "postgres", "--", str(self.bindir / "initdb"), "-D", str(data),
           "-U", "podium", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C")
        with socket.socket() as s:
            s.bind(("", 0))
            self.port = s.getsockname()[1]
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '{','.join(listen)}'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    f"fsync = off\nfull_page_writes = off\n{conf}")
        with open(data / "pg_hba.conf", "w") as f:
            f.write("local all all trust\n")
            for ip in listen:
                f.write(f"host all all {ip.rsplit('.', 1)[0]}.0/24 trust\n")
        self.pg_ctl("-l", str(self.dir / "server.log"), "-w", "-t", "30", "start")

    def pg_ctl(self, *args: str) -> None:
        assert self.bindir is not None and self.dir is not None
        sh("runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"),
           "-D", str(self.dir / "data"), *args)

    def admin(self, dbname: str = "postgres"):
        """A connection through the server's Unix socket (no client address of its own)."""
        import psycopg

        return psycopg.connect(host=str(self.dir), port=self.port, user="podium",
                               dbname=dbname, autocommit=True, connect_timeout=5)

    def stop(self) -> None:
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            try:
                self.pg_ctl("-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
