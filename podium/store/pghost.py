"""The host daemon of a PostgreSQL store: one process per (host, store) that holds the host's
only ``LISTEN`` connection and runs PgBouncer, so that a host costs the server a few connections
however many agents it runs.

Without it every worker holds a pool and a ``LISTEN`` connection of its own, and a stock server
(``max_connections = 100``) is full at about 30 agents. With it:

* **Wake-ups.** The daemon listens on the store's wake and events channels and relays each
  notification to this host's processes through the sockets the SQLite store uses
  (``podium.wake.WakeChannel``): ``*`` wakes every agent, an agent's id that agent, ``h:`` and
  an agent's id tells that agent a task was handed to it, and an event wakes the watchers. Only
  hints, as before: whoever is woken reads the store. After its connection came back (notifications
  may have been missed meanwhile), it tells every agent to look for hand-offs.
* **Transactions.** PgBouncer (Debian's ``pgbouncer`` package), the daemon's child, in
  transaction pooling mode, keeps a small pool of server connections (``PODIUM_PG_POOL``, default
  8) that every process on the host shares. It listens on a Unix socket only, in the daemon's
  directory under ``podium.wake.runtime_dir()`` (0700, this user's alone), so it lets in whoever
  reaches the socket (``auth_type = any``): only this user can. Its configuration (0600) holds
  the server's credentials. PgBouncer refuses to run as root; as root it runs in a user namespace
  whose uid 1 is root outside (``unshare --user``), so it can still use root's private directory.
  Without PgBouncer the daemon still relays wake-ups, and each process connects directly with
  one connection.
* **Idle agents' heartbeats.** A thread of the daemon beats for the host's idle agents, one
  statement per round for all of them, through PgBouncer (``podium.store.hostbeats``).

Who uses it: a process on this host that opens the store while the daemon is live
(``attach``); ``podium up`` starts it first (``ensure``), and with ``PODIUM_PG_HOST=on`` any
process opening the store does; ``PODIUM_PG_HOST=off`` never uses it. Users hold a shared lock on
``users.lock`` while their store is open; the daemon exits (stopping PgBouncer) once nobody has
held it for ``IDLE_EXIT_S``, taking the lock exclusively first so that nobody attaches to a
daemon on its way out; told that the host's team was stopped (``release``, from ``podium down``:
SIGUSR1), it exits as soon as nobody holds it. ``daemon.lock``, held by the daemon for its
life, makes it one per host and store; the directory's name is derived from the host name and
the store's secret, so two hosts that share a file system (network namespaces, NFS homes) each
get their own. A pointer named after the daemon's URL (``bouncer_for``) lets a process opening
the store with that URL make even its first connection through PgBouncer: two hundred workers
starting at once need no server connection each. A process whose connection through a killed
daemon failed starts a new one (``revive``): same directory, same socket paths, so its pool and
wake-up sockets carry on. (PgBouncer is told to die with the daemon; as root, the user namespace
clears that, and a new daemon stops a PgBouncer left behind; left alone, it closes its idle
server connections after ``server_idle_timeout``.)
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium import pids
from podium.errors import InvalidInput, StoreError
from podium.store import hostbeats
from podium.wake import (
    ALL_AGENTS,
    HANDED,
    LOOK,
    WakeChannel,
    check_private,
    private_dir,
    runtime_dir,
    write_private,
)

#: ``auto`` (default): use the host's daemon when it is live (``podium up`` starts it); ``on``:
#: every process opening the store starts it if needed; ``off``: connect directly, as one
#: process alone.
MODE_ENV = "PODIUM_PG_HOST"
MODES = ("auto", "on", "off")
#: Server connections PgBouncer keeps for this host (its ``default_pool_size``).
POOL_ENV = "PODIUM_PG_POOL"
DEFAULT_POOL = 8
#: Connections each process keeps to PgBouncer (cheap: they are not server connections).
CLIENT_POOL = 2
#: The daemon exits once no process has used it for this long.
IDLE_EXIT_S = 10.0
#: How often the daemon looks whether anybody still uses it (and at PgBouncer); released,
#: more often.
CHECK_S = 1.0
RELEASED_CHECK_S = 0.2
#: How long a starter waits for a new daemon to be ready.
READY_WAIT_S = 20.0
#: Only names PgBouncer's socket file (``.s.PGSQL.6432``): it listens on no TCP port.
BOUNCER_PORT = 6432
BOUNCER_DB = "podium"


def mode() -> str:
    """``PODIUM_PG_HOST``: auto, on or off (InvalidInput otherwise)."""
    value = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise InvalidInput(f"{MODE_ENV}={value!r}: use one of {', '.join(MODES)}")
    return value


def pool_size() -> int:
    """``PODIUM_PG_POOL``: the server connections PgBouncer keeps for this host."""
    raw = os.environ.get(POOL_ENV, "").strip()
    if not raw:
        return DEFAULT_POOL
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 1000):
        raise InvalidInput(f"{POOL_ENV}={raw!r}: a number of connections from 1 to 1000")
    return int(raw)


def _digest(secret: str) -> str:
    return hashlib.sha256(f"podium host {socket.gethostname()} {secret}".encode()).hexdigest()


def host_dir(secret: str) -> Path:
    """The daemon's private directory for the store whose secret is ``secret``, on this host."""
    return runtime_dir() / f"pg.{_digest(secret)[:16]}"


def wake_key(secret: str) -> str:
    """What names the wake-up directory (``WakeChannel``) of this host's processes."""
    return "pg-host " + _digest(secret)


def _url_pointer(url: str) -> Path:
    """Names the daemon started for ``url`` on this host (written by it; checked on use)."""
    digest = hashlib.sha256(f"podium url {socket.gethostname()} {url}".encode()).hexdigest()
    return runtime_dir() / f"pg.url.{digest[:16]}"


def _state_for(url: str) -> dict | None:
    """The state of the live daemon started for ``url`` on this host, if any."""
    try:
        name = _url_pointer(url).read_text().strip()
    except OSError:
        return None
    if not (name.startswith("pg.") and len(name) == 19 and name[3:].isalnum()):
        return None
    return _daemon_live(runtime_dir() / name)


def bouncer_for(url: str) -> str | None:
    """The PgBouncer conninfo of the live daemon started for ``url`` on this host, if any: a
    first connection through it costs the server nothing. (Which store it serves is checked
    afterwards, by ``attach`` with the store's secret.)"""
    state = _state_for(url)
    return state.get("bouncer") if state else None


def release(url: str) -> bool:
    """Tell the live daemon started for ``url`` on this host that the host's team was stopped:
    it exits (stopping PgBouncer) as soon as no process uses it, not ``IDLE_EXIT_S`` later.
    Needs no connection to the server. False when no daemon is live."""
    state = _state_for(url)
    return pids.tell(state.get("pid") if state else None, signal.SIGUSR1)


def _lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_lock(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _daemon_live(d: Path) -> dict | None:
    """The state the daemon in ``d`` wrote, if that daemon still holds its lock."""
    try:
        state = json.loads((d / "state.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        fd = os.open(d / "daemon.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _try_lock(fd, fcntl.LOCK_SH):  # (nobody holds it: the state is a dead daemon's)
            return None
    finally:
        os.close(fd)
    return state if isinstance(state, dict) else None


@dataclass
class Route:
    """How a process on this host reaches the store while the daemon serves it: wake-ups from
    the relay (``wake_key``), transactions through PgBouncer (``bouncer``, a libpq conninfo; None
    when the host has no PgBouncer). Holds the daemon up until ``close``."""

    wake_key: str
    bouncer: str | None
    pool: int
    _fd: int = field(repr=False, default=-1)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _hold_users(d: Path, wait_s: float) -> int | None:
    """A shared lock on ``users.lock`` (the daemon cannot go idle while it is held); None when
    the daemon is on its way out for longer than ``wait_s``."""
    fd = _lock_file(d / "users.lock")
    deadline = time.monotonic() + wait_s
    while not _try_lock(fd, fcntl.LOCK_SH):
        if time.monotonic() >= deadline:
            os.close(fd)
            return None
        time.sleep(0.05)
    return fd


def attach(secret: str) -> Route | None:
    """The live daemon's route for this process, or None (no daemon: connect directly)."""
    d = host_dir(secret)
    if not d.is_dir():
        return None
    check_private(runtime_dir())
    check_private(d)
    fd = _hold_users(d, 2.0)
    if fd is None:
        return None
    state = _daemon_live(d)
    if state is None:
        os.close(fd)
        return None
    return Route(wake_key(secret), state.get("bouncer"), int(state.get("pool", 0)), fd)


def ensure(url: str, secret: str) -> Route:
    """This host's daemon for the store at ``url``, started when none is live; its route (held:
    the caller closes it)."""
    mode()
    pool_size()  # (bad settings: one clear line here, not in the daemon's log)
    d = private_dir(host_dir(secret))
    fd = _hold_users(d, 5.0)
    if fd is None:
        raise StoreError(f"the PostgreSQL host daemon in {d} does not finish stopping")
    starting = _lock_file(d / "starting.lock")  # (one starter at a time; the others wait)
    try:
        fcntl.flock(starting, fcntl.LOCK_EX)
        state = _daemon_live(d) or _start(url, d)
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.close(starting)
    return Route(wake_key(secret), state.get("bouncer"), int(state.get("pool", 0)), fd)


def revive(route: Route, url: str, secret: str) -> Route:
    """After a failed connection through ``route``: the same route while its daemon lives;
    otherwise (the daemon was killed) a daemon started afresh, whose sockets have the same
    paths, so the caller's pool and wake-up sockets carry on."""
    if _daemon_live(host_dir(secret)) is not None:
        return route
    new = ensure(url, secret)
    route.close()
    return new


def _start(url: str, d: Path) -> dict:
    log = os.open(d / "daemon.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    start = os.fstat(log).st_size
    env = {**os.environ, "PODIUM_STORE": url, MODE_ENV: "off"}  # (not in argv: the password)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "podium", "pg-host"], env=env, cwd="/",
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(log)
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        state = _daemon_live(d)
        if state is not None:
            return state
        code = proc.poll()
        if code is not None and code != 0:
            with open(d / "daemon.log", "rb") as f:
                f.seek(start)
                tail = f.read().decode(errors="replace").strip().splitlines()[-1:]
            why = tail[0] if tail else f"exit code {code}"
            raise StoreError(f"the PostgreSQL host daemon did not start: {why} "
                             f"(log: {d}/daemon.log)")
        time.sleep(0.02)
    raise StoreError(f"the PostgreSQL host daemon was not ready within {READY_WAIT_S:g} s "
                     f"(log: {d}/daemon.log)")


# -- the daemon ---------------------------------------------------------------------------------

def _ini_quote(value: str) -> str:
    """A value of PgBouncer's ``[databases]`` line (quoted as libpq does: '' for ')."""
    return "'" + value.replace("'", "''") + "'"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _option_names(options: str) -> list[str]:
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


def _libc_pdeathsig() -> None:
    """(In the child, before exec) die with the daemon: PgBouncer must not outlive it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class HostDaemon:
    """The daemon process itself (``podium pg-host``): see the module's docstring."""

    def __init__(self, url: str):
        self.url = url
        self.stop = False
        #: Set by ``release`` (SIGUSR1): exit as soon as nobody uses the daemon.
        self.released = False
        self.bouncer: subprocess.Popen | None = None
        self.bouncer_conninfo: str | None = None
        self.listen: Any = None  # the LISTEN connection (psycopg), None while it is down
        self._next_connect = 0.0
        self._connect_delay = 0.5
        self._bouncer_restarts = 0
        self._stopped = threading.Event()

    def log(self, msg: str) -> None:
        with contextlib.suppress(OSError):
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [pg-host {os.getpid()}] {msg}",
                  file=sys.stderr, flush=True)

    def run(self) -> int:
        from podium.store.postgres import PostgresStore

        self.pool = pool_size()
        store = PostgresStore(self.url, migrate=False, host_route=False)
        try:
            secret = store.store_secret()
            self.channels = (store.channel_events, store.channel_wake)
            self.wake_channel = store.channel_wake
        finally:
            store.close()
        self.dir = private_dir(host_dir(secret))
        self.relay = WakeChannel(wake_key(secret))
        lock = _lock_file(self.dir / "daemon.lock")
        deadline = time.monotonic() + 2.0
        while not _try_lock(lock, fcntl.LOCK_EX):  # (a starter may be looking at it)
            if time.monotonic() >= deadline:
                self.log("another daemon serves this host and store; exiting")
                return 0
            time.sleep(0.05)
        users = _lock_file(self.dir / "users.lock")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_release)
        try:
            self._connect_listen(first=True)
            self._start_bouncer()
            self._write_state()
            self.log(f"serving {self.dir} (PgBouncer: "
                     f"{'pool ' + str(self.pool) if self.bouncer_conninfo else 'none'})")
            beats = threading.Thread(target=self._beat_idle_agents, name="podium-host-beats",
                                     daemon=True)
            beats.start()
            self._loop(users, wake_r)
        finally:
            self._stopped.set()
            (self.dir / "state.json").unlink(missing_ok=True)
            self._stop_bouncer()
            for name in ("pgbouncer.ini", "pgbouncer.pid"):
                (self.dir / name).unlink(missing_ok=True)
            if self.listen is not None:
                with contextlib.suppress(Exception):
                    self.listen.close()
            self.relay.close()
            self.log("stopped")
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stop = True
        self._stopped.set()

    def _on_release(self, signum, frame) -> None:
        self.released = True

    # -- the idle agents' heartbeats (podium.store.hostbeats) ---------------------------
    def _beat_idle_agents(self) -> None:
        """Rounds of heartbeats for this host's idle agents, on a thread of their own (a slow
        server holds up the beats, which the workers then make themselves, never the relay),
        on a connection through PgBouncer (direct without one)."""
        import psycopg

        beater = hostbeats.HostBeater(self.dir, socket.gethostname())
        conn = None
        failing = False
        while not self._stopped.wait(max(0.0, beater.next_at - time.monotonic())):
            try:
                if conn is None:
                    conn = psycopg.connect(self.bouncer_conninfo or self.url, autocommit=True,
                                           connect_timeout=5, prepare_threshold=None)
                beater.beat(conn)
                if failing:
                    self.log("beating for idle agents again")
                failing = False
            except (psycopg.Error, OSError) as e:
                if not failing:
                    self.log(f"cannot beat for idle agents ({str(e).strip()}); their workers "
                             "beat on their own meanwhile")
                failing = True
                beater.next_at = time.monotonic() + hostbeats.DEFAULT_EVERY_S
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- the LISTEN relay -------------------------------------------------------------
    def _connect_listen(self, first: bool = False) -> bool:
        from podium.store.postgres import listen_connection

        try:
            # The wake channel last: ``pg_stat_activity.query`` then shows ``LISTEN <wake>``.
            self.listen = listen_connection(self.url, self.channels)
        except StoreError as e:
            if first:
                raise
            self.log(f"cannot listen ({e}); retrying in {self._connect_delay:.1f}s")
            self._next_connect = time.monotonic() + self._connect_delay
            self._connect_delay = min(5.0, self._connect_delay * 2)
            return False
        self._connect_delay = 0.5
        if not first:
            self.log("listening again")
        self._tell_everyone()
        return True

    def _tell_everyone(self) -> None:
        """After a (re)connect: notifications may have been missed; every agent looks for tasks
        handed to it, every watcher at the events. (``WakeChannel.notify`` takes hand-offs by
        agent id, unknown here: the agents' sockets are told directly.)"""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            for entry in os.scandir(self.relay.dir):
                if entry.name.endswith(".sock"):
                    with contextlib.suppress(OSError):
                        s.sendto(HANDED if entry.name.startswith("a.") else LOOK, entry.path)

    def _relay(self) -> None:
        """Everything the LISTEN connection has received, as one round of wake-ups."""
        from podium.store.postgres import HANDED_PREFIX, WAKE_ALL

        pg = self.listen.pgconn
        pg.consume_input()
        agents: set[str] = set()
        handed: set[str] = set()
        everyone = watchers = False
        while (n := pg.notifies()) is not None:
            if n.relname.decode() != self.wake_channel:
                watchers = True
                continue
            payload = n.extra.decode(errors="replace")
            if payload == WAKE_ALL:
                everyone = True
            elif payload.startswith(HANDED_PREFIX):
                handed.add(payload[len(HANDED_PREFIX):])
            else:
                agents.add(payload)
        if everyone or agents or handed:
            self.relay.notify(ALL_AGENTS if everyone else agents, watchers=False, handed=handed)
        if watchers:
            self.relay.notify((), watchers=True)

    def _loop(self, users: int, wake_r: int) -> None:
        busy_at = time.monotonic()  # (a grace period after start: its starter's workers come)
        checked_at = -math.inf  # (when it last looked whether anybody uses it)
        while not self.stop:
            now = time.monotonic()
            if self.listen is None and now >= self._next_connect:
                self._connect_listen()
            every = RELEASED_CHECK_S if self.released else CHECK_S
            if now - checked_at >= every:
                checked_at = now
                if not _try_lock(users, fcntl.LOCK_EX):
                    busy_at = now
                elif self.released or now - busy_at >= IDLE_EXIT_S:
                    self.log("the team on this host was stopped and no process uses this "
                             "daemon; exiting" if self.released else
                             f"no process has used this daemon for {IDLE_EXIT_S:g} s; exiting")
                    return  # (holding the lock: nobody attaches on the way out)
                else:
                    fcntl.flock(users, fcntl.LOCK_UN)
                self._check_bouncer()
            until = checked_at + every
            if self.listen is None:
                until = min(until, self._next_connect)
            fds = [wake_r]
            if self.listen is not None:
                with contextlib.suppress(Exception):  # (a broken connection has no socket)
                    fds.append(self.listen.pgconn.socket)
            if self.listen is not None and len(fds) == 1:
                ready = [-1]  # (_relay finds out, and reconnects)
            else:
                try:
                    ready, _, _ = select.select(fds, [], [], max(0.0, until - now))
                except (OSError, ValueError):
                    ready = fds[1:]
            if wake_r in ready:
                with contextlib.suppress(OSError):
                    while os.read(wake_r, 64):
                        pass
            if self.listen is not None and any(fd != wake_r for fd in ready):
                try:
                    self._relay()
                except Exception as e:  # (the connection broke: psycopg's error, or the relay's)
                    self.log(f"lost the LISTEN connection ({str(e).strip() or type(e).__name__})")
                    with contextlib.suppress(Exception):
                        self.listen.close()
                    self.listen = None
                    self._next_connect = time.monotonic()

    # -- PgBouncer ----------------------------------------------------------------------
    def _bouncer_ini(self) -> str:
        from podium.store.postgres import session_settings

        info = self.listen.info
        settings = {}
        for name in _option_names(info.options or ""):
            value = self.listen.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
            settings[name] = value
        settings.update(session_settings())
        self.listen.execute(f"LISTEN {self.wake_channel}")  # (its last query again: it shows)
        # Session settings go in ``connect_query``, run once on each new server connection: in
        # transaction mode PgBouncer never resets a server connection (no server_reset_query)
        # and only Podium uses this one, so they hold for every transaction on it -- unlike
        # SETs from the client, which would land on whichever server connection served that
        # statement. (SET LOCAL in every transaction would cost a statement each time.)
        connect_query = "; ".join(f"SELECT set_config({_sql_literal(k)}, {_sql_literal(v)}, false)"
                                  for k, v in settings.items())
        db = {"host": info.host, "port": str(info.port), "dbname": info.dbname,
              "user": info.user, "connect_query": connect_query}
        if info.password:
            db["password"] = info.password
        params = info.get_parameters()
        lines = ["[databases]",
                 f"{BOUNCER_DB} = " + " ".join(f"{k}={_ini_quote(v)}" for k, v in db.items()),
                 "[pgbouncer]",
                 "listen_addr =",
                 f"listen_port = {BOUNCER_PORT}",
                 f"unix_socket_dir = {self.dir}",
                 "unix_socket_mode = 0600",
                 "auth_type = any",  # (the socket is reachable by this user only)
                 "pool_mode = transaction",
                 f"default_pool_size = {self.pool}",
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
                 f"pidfile = {self.dir / 'pgbouncer.pid'}"]
        if self.listen.pgconn.ssl_in_use:
            sslmode = params.get("sslmode", "require")
            if sslmode in ("prefer", "allow"):  # (TLS was in use: keep it so)
                sslmode = "require"
            lines.append(f"server_tls_sslmode = {sslmode}")
            if params.get("sslrootcert"):
                lines.append(f"server_tls_ca_file = {params['sslrootcert']}")
        return "\n".join(lines) + "\n"

    def _start_bouncer(self) -> None:
        exe = shutil.which("pgbouncer")
        if exe is None:
            self.log("pgbouncer is not installed: relaying wake-ups only")
            return
        self._kill_stale_bouncer()
        ini = self.dir / "pgbouncer.ini"
        fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as f:
            f.write(self._bouncer_ini())
        argv = [exe, str(ini)]
        if os.geteuid() == 0:
            # PgBouncer refuses root. In a user namespace it is uid 1 there and still root
            # outside, so it can use root's private directory; nothing else changes for it.
            unshare = shutil.which("unshare")
            if unshare is None:
                self.log("running as root without unshare(1): PgBouncer cannot run; "
                         "relaying wake-ups only")
                return
            argv = [unshare, "--user", "--map-user=1", "--map-group=1", *argv]
        self.bouncer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True,
                                        preexec_fn=_libc_pdeathsig)
        conninfo = (f"host={self.dir} port={BOUNCER_PORT} dbname={BOUNCER_DB} "
                    f"user=podium connect_timeout=5")
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(conninfo, prepare_threshold=None) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.Error as e:
                if self.bouncer.poll() is not None or time.monotonic() > deadline:
                    self.log(f"PgBouncer did not start ({str(e).strip()}); relaying "
                             "wake-ups only")
                    self._stop_bouncer()
                    return
                time.sleep(0.05)
        self.bouncer_conninfo = conninfo

    def _kill_stale_bouncer(self) -> None:
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

    def _check_bouncer(self) -> None:
        """PgBouncer died under the daemon: start it again (a few times)."""
        if self.bouncer is None or self.bouncer.poll() is None:
            return
        self.log(f"PgBouncer exited with code {self.bouncer.returncode}")
        self.bouncer, self.bouncer_conninfo = None, None
        if self._bouncer_restarts < 5:
            self._bouncer_restarts += 1
            self._start_bouncer()
        if self.bouncer_conninfo is None:  # (its users would fail: let them start afresh)
            self.log("PgBouncer cannot be started again; exiting")
            self.stop = True

    def _stop_bouncer(self) -> None:
        if self.bouncer is None:
            return
        with contextlib.suppress(OSError):
            self.bouncer.terminate()
        try:
            self.bouncer.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.bouncer.kill()
            self.bouncer.wait()
        self.bouncer = None

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "bouncer": self.bouncer_conninfo,
                 "pool": self.pool if self.bouncer_conninfo else 0}
        write_private(self.dir / "state.json", json.dumps(state).encode())
        write_private(_url_pointer(self.url), self.dir.name.encode())
