"""The host daemon itself (``podium pg-host``): one process per (host, store) that holds the
host's only ``LISTEN`` connection and relays its notifications to this host's processes, runs the
host's PgBouncer (``bouncer``) and beats for the host's idle agents (``podium.store.hostbeats``).
It exits once nobody has used it for ``IDLE_EXIT_S`` (see ``podium.store.pghost``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from podium.errors import StoreError
from podium.store import hostbeats
from podium.store.pgconnect import HANDED_PREFIX, WAKE_ALL, listen_connection
from podium.store.pghost import (
    CHECK_S,
    IDLE_EXIT_S,
    RELEASED_CHECK_S,
    host_dir,
    lock_file,
    pool_size,
    try_lock,
    url_pointer,
    wake_key,
)
from podium.store.pghost.bouncer import Bouncer
from podium.wake import ALL_AGENTS, HANDED, LOOK, WakeChannel, private_dir, write_private


class HostDaemon:
    """The daemon process: see the module's docstring."""

    def __init__(self, url: str):
        self.url = url
        self.stop = False
        #: Set by ``release`` (SIGUSR1): exit as soon as nobody uses the daemon.
        self.released = False
        self.listen: Any = None  # the LISTEN connection (psycopg), None while it is down
        self._next_connect = 0.0
        self._connect_delay = 0.5
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
        self.bouncer = Bouncer(self.dir, self.log)
        lock = lock_file(self.dir / "daemon.lock")
        deadline = time.monotonic() + 2.0
        while not try_lock(lock, fcntl.LOCK_EX):  # (a starter may be looking at it)
            if time.monotonic() >= deadline:
                self.log("another daemon serves this host and store; exiting")
                return 0
            time.sleep(0.05)
        users = lock_file(self.dir / "users.lock")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_release)
        try:
            self._connect_listen(first=True)
            self.bouncer.start(self.listen, self.pool)
            # (its last query again, after the bouncer's look at the settings: it shows in
            # ``pg_stat_activity``)
            self.listen.execute(f"LISTEN {self.wake_channel}")
            self._write_state()
            self.log(f"serving {self.dir} (PgBouncer: "
                     f"{'pool ' + str(self.pool) if self.bouncer.conninfo else 'none'})")
            beats = threading.Thread(target=self._beat_idle_agents, name="podium-host-beats",
                                     daemon=True)
            beats.start()
            self._loop(users, wake_r)
        finally:
            self._stopped.set()
            (self.dir / "state.json").unlink(missing_ok=True)
            self.bouncer.stop()
            if self.listen is not None:
                with contextlib.suppress(Exception):
                    self.listen.close()
            self.relay.close()
            self.log("stopped")
        return 0

    def _on_signal(self, signum, frame) -> None:
        # (a flag only: the main loop, woken by the signal's byte on the wake-up pipe, stops;
        # setting the Event here could deadlock on its lock if the signal came while the main
        # thread held it)
        self.stop = True

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
                    conn = psycopg.connect(self.bouncer.conninfo or self.url, autocommit=True,
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
                if not try_lock(users, fcntl.LOCK_EX):
                    busy_at = now
                elif self.released or now - busy_at >= IDLE_EXIT_S:
                    self.log("the team on this host was stopped and no process uses this "
                             "daemon; exiting" if self.released else
                             f"no process has used this daemon for {IDLE_EXIT_S:g} s; exiting")
                    return  # (holding the lock: nobody attaches on the way out)
                else:
                    fcntl.flock(users, fcntl.LOCK_UN)
                if not self.bouncer.check():
                    self.log("PgBouncer cannot be started again; exiting")
                    return
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


    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "bouncer": self.bouncer.conninfo,
                 "pool": self.pool if self.bouncer.conninfo else 0}
        write_private(self.dir / "state.json", json.dumps(state).encode())
        write_private(url_pointer(self.url), self.dir.name.encode())
