"""The host's memory indexer: a process of its own that remembers the team's finished work as
it finishes, so that no worker pays for it.

Turning a finished task into memories needs the embedding model: tens of milliseconds of CPU
per task and 150-300 MB of memory once loaded. A worker's own thread would share its GIL, and a
claim waiting for the GIL behind a model run costs milliseconds (measured: the dispatch p50
went from 0.8 to 8 ms); a worker's child would be one more process its reaper must look through
after every program. So one process per host and store does it, ``podium memory index
--follow``: it holds the election lock (a ``flock`` on a file in this user's private runtime
directory), follows the event log (woken as events are committed, and looking every
LOOK_EVERY_S besides; nothing is added to any commit), and runs at the lowest CPU priority from
its first instruction (nice 19; and, where the kernel schedules sessions as groups — autogroup,
on by default in most distributions — in a session of its own whose group is niced to 19 too:
otherwise its session would get as large a share of the CPU as any worker's, whatever the nice
value of its process). It works in the team's quiet moments: once no event has been committed
for QUIET_S, and its model runs stop at the next event (a model run beside a dispatch slows the
dispatch even at nice 19, on a machine of few cores); a team busy for MAX_DEFER_S without a
pause gets one slice of its work then. Its writes are short transactions of a few rows; after
each one it pauses for PACE times as long as the transaction took, so it holds the store's
writer lock a small share of the time however fast tasks finish. (A writer that waits for that
lock sleeps, so the indexer, low as its priority is, then has the CPU to finish its
transaction; only a machine whose every core is kept busy by other work can make that wait
long.)

Started by a worker (``WorkerMemory.start_indexer``, when ``PODIUM_MEMORY_INDEX`` is ``on``, the
default) that finds the lock free as it starts, detached (``podium.detach``): it is nobody's
child. It exits once this host has had no live agent of
the store (``podium.agents.local``) for ``LINGER_S``, or at once when ``podium down`` stopped the
host's team (``release``: SIGUSR1); by hand (``podium memory index --follow``) it runs until
stopped. Whatever it has not got to is remembered by the next read of memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from podium import detach, pids
from podium.errors import Conflict, PodiumError, StoreError
from podium.service.memory_index import MemoryIndex
from podium.store.pgconnect import without_password
from podium.wake import channel_dir, private_dir

#: How often an idle indexer looks for new work without being woken: it sleeps on the store's
#: event wake-ups (a task that finished wakes it), so this is only a safety net, and what an
#: idle team pays for it (two reads of the store). Lingering, it also wakes every LINGER_S / 2
#: to look at this host's agents' records (local files only).
LOOK_EVERY_S = 30.0
#: How long an indexer's claim on the memories it embeds lasts (a batch takes well under a
#: second): the indexers of several hosts sharing a PostgreSQL store never embed the same
#: ones, and those of an indexer that died are taken again after this.
CLAIM_S = 60.0
#: A spawned indexer exits once its host has had no live agent of its store for this long.
LINGER_S = 5.0
#: Memories embedded per model run, and finished tasks remembered per transaction: each of
#: its transactions holds the store's writer lock for a fraction of a millisecond.
BATCH = 8
#: Seconds of remembering, then of embedding, before the indexer turns to the other.
SLICE_S = 1.0
#: After a transaction of remembering, the indexer pauses this many times as long as it took.
PACE = 4.0
#: The indexer starts work once no event has been committed for QUIET_S, and stops embedding
#: at the next one: on two cores, a model run beside a dispatch doubled its median even at
#: nice 19 (bench/scale.py, PostgreSQL at 200 agents: p50 3.2-3.9 ms without the indexer,
#: 4.8 with it; p99 4.9-5.7 against 14-106 ms). A team that never pauses for MAX_DEFER_S gets
#: a whole slice of work then, so memory falls behind by a bounded share of the CPU at most.
QUIET_S = 0.5
MAX_DEFER_S = 30.0
#: After a failure (no model, the store away), how long before it tries again.
RETRY_AFTER_S = 30.0
#: Environment a task's programs carry (``podium.orphans``): the indexer is no task's.
TASK_MARKERS = ("PODIUM_AGENT_ID", "PODIUM_TASK_ID", "PODIUM_TASK_CONTEXT")


def _dir_of(store_url: str) -> Path:
    return channel_dir(f"podium memory indexer {without_password(store_url)[0]}")


def indexer_dir(store_url: str) -> Path:
    """This user's private directory for the indexer of the store at ``store_url`` (made and
    checked: 0700, this user's, not a link)."""
    return private_dir(_dir_of(store_url))


def try_lock(store_url: str) -> int | None:
    """The election lock's descriptor, locked, or None when another process holds it."""
    fd = os.open(indexer_dir(store_url) / "indexer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def running_indexer(store_url: str) -> int | None:
    """The pid of the indexer that holds the store's lock on this host, or None (nothing is
    made when there has been none)."""
    path = _dir_of(store_url) / "indexer.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # (free: nobody holds it)
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def release(store_url: str) -> bool:
    """Tell this host's indexer of the store that the host's team was stopped: one a worker
    started exits now, not ``LINGER_S`` later (one started by hand runs on). False when none
    runs."""
    return pids.tell(running_indexer(store_url), signal.SIGUSR1)


def lowest_priority(own_session: bool) -> None:
    """Nice 19 for this process; with ``own_session`` (spawned), in a session of its own whose
    scheduling group (Linux's autogroup; nothing where there is none) is niced to 19 too."""
    with contextlib.suppress(OSError):
        os.nice(max(0, 19 - os.nice(0)))
    if own_session:
        with contextlib.suppress(OSError):
            os.setsid()  # (the shell that started it made a session; it leads one of its own)
    if own_session and os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
            f.write("19")


def spawn(store_url: str, lock_fd: int) -> None:
    """Start ``podium memory index --follow`` holding ``lock_fd`` (locked), detached
    (``podium.detach``: no child of the caller). The store's URL goes in the environment (a
    password in an argument would show in ``ps``)."""
    log_path = indexer_dir(store_url) / "indexer.log"
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    env = {k: v for k, v in os.environ.items() if k not in TASK_MARKERS}
    env["PODIUM_STORE"] = store_url
    nice = shutil.which("nice")
    argv = [*([nice, "-n", "19"] if nice else []), sys.executable, "-m", "podium", "memory",
            "index", "--follow", "--lock-fd", str(lock_fd)]
    try:
        os.set_inheritable(lock_fd, True)
        detach.start(argv, env=env, log_fd=log, pass_fds=(lock_fd,))
    finally:
        os.close(log)


class HostIndexer:
    """The loop of ``podium memory index --follow`` over ``index``; ``lock_fd``: the election
    lock it was given (None: it takes it); ``linger``: exit once the host has no live agent."""

    def __init__(self, index: MemoryIndex, lock_fd: int | None, linger: bool,
                 say: Callable[[str], None]):
        self.index = index
        self.url = index.store.url
        self.linger = linger
        self.say = say
        self.stopping = False
        self.released = False  # (``release``: the host's team was stopped)
        if lock_fd is None:
            lock_fd = try_lock(self.url)
            if lock_fd is None:
                pid = running_indexer(self.url)
                raise Conflict(f"the memory indexer of this store already runs on this host"
                               f"{f' (pid {pid})' if pid else ''}")
        else:  # (given by the worker that started it: check that it is the locked file)
            try:
                given, lock = os.fstat(lock_fd), os.stat(indexer_dir(self.url) / "indexer.lock")
                if (given.st_dev, given.st_ino) != (lock.st_dev, lock.st_ino):
                    raise OSError("another file")
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                raise StoreError(f"--lock-fd {lock_fd}: not the indexer's lock ({e})") from None
        self.lock_fd = lock_fd
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # (``release``'s, from the pid below on)
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
        lowest_priority(own_session=linger)

    def _agents_here(self) -> bool:
        from podium.agents import local

        try:
            return local.any_live(self.url)
        except (OSError, PodiumError):
            return True

    def _stop(self, *_: object) -> None:
        self.stopping = True
        self._waiter.poke()

    def _release(self, *_: object) -> None:
        if self.linger:
            self.released = True
            self._stop()

    def run(self) -> int:
        """Remember until stopped (or, lingering, until the host's agents are gone)."""
        self._waiter = self.index.store.event_waiter()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGUSR1, self._release)
        self.say(f"remembering the finished work of {self.index.store.url} (pid {os.getpid()})")
        alone_since: float | None = None
        retry_at = 0.0
        agents_seen = -math.inf  # (when the host's agents were last counted)
        look_at = 0.0  # (when it looks at the store unless woken before)
        woken = True
        try:
            while not self.stopping:
                busy = False
                if time.monotonic() >= retry_at and (woken or time.monotonic() >= look_at):
                    look_at = time.monotonic() + LOOK_EVERY_S
                    quiet = self._wait_for_quiet()
                    try:
                        busy = self._remember()
                        busy = self._embed(until_event=quiet) or busy
                    except PodiumError as e:
                        self.say(f"could not remember (trying again in {RETRY_AFTER_S:.0f} s): "
                                 f"{e}")
                        retry_at = time.monotonic() + RETRY_AFTER_S
                if self.linger and time.monotonic() - agents_seen >= LINGER_S / 2:
                    agents_seen = time.monotonic()
                    if self._agents_here():
                        alone_since = None
                    elif alone_since is None:
                        alone_since = time.monotonic()
                    elif time.monotonic() - alone_since >= LINGER_S:
                        self.say("no agent of this store runs on this host any more: exiting")
                        break
                woken = busy
                if not busy and not self.stopping:
                    wait = max(0.0, look_at - time.monotonic())
                    if self.linger:
                        wait = min(wait, LINGER_S / 2)
                    woken = self._waiter.wait(wait)
            if self.released:
                self.say("the team on this host was stopped: exiting")
        finally:
            self._waiter.close()
            os.close(self.lock_fd)
        return 0

    def _wait_for_quiet(self) -> bool:
        """Wait until ``QUIET_S`` passes in which no event was committed (True: at most twice
        that after the last one), or for ``MAX_DEFER_S`` at most (False: the team is busy, the
        work is done now anyway)."""
        until = time.monotonic() + MAX_DEFER_S
        while not self.stopping and (left := until - time.monotonic()) > 0:
            # Sleep first, then look: the events of a busy team cost the indexer one wake-up
            # per QUIET_S, not one each (~40 us apiece, a few for every task).
            self._sleep(min(QUIET_S, left))
            if not self._waiter.wait(0):
                return True
        return False

    def _embed(self, until_event: bool) -> bool:
        """Embed for a slice of time (``until_event``: only until an event is committed);
        whether there may be more to embed."""
        interrupted = False

        def keep_going() -> bool:
            nonlocal interrupted
            interrupted = interrupted or (until_event and self._waiter.wait(0))
            return not (self.stopping or interrupted)
        done = self.index.embed_pending(deadline=time.monotonic() + SLICE_S, batch=BATCH,
                                        keep_going=keep_going, claim_s=CLAIM_S)
        return bool(done) or interrupted

    def _remember(self) -> bool:
        """Remember finished work for a slice of time, pausing after each transaction for
        PACE times as long as it took: the indexer holds the store's writer lock a small
        share of the time however much work there is. Whether there was any."""
        end = time.monotonic() + SLICE_S
        found = False
        while not self.stopping and time.monotonic() < end:
            started = time.monotonic()
            moved, _ = self.index.remember_batch(BATCH)
            if not moved:
                break
            found = True
            self._sleep(PACE * (time.monotonic() - started))
        return found

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))
