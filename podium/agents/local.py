"""This host's own record of the agents it runs, kept beside the store rather than in it.

``podium down`` asks the store which agents of this host to stop; when the store cannot answer
(its server unreachable, its disk full, its file gone) it still has to stop them, so each
worker also leaves a small record on this host: its name, pid, the process's start time (from
``/proc``: a pid reused by another process since does not match), its log and the store it
serves. A record is written once the worker has registered and removed when it exits; one
whose process is gone is pruned by the next listing.

Records live in this user's private runtime directory (``podium.wake.runtime_dir()``), in one
directory per store — ``agents-<hash>``, the hash of the store's URL as the worker was given it
(an SQLite file's resolved path; a PostgreSQL URL without its password), which can be worked
out without reaching the store — made 0700, each record 0600, whatever the umask. One file per
process (``<hash of name>.<pid>.json``), so a record is only ever removed by its own process or
once that process is gone. ``running_here`` tells by them (or by the process's ``--name``)
whether an agent the store names still runs on this host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from podium import pids, wake
from podium.models import Agent
from podium.pids import start_time
from podium.store.pgconnect import without_password


def _canonical(store_url: str) -> str:
    """The store's URL as records are keyed: a PostgreSQL URL loses its password and the
    ``postgres`` spelling of its scheme; an ``sqlite://`` URL stays as it is."""
    url = without_password(store_url)[0]
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    return url


def records_dir(store_url: str) -> Path:
    """Where the records of the store at ``store_url`` (as ``Store.url`` spells it) are kept."""
    digest = hashlib.sha256(f"podium local agents {_canonical(store_url)}".encode()).hexdigest()
    return wake.runtime_dir() / f"agents-{digest[:16]}"


@dataclass(frozen=True)
class LocalAgent:
    """One record: an agent process of this host."""

    name: str
    pid: int
    started: int  # (``start_time`` of the process when it wrote the record)
    store: str  # the store's URL, without a password
    log: str | None  # where its output goes, when that is a file
    path: Path  # the record's file

    def running(self) -> bool:
        """Whether the recorded process still runs (the same process, not a reused pid)."""
        return start_time(self.pid) == self.started

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the recorded process if it still runs; whether it was sent. (Through
        a pidfd: the process checked is the one signalled, even if it exits meanwhile.)"""
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        except OSError:  # (a kernel without pidfds, before Linux 5.3: check, then signal)
            if not self.running():
                return False
            with contextlib.suppress(OSError):
                os.kill(self.pid, sig)
                return True
            return False
        try:
            if not self.running():
                return False
            signal.pidfd_send_signal(fd, sig)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def kill(self) -> bool:
        """SIGKILL the process, with its process group when it leads one (as ``podium up``
        starts workers: each in a session of its own); whether it was still running."""
        try:
            leads_group = os.getpgid(self.pid) == self.pid
        except OSError:
            return False
        if not self.signal(signal.SIGKILL):
            return False
        if leads_group:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
        return True


def _file_name(name: str, pid: int) -> str:
    return f"{hashlib.sha1(name.encode('utf-8')).hexdigest()[:16]}.{pid}.json"


def _log_path() -> str | None:
    """The file this process's stderr goes to, if it is one."""
    try:
        target = os.readlink("/proc/self/fd/2")
    except OSError:
        return None
    return target if target.startswith("/") and os.path.isfile(target) else None


def record(store_url: str, name: str) -> Path:
    """Record this process as agent ``name`` of the store at ``store_url``; the record's path.
    Raises StoreError (the directory is not private to this user) or OSError."""
    pid = os.getpid()
    started = start_time(pid)
    if started is None:
        raise OSError(f"cannot read /proc/{pid}/stat")
    d = wake.private_dir(records_dir(store_url))
    body = json.dumps({"name": name, "pid": pid, "started": started,
                       "store": _canonical(store_url), "log": _log_path()}).encode()
    path = d / _file_name(name, pid)
    wake.write_private(path, body)
    return path


def forget(store_url: str, name: str) -> None:
    """Remove this process's record as agent ``name`` (none: nothing to do)."""
    with contextlib.suppress(OSError):
        os.unlink(records_dir(store_url) / _file_name(name, os.getpid()))


def _read(path: Path) -> LocalAgent | None:
    try:
        data = json.loads(path.read_bytes())
        return LocalAgent(str(data["name"]), int(data["pid"]), int(data["started"]),
                          str(data["store"]), data.get("log"), path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live(store_url: str) -> list[LocalAgent]:
    """The recorded agents of the store at ``store_url`` whose processes still run, by name;
    records of processes that are gone (or unreadable) are removed. Raises StoreError when the
    directory is not private to this user."""
    d = records_dir(store_url)
    if not d.exists():
        return []
    wake.check_private(d)
    found = []
    for path in d.glob("*.json"):
        agent = _read(path)
        if agent is not None and agent.running():
            found.append(agent)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(found, key=lambda a: (a.name, a.pid))


def any_live(store_url: str) -> bool:
    """Whether any recorded agent of the store at ``store_url`` still runs (``live``, stopping
    at the first: asked often by the memory indexer, whatever the team's size)."""
    d = records_dir(store_url)
    if not d.exists():
        return False
    wake.check_private(d)
    for path in d.glob("*.json"):
        agent = _read(path)
        if agent is not None and agent.running():
            return True
    return False


def running_here(agent: Agent, store_url: str) -> bool | None:
    """Whether the agent's process still runs on this host (its pid, recorded by the worker of
    that name for the store at ``store_url``, or running ``--name`` it: an agent started
    by hand before it recorded itself, an interactive one); None when it is another host's,
    which only the store knows of."""
    if agent.host != socket.gethostname():
        return None
    if not agent.pid or not pids.exists(agent.pid):
        return False
    if any(r.name == agent.id and r.pid == agent.pid for r in live(store_url)):
        return True  # (the same process: a record's start time is checked)
    try:
        with open(f"/proc/{agent.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    name = agent.id.encode()
    return any(a == b"--name" and b == name for a, b in zip(argv, argv[1:]))
