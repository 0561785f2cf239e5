"""Cross-process wake-ups for one SQLite store: hints, never commands.

Each waiting process binds a Unix datagram socket in a directory that belongs to the store.
After a commit that matters to them, writers send one byte to the sockets concerned: an idle
agent wakes from ``select`` within microseconds instead of polling the database. A wake-up
carries nothing but a hint — ``.`` "look at the store", ``h`` "a task was handed to you, read
it from the store" — so whatever arrives on a socket can at most make a process read the
store: what runs always comes from the store. Sockets whose process died are removed by the
first writer that finds them refusing.

The directory is private to this user, as tmux's and ssh's are: ``$XDG_RUNTIME_DIR/podium``
when that is set, else ``/tmp/podium-<uid>``, created 0700 and checked on every use (a
directory, not a symlink, owned by this user, no access for anyone else). Another local user
who made it first cannot receive or forge wake-ups: Podium refuses to use it and says why.

Socket names: ``a.<hash of agent id>.sock`` for agents (so a task aimed at one agent wakes only
that agent) and ``w.<pid>.<random>.sock`` for watchers that want every event.
"""

from __future__ import annotations

import enum
import errno
import functools
import hashlib
import os
import secrets
import select
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from podium.errors import StoreError


class AllAgents(enum.Enum):
    """The type of ``ALL_AGENTS``: a one-member enum, so that type checkers tell it from a set
    of agent ids after ``is ALL_AGENTS`` (they cannot with a plain ``object()``)."""

    ALL_AGENTS = "all agents"


#: In place of agent ids: wake every agent.
ALL_AGENTS: Final = AllAgents.ALL_AGENTS
#: The wake-up kinds (one byte each).
LOOK, HANDED = b".", b"h"


@functools.lru_cache(maxsize=4096)
def _agent_sock_name(agent_id: str) -> str:
    return "a." + hashlib.sha1(agent_id.encode("utf-8")).hexdigest()[:12] + ".sock"


def runtime_dir() -> Path:
    """This user's directory for wake-up sockets (see the module's docstring)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "podium"
    return Path("/tmp") / f"podium-{os.getuid()}"


def channel_dir(store_key: str) -> Path:
    """A short directory (socket paths are limited to ~108 bytes) for one store's sockets."""
    digest = hashlib.sha256(store_key.encode("utf-8")).hexdigest()[:16]
    return runtime_dir() / digest


def private_dir(path: Path) -> Path:
    """Make ``path`` (and the runtime directory above it) when missing, then check that each is
    ours alone; StoreError saying what is wrong otherwise."""
    for d in (path.parent, path):
        try:
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)  # (whatever the umask took away)
        except FileExistsError:
            pass
        except OSError as e:
            raise StoreError(f"cannot create the wake-up directory {d}: {e.strerror}") from None
        check_private(d)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a reader sees the old file or the new one), mode
    0600 whatever the umask, never through a link. Raises OSError."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with open(fd, "wb") as f:
        os.fchmod(fd, 0o600)
        f.write(data)
    os.replace(tmp, path)


def check_private(d: Path) -> None:
    """Refuse a directory that another user could have made, that is reached through a link,
    or that others may read or write."""
    try:
        st = os.lstat(d)
    except OSError as e:
        raise StoreError(f"cannot use the wake-up directory {d}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"the wake-up directory {d} is not a directory (a symlink or a file "
                         "someone put there); remove it and try again")
    if st.st_uid != os.getuid():
        raise StoreError(f"the wake-up directory {d} belongs to uid {st.st_uid}, not to you "
                         f"(uid {os.getuid()}): another user made it; remove it, or set "
                         "XDG_RUNTIME_DIR to a private directory of yours")
    if st.st_mode & 0o077:
        raise StoreError(f"the wake-up directory {d} is open to other users (mode "
                         f"{stat.S_IMODE(st.st_mode):o}); run 'chmod 700 {d}' if you made it")


class Listener:
    """One bound socket; ``wait`` returns when poked or when the timeout passes."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(str(path))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                self.sock.close()
                raise StoreError(f"cannot listen for wake-ups at {path}: {e.strerror}") from None
            # A previous process with this name died without cleaning up.
            path.unlink(missing_ok=True)
            self.sock.bind(str(path))
        self.sock.setblocking(False)
        self._inode = os.stat(path).st_ino
        self._handed = False
        self._buf = bytearray(64)

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
            if size and self._buf[0] == HANDED[0]:
                self._handed = True

    def handed_over(self) -> bool:
        """Whether a wake-up since the last call said a task was handed to this agent (a hint:
        the store says which, if any)."""
        handed, self._handed = self._handed, False
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

    def agent_listener(self, agent_id: str) -> Listener:
        return Listener(private_dir(self.dir) / _agent_sock_name(agent_id))

    def watch_listener(self) -> Listener:
        return Listener(private_dir(self.dir) / f"w.{os.getpid()}.{secrets.token_hex(4)}.sock")

    def _names(self) -> list[str]:
        try:
            st = os.lstat(self._prefix[:-1])
        except FileNotFoundError:
            return []  # no process listens yet
        except OSError:
            check_private(self.dir.parent)  # (says what is wrong with it)
            raise
        mtime = st.st_mtime_ns
        # Directory times tick coarsely (several ms): trust a cached listing only once its
        # mtime is old enough that a later change could not share the same tick.
        fresh = time.time_ns() - mtime < 200_000_000
        if self._listing is None or self._listing[0] != mtime or fresh:
            check_private(self.dir.parent)
            check_private(self.dir)
            try:
                names = [e.name for e in os.scandir(self.dir) if e.name.endswith(".sock")]
            except FileNotFoundError:
                names = []
            self._listing = (mtime, names)
        return self._listing[1]

    def notify(self, agents: Iterable[str] | AllAgents = (), watchers: bool = True,
               handed: set[str] | frozenset[str] = frozenset()) -> None:
        """Wake the given agents (an iterable of ids, or ``ALL_AGENTS``) and all watchers; tell
        the ``handed`` agents that a task was handed to them. Raises StoreError when the
        directory is not private (see ``check_private``)."""
        names = self._names()
        if not names:
            return
        told = {_agent_sock_name(a) for a in handed}
        if agents is ALL_AGENTS:
            targets = [n for n in names if n.startswith("a.") or (watchers and n.startswith("w."))]
        else:
            wanted = {_agent_sock_name(a) for a in agents}
            targets = [n for n in names if n in wanted or n in told or
                       (watchers and n.startswith("w."))]
        if not targets:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for name in targets:
            path = self._prefix + name
            try:
                self._sender.sendto(HANDED if name in told else LOOK, path)
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
