"""Idle agents' heartbeats on a PostgreSQL host: one statement for the host, not one per agent.

An idle agent's beat only says it is alive and looks for work whose wake-up was lost (see
``podium.agents.heartbeat``). With hundreds of idle agents those beats are what a team costs at
rest, and on PostgreSQL each is a round trip through PgBouncer to the server. So while this
host's daemon (``podium.store.pghost``) serves the store, it beats for the host's idle agents:

* **An agent asks.** After each idle beat of its own, a worker leaves a file in the daemon's
  directory, ``idle/<hash of its id>.<pid>`` (0600, in a 0700 directory of this user's):
  its id, pid, the process's start time and its lease. Each later idle beat only touches the
  file (its mtime says "my loop still turns"); covered, those beats come every half lease.
* **The daemon beats.** Every ``lease/6`` (the shortest lease asked for), it takes the files
  touched within three quarters of a lease whose process still runs (its start time checked
  when the file is first seen, so not a reused pid; its pid at each round), and in one
  statement marks those agents alive -- each only while the store's row names this host,
  that pid, and an idle (or dead) agent: the files are hints, the store decides. The same
  statement says whether recovery is due (a lease expired) and whether work waits (a task
  queued, or handed to one of them). Files of agents it did not mark are removed (their
  workers go back to beating on their own); then it writes ``beat.json``: when that round
  started and the two answers.
* **An agent's idle beat is then local.** It is "covered", and costs the worker a touch and a
  small read, when ``beat.json`` is younger than a third of its lease, is from a round that
  started after its file was written (so the round saw the file, and either marked the agent
  or removed the file), its file is still there, and the round found no work waiting and no
  recovery due. Otherwise the worker beats for itself as before: the store's answer, its look
  for work and its recovery are exactly those of a worker alone. A daemon that stops beating
  (killed, its connection down) leaves ``beat.json`` to age, and every worker beats again
  within half a lease; a worker that hangs stops touching its file, which is stale three
  quarters of a lease later, and is found dead a lease after the daemon's last beat for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from podium import pids
from podium.wake import private_dir, write_private

#: The daemon's round: every ``lease / BEATS_PER_LEASE`` of the shortest lease asked for.
BEATS_PER_LEASE = 6
#: How often the daemon looks at the directory when nobody has asked yet.
DEFAULT_EVERY_S = 5.0
#: A file not touched for this part of its lease is stale (its worker hangs, or is gone).
STALE_PART = 0.75
#: A covered worker's idle beats (each a touch of its file) come every this part of its lease:
#: a quarter of a lease before its file would be stale.
COVERED_PART = 0.5
BEAT_FILE = "beat.json"


def covered_interval(lease_s: float) -> float:
    """How long a worker whose idle beat was covered may wait for its next one."""
    return lease_s * COVERED_PART


def _idle_dir(host_dir: Path) -> Path:
    return host_dir / "idle"


class IdleBeats:
    """A worker process's side: its idle agents' files, and whether a beat is covered."""

    def __init__(self, host_dir: Path):
        self._dir = _idle_dir(host_dir)
        self._beat_file = host_dir / BEAT_FILE
        #: The agents this process has asked for, each with its file and when it was written.
        self._asked: dict[str, tuple[Path, float]] = {}

    def covered(self, agent_id: str, lease_s: float) -> bool:
        """Whether the daemon's beats stand for this idle beat of ``agent_id`` (see the
        module); touches the agent's file either way."""
        asked = self._asked.get(agent_id)
        if asked is None:
            return False
        path, written = asked
        try:
            os.utime(path)
            with open(self._beat_file, "rb") as f:
                beat = json.loads(f.read())
            at = float(beat["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return (at > written and at >= time.time() - lease_s / 3
                and beat.get("work") is False and beat.get("recovery") is False)

    def ask(self, agent_id: str, lease_s: float) -> None:
        """After an idle beat of the agent's own: ask the daemon to beat for it (write its
        file, or touch it when it is there)."""
        asked = self._asked.get(agent_id)
        if asked is not None:
            with contextlib.suppress(OSError):
                os.utime(asked[0])
                return
        pid = os.getpid()
        started = pids.start_time(pid)
        if started is None:
            return
        name = f"{hashlib.sha1(agent_id.encode('utf-8')).hexdigest()[:16]}.{pid}"
        body = json.dumps({"agent": agent_id, "pid": pid, "started": started,
                           "lease_s": lease_s}).encode()
        try:
            d = private_dir(self._dir)
            write_private(d / name, body)
            # (after: a round that started later saw the file)
            written = time.time()
        except OSError:
            return  # (then its beats stay its own)
        self._asked[agent_id] = (d / name, written)

    def forget(self, agent_id: str) -> None:
        """The agent is not idle any more, or stops: the daemon no longer beats for it."""
        asked = self._asked.pop(agent_id, None)
        if asked is not None:
            with contextlib.suppress(OSError):
                os.unlink(asked[0])


#: One round's statement: the agents marked alive, whether recovery is due, whether work waits.
#: (In a data-modifying WITH, the other parts read the rows as they were before the update.)
_BEAT_SQL = """
WITH beaten AS (
  UPDATE agents SET last_heartbeat = %(t)s,
         state = CASE WHEN state = 'dead' THEN 'idle' ELSE state END
  WHERE host = %(host)s AND state IN ('idle', 'dead')
    AND (id, pid) IN (SELECT * FROM unnest(%(ids)s::text[], %(pids)s::integer[]))
  RETURNING id)
SELECT ARRAY(SELECT id FROM beaten) AS beaten,
  (EXISTS (SELECT 1 FROM tasks WHERE state = 'running' AND lease_expires < %(t)s)
   OR EXISTS (SELECT 1 FROM agents WHERE state IN ('starting', 'idle', 'busy', 'waiting_input')
              AND last_heartbeat + lease_s < %(t)s)) AS recovery,
  (EXISTS (SELECT 1 FROM tasks WHERE state = 'queued')
   OR EXISTS (SELECT 1 FROM tasks WHERE state = 'running' AND started_at IS NULL
              AND agent_id = ANY(%(ids)s::text[]))) AS work
"""


class _Asked:
    """One file of the idle directory, as read (its content does not change)."""

    def __init__(self, path: Path, agent: str, pid: int, started: int, lease_s: float):
        self.path, self.agent, self.pid, self.started = path, agent, pid, started
        self.lease_s = lease_s


class HostBeater:
    """The daemon's side: a round every ``lease/6`` (see the module). ``host`` is this host's
    name as its workers register it."""

    def __init__(self, host_dir: Path, host: str):
        self._dir = _idle_dir(host_dir)
        self._beat_file = host_dir / BEAT_FILE
        self.host = host
        self.next_at = 0.0  # (monotonic)
        self._read: dict[tuple[str, int], _Asked | None] = {}  # (by name and inode)

    def _candidates(self, t: float) -> list[_Asked]:
        """The files touched lately whose processes still run; the others are removed."""
        found, seen = [], set()
        try:
            entries = list(os.scandir(self._dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (entry.name, st.st_ino)
            seen.add(key)
            if key not in self._read:  # (a new file: its process, exactly)
                asked = _parse(Path(entry.path))
                if asked is not None and pids.start_time(asked.pid) != asked.started:
                    asked = None
                self._read[key] = asked
            asked = self._read[key]
            # (Later rounds only ask whether the pid is there, one system call: reading /proc
            # for every agent was most of a round's cost. A pid the kernel gives to another
            # process after the worker died counts at most until its file, which nobody
            # touches now, is stale.)
            if asked is not None and st.st_mtime >= t - asked.lease_s * STALE_PART \
                    and pids.present(asked.pid):
                found.append(asked)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        self._read = {k: v for k, v in self._read.items() if k in seen}
        return found

    def beat(self, conn: Any) -> int:
        """One round on ``conn`` (psycopg, autocommit); how many agents it marked alive.
        Raises what psycopg raises; ``beat.json`` is then left as it was."""
        t = time.time()
        asked = self._candidates(t)
        every = min((a.lease_s for a in asked), default=BEATS_PER_LEASE * DEFAULT_EVERY_S)
        self.next_at = time.monotonic() + max(0.2, every / BEATS_PER_LEASE)
        if not asked:
            return 0
        row = conn.execute(_BEAT_SQL, {"t": t, "host": self.host,
                                       "ids": [a.agent for a in asked],
                                       "pids": [a.pid for a in asked]}).fetchone()
        beaten, recovery, work = set(row[0]), bool(row[1]), bool(row[2])
        for a in asked:
            if a.agent not in beaten:
                with contextlib.suppress(OSError):
                    os.unlink(a.path)
        write_private(self._beat_file, json.dumps({"at": t, "work": work, "recovery": recovery,
                                                   "agents": len(beaten)}).encode())
        return len(beaten)


def _parse(path: Path) -> _Asked | None:
    try:
        data = json.loads(path.read_bytes())
        pid = int(path.name.rsplit(".", 1)[1])
        if int(data["pid"]) != pid:
            return None
        return _Asked(path, str(data["agent"]), pid, int(data["started"]),
                      float(data["lease_s"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
