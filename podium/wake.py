"""Cross-process wake-ups for one SQLite store.

Each waiting process binds a Unix datagram socket in a directory that belongs to the store.
After a commit that matters to them, writers send one byte to the sockets concerned: an idle
agent wakes from ``select`` within microseconds instead of polling the database. A wake-up
carries no data but its kind — ``.`` for a plain wake-up, after which the woken process re-reads
the store — except a hand-off: ``p`` followed by the task handed to that agent (see
``SqlStore.add_tasks``), which the agent starts without reading the store. Sockets
whose process died are removed by the first writer that finds them refusing.

Socket names: ``a.<hash of agent id>.sock`` for agents (so a task aimed at one agent wakes only
that agent) and ``w.<pid>.<random>.sock`` for watchers that want every event.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import secrets
import select
import socket
import tempfile
import time
from pathlib import Path

ALL_AGENTS = object()
#: The largest datagram sent or read (a hand-off's payload is kept below it).
MAX_DATAGRAM = 65_536


@functools.lru_cache(maxsize=4096)
def _agent_sock_name(agent_id: str) -> str:
    return "a." + hashlib.sha1(agent_id.encode("utf-8")).hexdigest()[:12] + ".sock"


def channel_dir(store_key: str) -> Path:
    """A short directory (socket paths are limited to ~108 bytes) private to this user."""
    base = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
    digest = hashlib.sha256(store_key.encode("utf-8")).hexdigest()[:16]
    return base / f"podium-{os.getuid()}" / digest


class Listener:
    """One bound socket; ``wait`` returns when poked or when the timeout passes."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(str(path))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            # A previous process with this name died without cleaning up.
            path.unlink(missing_ok=True)
            self.sock.bind(str(path))
        self.sock.setblocking(False)
        self._inode = os.stat(path).st_ino
        self._handed: list[bytes] = []
        self._buf = bytearray(MAX_DATAGRAM)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        n = 0
        while True:
            try:
                size = self.sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return n
            n += 1
            if size and self._buf[0] == 0x70:  # b"p": a hand-off, and its task if it fitted
                self._handed.append(bytes(self._buf[1:size]))

    def take_push(self) -> list[bytes]:
        """The hand-offs that arrived since the last call (seen by ``wait``): each one's task
        payload, or ``b""`` when the task has to be read from the store."""
        handed, self._handed = self._handed, []
        return handed

    def wait(self, timeout: float | None) -> bool:
        """Block until a wake-up arrives (True) or ``timeout`` seconds pass (False)."""
        if self.drain():
            return True
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
        except InterruptedError:  # a signal: let the caller look at its flags
            return True
        if ready:
            self.drain()
            return True
        return False

    def poke(self) -> None:
        """Wake this listener from inside its own process (signal handlers, other threads)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                # Never block: a full queue means a wake-up is pending already, and a blocking
                # send to our own undrained socket (inline backends, signal handlers) hangs.
                s.setblocking(False)
                s.sendto(b"!", str(self.path))
        except OSError:
            pass

    def close(self) -> None:
        """Close, and remove the socket file unless a newer listener has taken the name."""
        try:
            self.sock.close()
        finally:
            try:
                if os.stat(self.path).st_ino == self._inode:
                    self.path.unlink()
            except FileNotFoundError:
                pass


class WakeChannel:
    """The wake-up directory of one store."""

    def __init__(self, store_key: str):
        self.dir = channel_dir(store_key)
        self._prefix = str(self.dir) + os.sep  # (paths built per wake-up: kept as text)
        self._sender: socket.socket | None = None
        self._listing: tuple[int, list[str]] | None = None

    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def agent_listener(self, agent_id: str) -> Listener:
        self._ensure_dir()
        return Listener(self.dir / _agent_sock_name(agent_id))

    def watch_listener(self) -> Listener:
        self._ensure_dir()
        return Listener(self.dir / f"w.{os.getpid()}.{secrets.token_hex(4)}.sock")

    def _names(self) -> list[str]:
        try:
            mtime = os.stat(self._prefix).st_mtime_ns
        except FileNotFoundError:
            return []
        # Directory times tick coarsely (several ms): trust a cached listing only once its
        # mtime is old enough that a later change could not share the same tick.
        fresh = time.time_ns() - mtime < 200_000_000
        if self._listing is None or self._listing[0] != mtime or fresh:
            try:
                names = [e.name for e in os.scandir(self.dir) if e.name.endswith(".sock")]
            except FileNotFoundError:
                names = []
            self._listing = (mtime, names)
        return self._listing[1]

    def notify(self, agents: object = (), watchers: bool = True,
               pushed: list[tuple[str, bytes]] = ()) -> None:
        """Wake the given agents (an iterable of ids, or ``ALL_AGENTS``) and all watchers, and
        hand the ``pushed`` agents their task payloads."""
        names = self._names()
        if not names:
            return
        handed = {_agent_sock_name(a): b"p" + payload for a, payload in pushed}
        if agents is ALL_AGENTS:
            targets = [n for n in names if n.startswith("a.") or (watchers and n.startswith("w."))]
        else:
            wanted = {_agent_sock_name(a) for a in agents}  # type: ignore[union-attr]
            targets = [n for n in names if n in wanted or n in handed or
                       (watchers and n.startswith("w."))]
        if not targets:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for name in targets:
            path = self._prefix + name
            try:
                data = handed.get(name, b".")
                try:
                    self._sender.sendto(data, path)
                except OSError as e:
                    if e.errno != errno.EMSGSIZE or len(data) == 1:
                        raise
                    self._sender.sendto(b"p", path)  # too big here: the agent reads the task
            except (BlockingIOError, InterruptedError):
                pass  # its queue is full: it has a wake-up pending already
            except (ConnectionRefusedError, FileNotFoundError):
                try:
                    os.unlink(path)  # its process is gone
                except OSError:
                    pass
                self._listing = None
            except OSError:
                pass

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
