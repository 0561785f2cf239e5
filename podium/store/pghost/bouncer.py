"""The host daemon's PgBouncer: its configuration, made from the daemon's own connection, and
its process (started, watched, restarted a few times, stopped with the daemon).

PgBouncer (Debian's ``pgbouncer`` package) runs in transaction pooling mode and listens on a
Unix socket only, in the daemon's private directory, so it lets in whoever reaches the socket
(``auth_type = any``): only this user can. Its configuration (0600) holds the server's
credentials. It refuses to run as root; as root it runs in a user namespace whose uid 1 is root
outside (``unshare --user``), so it can still use root's private directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podium.store.pgconnect import session_settings

#: Only names PgBouncer's socket file (``.s.PGSQL.6432``): it listens on no TCP port.
BOUNCER_PORT = 6432
BOUNCER_DB = "podium"
#: How many times a PgBouncer that died is started again before the daemon gives up.
MAX_RESTARTS = 5


def _quoted(value: str) -> str:
    """A value quoted as libpq and SQL both quote it ('' for ')."""
    return "'" + value.replace("'", "''") + "'"


def option_names(options: str) -> list[str]:
    """The settings named in a libpq ``options`` string (``-c name=value``, ``--name=value``)."""
    tokens, cur, escaped = [], "", False
    for ch in options:
        if escaped:
            cur, escaped = cur + ch, False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if cur:
                tokens.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        tokens.append(cur)
    names = []
    for i, tok in enumerate(tokens):
        if tok == "-c" and i + 1 < len(tokens):
            tok = "-c" + tokens[i + 1]
        if tok.startswith("-c") and "=" in tok[2:]:
            names.append(tok[2:].split("=", 1)[0])
        elif tok.startswith("--") and "=" in tok:
            names.append(tok[2:].split("=", 1)[0])
    return [n.replace("-", "_") for n in names if n]


def _die_with_parent() -> None:
    """(In the child, before exec) die with the daemon: PgBouncer must not outlive it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def configuration(conn: Any, socket_dir: Path, pool: int) -> str:
    """``pgbouncer.ini`` for a pool of ``pool`` server connections like ``conn`` (a psycopg
    connection: its server, credentials, TLS and the settings its ``options`` name, read back
    from the server), listening in ``socket_dir``."""
    info = conn.info
    settings = {}
    for name in option_names(info.options or ""):
        settings[name] = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
    settings.update(session_settings())
    # Session settings go in ``connect_query``, run once on each new server connection: in
    # transaction mode PgBouncer never resets a server connection (no server_reset_query) and
    # only Podium uses this one, so they hold for every transaction on it -- unlike SETs from
    # the client, which would land on whichever server connection served that statement. (SET
    # LOCAL in every transaction would cost a statement each time.)
    connect_query = "; ".join(f"SELECT set_config({_quoted(k)}, {_quoted(v)}, false)"
                              for k, v in settings.items())
    db = {"host": info.host, "port": str(info.port), "dbname": info.dbname,
          "user": info.user, "connect_query": connect_query}
    if info.password:
        db["password"] = info.password
    params = info.get_parameters()
    lines = ["[databases]",
             f"{BOUNCER_DB} = " + " ".join(f"{k}={_quoted(v)}" for k, v in db.items()),
             "[pgbouncer]",
             "listen_addr =",
             f"listen_port = {BOUNCER_PORT}",
             f"unix_socket_dir = {socket_dir}",
             "unix_socket_mode = 0600",
             "auth_type = any",  # (the socket is reachable by this user only)
             "pool_mode = transaction",
             f"default_pool_size = {pool}",
             "min_pool_size = 0",
             "reserve_pool_size = 0",
             "max_client_conn = 5000",
             "server_reset_query =",
             "server_login_retry = 1",
             "server_connect_timeout = 5",
             "query_wait_timeout = 10",
             "server_idle_timeout = 60",
             "tcp_keepalive = 1", "tcp_keepidle = 5", "tcp_keepintvl = 2", "tcp_keepcnt = 3",
             "tcp_user_timeout = 15000",
             "log_connections = 0", "log_disconnections = 0", "stats_period = 3600",
             f"pidfile = {socket_dir / 'pgbouncer.pid'}"]
    if conn.pgconn.ssl_in_use:
        sslmode = params.get("sslmode", "require")
        if sslmode in ("prefer", "allow"):  # (TLS was in use: keep it so)
            sslmode = "require"
        lines.append(f"server_tls_sslmode = {sslmode}")
        if params.get("sslrootcert"):
            lines.append(f"server_tls_ca_file = {params['sslrootcert']}")
    return "\n".join(lines) + "\n"


class Bouncer:
    """The daemon's PgBouncer in ``socket_dir``; ``conninfo`` is how this host's processes
    reach it (None while it is not running)."""

    def __init__(self, socket_dir: Path, log: Callable[[str], None]):
        self.dir = socket_dir
        self.log = log
        self.conninfo: str | None = None
        self._proc: subprocess.Popen | None = None
        self._exe: str | None = None
        self._ini: str | None = None
        self._restarts = 0

    def start(self, conn: Any, pool: int) -> None:
        """Start PgBouncer for a pool like ``conn`` (see ``configuration``); without it (not
        installed, or it does not start) ``conninfo`` stays None and the log says why."""
        self._exe = shutil.which("pgbouncer")
        if self._exe is None:
            self.log("pgbouncer is not installed: relaying wake-ups only")
            return
        self._ini = configuration(conn, self.dir, pool)
        self._run()

    def _run(self) -> None:
        assert self._exe is not None and self._ini is not None
        self._kill_stale()
        ini = self.dir / "pgbouncer.ini"
        fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as f:
            f.write(self._ini)
        argv = [self._exe, str(ini)]
        if os.geteuid() == 0:
            # PgBouncer refuses root. In a user namespace it is uid 1 there and still root
            # outside, so it can use root's private directory; nothing else changes for it.
            unshare = shutil.which("unshare")
            if unshare is None:
                self.log("running as root without unshare(1): PgBouncer cannot run; "
                         "relaying wake-ups only")
                return
            argv = [unshare, "--user", "--map-user=1", "--map-group=1", *argv]
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True,
                                          preexec_fn=_die_with_parent)
        except OSError as e:  # (gone from disk since the daemon started, say)
            self.log(f"PgBouncer cannot be started ({e}); relaying wake-ups only")
            return
        conninfo = (f"host={self.dir} port={BOUNCER_PORT} dbname={BOUNCER_DB} "
                    f"user=podium connect_timeout=5")
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(conninfo, prepare_threshold=None) as probe:
                    probe.execute("SELECT 1")
                break
            except psycopg.Error as e:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.log(f"PgBouncer did not start ({str(e).strip()}); relaying "
                             "wake-ups only")
                    self.stop()
                    return
                time.sleep(0.05)
        self.conninfo = conninfo

    def _kill_stale(self) -> None:
        """A PgBouncer a killed daemon left behind (it should have died with it) holds the
        socket: stop it."""
        try:
            pid = int((self.dir / "pgbouncer.pid").read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"pgbouncer" in f.read():
                    os.kill(pid, signal.SIGTERM)
                    time.sleep(0.2)
        except (OSError, ValueError):
            pass
        (self.dir / f".s.PGSQL.{BOUNCER_PORT}").unlink(missing_ok=True)

    def check(self) -> bool:
        """After PgBouncer died: start it again, with the configuration it had (a few times).
        False when it is gone for good (its users would fail: the daemon should exit)."""
        if self._proc is None or self._proc.poll() is None:
            return True
        self.log(f"PgBouncer exited with code {self._proc.returncode}")
        self._proc, self.conninfo = None, None
        if self._restarts < MAX_RESTARTS:
            self._restarts += 1
            self._run()
        return self.conninfo is not None

    def stop(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        for name in ("pgbouncer.ini", "pgbouncer.pid"):
            (self.dir / name).unlink(missing_ok=True)
