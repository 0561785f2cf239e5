"""The host daemon of a PostgreSQL store, as the processes that use it see it: one daemon per
(host, store) holds the host's only ``LISTEN`` connection and runs PgBouncer, so that a host
costs the server a few connections however many agents it runs. This module finds, starts and
holds it; the daemon itself is ``daemon``, its PgBouncer ``bouncer``.

Without it every worker holds a pool and a ``LISTEN`` connection of its own, and a stock server
(``max_connections = 100``) is full at about 30 agents. With it:

* **Wake-ups.** The daemon listens on the store's wake and events channels and relays each
  notification to this host's processes through the sockets the SQLite store uses
  (``podium.wake.WakeChannel``): ``*`` wakes every agent, an agent's id that agent, ``h:`` and
  an agent's id tells that agent a task was handed to it, and an event wakes the watchers. Only
  hints, as before: whoever is woken reads the store. After its connection came back
  (notifications may have been missed meanwhile), it tells every agent to look for hand-offs.
* **Transactions.** PgBouncer (Debian's ``pgbouncer`` package), the daemon's child, in
  transaction pooling mode, keeps a small pool of server connections (``PODIUM_PG_POOL``, default
  8) that every process on the host shares, on a Unix socket in the daemon's directory under
  ``podium.wake.runtime_dir()`` (0700, this user's alone). Without PgBouncer the daemon still
  relays wake-ups, and each process connects directly with one connection.
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
wake-up sockets carry on (a new daemon that could not start PgBouncer: its pool connects
directly instead, ``PostgresStore._route_failed``). (PgBouncer is told to die with the daemon;
as root, the user namespace clears that, and a new daemon stops a PgBouncer left behind; left
alone, it closes its idle server connections after ``server_idle_timeout``.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from podium import detach, pids
from podium.errors import InvalidInput, StoreError
from podium.wake import check_private, private_dir, runtime_dir

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


def url_pointer(url: str) -> Path:
    """Names the daemon started for ``url`` on this host (written by it; checked on use)."""
    digest = hashlib.sha256(f"podium url {socket.gethostname()} {url}".encode()).hexdigest()
    return runtime_dir() / f"pg.url.{digest[:16]}"


def _state_for(url: str) -> dict | None:
    """The state of the live daemon started for ``url`` on this host, if any."""
    try:
        name = url_pointer(url).read_text().strip()
    except OSError:
        return None
    if not (name.startswith("pg.") and len(name) == 19 and name[3:].isalnum()):
        return None
    return daemon_live(runtime_dir() / name)


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


def lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def try_lock(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def daemon_live(d: Path) -> dict | None:
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
        if try_lock(fd, fcntl.LOCK_SH):  # (nobody holds it: the state is a dead daemon's)
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
    daemon_pid: int = 0
    _fd: int = field(repr=False, default=-1)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _hold_users(d: Path, wait_s: float) -> int | None:
    """A shared lock on ``users.lock`` (the daemon cannot go idle while it is held); None when
    the daemon is on its way out for longer than ``wait_s``."""
    fd = lock_file(d / "users.lock")
    deadline = time.monotonic() + wait_s
    while not try_lock(fd, fcntl.LOCK_SH):
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
    state = daemon_live(d)
    if state is None:
        os.close(fd)
        return None
    return _route(secret, state, fd)


def ensure(url: str, secret: str) -> Route:
    """This host's daemon for the store at ``url``, started when none is live; its route (held:
    the caller closes it)."""
    mode()
    pool_size()  # (bad settings: one clear line here, not in the daemon's log)
    d = private_dir(host_dir(secret))
    fd = _hold_users(d, 5.0)
    if fd is None:
        raise StoreError(f"the PostgreSQL host daemon in {d} does not finish stopping")
    starting = lock_file(d / "starting.lock")  # (one starter at a time; the others wait)
    try:
        fcntl.flock(starting, fcntl.LOCK_EX)
        state = daemon_live(d) or _start(url, d)
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.close(starting)
    return _route(secret, state, fd)


def _route(secret: str, state: dict, fd: int) -> Route:
    return Route(wake_key(secret), state.get("bouncer"), int(state.get("pool", 0)),
                 int(state.get("pid", 0)), fd)


def revive(route: Route, url: str, secret: str) -> Route:
    """After a failed connection through ``route``: the same route while its daemon lives;
    otherwise (the daemon was killed) the route of the daemon live now -- started afresh here,
    or by another process of the host first -- whose sockets have the same paths (its PgBouncer
    too, when it has one)."""
    state = daemon_live(host_dir(secret))
    if state is not None and int(state.get("pid", 0)) == route.daemon_pid:
        return route
    new = ensure(url, secret)
    route.close()
    return new


def _start(url: str, d: Path) -> dict:
    log = os.open(d / "daemon.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    start = os.fstat(log).st_size
    env = {**os.environ, "PODIUM_STORE": url, MODE_ENV: "off"}  # (not in argv: the password)
    try:
        # (detached: the caller may be a worker, whose reaper ends its children after each
        # program; the daemon serves the whole host beyond it)
        pid = detach.start([sys.executable, "-m", "podium", "pg-host"], env=env, log_fd=log,
                           cwd="/")
    except (OSError, subprocess.SubprocessError) as e:
        raise StoreError(f"the PostgreSQL host daemon did not start: {e}") from None
    finally:
        os.close(log)
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        state = daemon_live(d)
        if state is not None:
            return state
        # (gone, and no other starter's daemon serves instead: the log says why)
        if not pids.exists(pid) and daemon_live(d) is None:
            with open(d / "daemon.log", "rb") as f:
                f.seek(start)
                tail = f.read().decode(errors="replace").strip().splitlines()[-1:]
            why = tail[0] if tail else "it exited"
            raise StoreError(f"the PostgreSQL host daemon did not start: {why} "
                             f"(log: {d}/daemon.log)")
        time.sleep(0.02)
    raise StoreError(f"the PostgreSQL host daemon was not ready within {READY_WAIT_S:g} s "
                     f"(log: {d}/daemon.log)")
