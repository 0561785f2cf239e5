"""The host daemon beats for its idle agents (``podium.store.hostbeats``), on this machine's
PostgreSQL server, in a fresh schema.

In-process (``test_round_*``): a real store and the daemon's ``HostBeater`` on a real
connection, agents registered with this process's pid and host: which files a round marks,
which it removes, and when an agent's idle beat is covered.

With real workers (``test_workers_*``): ``podium up`` with a short lease (3 s: idle beats every
1 s, the daemon's rounds every 0.5 s). Idle agents' last heartbeats all come from the daemon's
rounds; a worker that hangs (SIGSTOP) is found dead and comes back when it resumes; a task
whose wake-up was lost (sent on a channel nobody listens to) is still found and run; and with
the daemon killed, the workers beat on their own and nobody is found dead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from helpers import wait_for
from podium.models import AgentState, TaskSpec, TaskState
from podium.pids import start_time
from podium.store import open_store
from podium.store.hostbeats import BEAT_FILE, HostBeater, IdleBeats

LEASE = 3.0


def _register(store, name: str, pid: int | None = None, host: str | None = None) -> None:
    store.register_agent(name, [], "echo", host or socket.gethostname(), pid or os.getpid(),
                         LEASE, {})
    store.set_agent_state(name, AgentState.IDLE)


def _beat_file(d: Path) -> dict:
    return json.loads((d / BEAT_FILE).read_text())


@pytest.fixture
def beats(pg_url, tmp_path):
    store = open_store(pg_url)
    conn = psycopg.connect(pg_url, autocommit=True)  # (the daemon's kind of connection)
    d = tmp_path / "host"
    d.mkdir(mode=0o700)
    try:
        yield store, conn, d
    finally:
        conn.close()
        store.close()


def test_round_marks_idle_agents_of_this_host_and_process(beats):
    store, conn, d = beats
    for name in ("a1", "a2", "a3", "other-host", "busy"):
        _register(store, name, host="elsewhere" if name == "other-host" else None)
    store.set_agent_state("busy", AgentState.BUSY)
    worker = IdleBeats(d)
    for name in ("a1", "a2", "a3", "other-host", "busy"):
        worker.ask(name, LEASE)
    files = sorted(p.name for p in (d / "idle").iterdir())
    assert len(files) == 5 and all(f.endswith(f".{os.getpid()}") for f in files)
    assert all((d / "idle" / f).stat().st_mode & 0o777 == 0o600 for f in files)
    assert (d / "idle").stat().st_mode & 0o777 == 0o700
    assert not worker.covered("a1", LEASE)  # (no round yet)

    before = time.time()
    beater = HostBeater(d, socket.gethostname())
    assert beater.beat(conn) == 3
    beat = _beat_file(d)
    assert beat == {"at": beat["at"], "work": False, "recovery": False, "agents": 3}
    assert beat["at"] >= before
    agents = {a.id: a for a in store.list_agents()}
    assert {agents[n].last_heartbeat for n in ("a1", "a2", "a3")} == {beat["at"]}
    assert agents["other-host"].last_heartbeat < before and agents["busy"].last_heartbeat < before
    # The agents it did not mark lose their files: their workers beat on their own.
    assert len(list((d / "idle").iterdir())) == 3
    assert worker.covered("a1", LEASE) and worker.covered("a3", LEASE)
    assert not worker.covered("other-host", LEASE) and not worker.covered("busy", LEASE)
    assert not worker.covered("never-asked", LEASE)


def test_round_finds_work_and_recovery_and_revives_the_dead(beats):
    store, conn, d = beats
    _register(store, "a1")
    worker = IdleBeats(d)
    worker.ask("a1", LEASE)
    beater = HostBeater(d, socket.gethostname())
    t = store.add_tasks([TaskSpec(prompt="x", target_role="nobody-here")])[0]
    assert beater.beat(conn) == 1 and _beat_file(d)["work"] is True
    assert not worker.covered("a1", LEASE)  # (work waits: the worker looks for itself)
    store.cancel(t.id, "test")
    beater.beat(conn)
    assert worker.covered("a1", LEASE)

    # An agent found dead whose process still runs and still asks is alive again.
    store.set_agent_state("a1", AgentState.DEAD)
    _register(store, "late")
    conn.execute("UPDATE agents SET last_heartbeat = last_heartbeat - 100 WHERE id = 'late'")
    assert beater.beat(conn) == 1
    assert store.get_agent("a1").state is AgentState.IDLE
    assert _beat_file(d)["recovery"] is True  # ('late' is past its lease)
    assert not worker.covered("a1", LEASE)


def test_round_drops_stale_files_and_gone_processes(beats):
    store, conn, d = beats
    _register(store, "a1")
    _register(store, "ghost", pid=2 ** 22 + 7)
    worker = IdleBeats(d)
    worker.ask("a1", LEASE)
    ghost = d / "idle" / f"feedfacefeedface.{2 ** 22 + 7}"
    ghost.write_text(json.dumps({"agent": "ghost", "pid": 2 ** 22 + 7, "started": 1,
                                 "lease_s": LEASE}))
    reused = d / "idle" / f"0123456789abcdef.{os.getpid()}"  # (this pid, another start)
    reused.write_text(json.dumps({"agent": "ghost", "pid": os.getpid(),
                                  "started": start_time(os.getpid()) + 1, "lease_s": LEASE}))
    beater = HostBeater(d, socket.gethostname())
    assert beater.beat(conn) == 1
    assert not ghost.exists() and not reused.exists()
    # Not touched for half a lease: its worker hangs; the round leaves it out.
    (path,) = (d / "idle").iterdir()
    old = time.time() - LEASE
    os.utime(path, (old, old))
    assert beater.beat(conn) == 0 and not path.exists()
    assert not worker.covered("a1", LEASE)
    worker.ask("a1", LEASE)  # (its next beat of its own asks again)
    assert beater.beat(conn) == 1 and worker.covered("a1", LEASE)


def test_round_that_started_before_the_file_does_not_cover_it(beats):
    store, conn, d = beats
    _register(store, "a1")
    _register(store, "a2")
    worker = IdleBeats(d)
    worker.ask("a1", LEASE)
    beater = HostBeater(d, socket.gethostname())
    beater.beat(conn)
    worker.ask("a2", LEASE)  # (after that round)
    assert worker.covered("a1", LEASE) and not worker.covered("a2", LEASE)
    worker.forget("a1")
    assert not worker.covered("a1", LEASE) and len(list((d / "idle").iterdir())) == 1


# -- real workers --------------------------------------------------------------------------------

class Host:
    """``podium`` commands on this machine with a runtime directory of their own."""

    def __init__(self, url: str, tmp: Path):
        self.url = url
        self.runtime = Path(os.environ.get("TMPDIR", "/tmp")) / f"pdb{os.getpid()}"
        shutil.rmtree(self.runtime, ignore_errors=True)
        self.runtime.mkdir(mode=0o700)
        self.cwd = tmp

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        return {**env, "XDG_RUNTIME_DIR": str(self.runtime)}

    def podium(self, *args: str, timeout: float = 60) -> str:
        r = subprocess.run([sys.executable, "-m", "podium", "--store", self.url, *args],
                           capture_output=True, text=True, timeout=timeout, env=self.env(),
                           cwd=self.cwd)
        assert r.returncode == 0, f"podium {' '.join(args)}: {r.stderr}"
        return r.stdout

    def daemon_dir(self) -> Path:
        (state,) = (self.runtime / "podium").glob("pg.*/state.json")
        return state.parent

    def cleanup(self) -> None:
        shutil.rmtree(self.runtime, ignore_errors=True)


@pytest.fixture
def host(pg_url, tmp_path):
    h = Host(pg_url, tmp_path)
    store = open_store(pg_url)
    try:
        yield h, store
    finally:
        try:
            h.podium("down")
        finally:
            store.close()
            h.cleanup()


def _up(h: Host, n: int) -> list[dict]:
    agents = json.loads(h.podium("up", str(n), "--backend", "echo", "--lease", str(LEASE),
                                 "--json", timeout=90))
    assert len(agents) == n
    return agents


def _daemon_pid(d: Path) -> int | None:
    try:
        return json.loads((d / "state.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _beaten_by_the_daemon(store, names: list[str], d: Path) -> bool:
    """Whether every one of ``names`` was last marked alive by the daemon's last round."""
    try:
        at = _beat_file(d)["at"]
    except (OSError, ValueError):
        return False
    return all(store.get_agent(n).last_heartbeat == at for n in names)


def _up_and_beaten(h: Host, store, n: int) -> tuple[list[dict], list[str], Path]:
    """``n`` agents up, and beaten by the daemon's round: them, their ids, its directory."""
    agents = _up(h, n)
    names = [a["id"] for a in agents]
    d = h.daemon_dir()
    wait_for(lambda: _beaten_by_the_daemon(store, names, d), 10, 0.05,
             what="the daemon's round to beat for them all")
    return agents, names, d


def test_workers_idle_beats_come_from_the_daemon(host):
    h, store = host
    _, names, d = _up_and_beaten(h, store, 4)
    # For a while: every time we look, the four share the last round's time (no beat of their
    # own in between), and it is recent.
    for _ in range(6):
        time.sleep(0.5)
        wait_for(lambda: _beaten_by_the_daemon(store, names, d), 2, 0.02,
                 what="the four beaten by one round")
        assert time.time() - _beat_file(d)["at"] < LEASE / 3
    assert all(a.state is AgentState.IDLE for a in store.list_agents())
    # They still take work at once: a task added is handed over and run.
    t = store.add_tasks([TaskSpec(prompt="hi")])[0]
    wait_for(lambda: store.get_task(t.id).state is TaskState.COMPLETED, 10, 0.02,
             what="the task to complete")


def test_workers_a_hung_worker_is_found_dead_and_comes_back(host):
    h, store = host
    agents, _, d = _up_and_beaten(h, store, 3)
    hung, *others = agents
    os.kill(hung["pid"], signal.SIGSTOP)
    try:
        wait_for(lambda: store.get_agent(hung["id"]).state is AgentState.DEAD, 3 * LEASE + 5,
                 0.1, what="the hung agent to be found dead")
        assert all(store.get_agent(a["id"]).state is AgentState.IDLE for a in others)
    finally:
        os.kill(hung["pid"], signal.SIGCONT)
    wait_for(lambda: store.get_agent(hung["id"]).state is AgentState.IDLE, 2 * LEASE + 5, 0.1,
             what="the resumed agent to be alive again")


def test_workers_find_a_task_whose_wake_up_was_lost(host, pg_url):
    h, store = host
    _up_and_beaten(h, store, 2)
    lost = open_store(pg_url)
    try:
        lost.channel_wake = lost.channel_events = "podium_nobody_listens"  # (the wake-up lost)
        t = lost.add_tasks([TaskSpec(prompt="found anyway")])[0]
    finally:
        lost.close()
    done = wait_for(lambda: (x := store.get_task(t.id)).state.finished and x, 4 * LEASE, 0.05,
                    what="the task whose wake-up was lost to run")
    assert done.state is TaskState.COMPLETED


def test_workers_beat_on_their_own_while_the_daemon_does_not(host):
    h, store = host
    _, names, d = _up_and_beaten(h, store, 3)
    daemon = _daemon_pid(d)
    assert daemon is not None
    os.kill(daemon, signal.SIGSTOP)  # (its rounds stop; its PgBouncer still serves)
    try:
        last = _beat_file(d)["at"]
        deadline = time.time() + 3 * LEASE
        while time.time() < deadline:
            rows = [store.get_agent(n) for n in names]
            assert all(a.state is AgentState.IDLE for a in rows), [(a.id, a.state) for a in rows]
            assert all(time.time() - a.last_heartbeat < LEASE for a in rows)
            time.sleep(0.2)
        assert all(store.get_agent(n).last_heartbeat > last for n in names)  # (their own)
    finally:
        os.kill(daemon, signal.SIGCONT)
    wait_for(lambda: _beaten_by_the_daemon(store, names, d), 10, 0.05,
             what="the daemon's rounds again")

    # Killed (its PgBouncer goes with it): a worker whose connection failed starts a new
    # daemon, which beats for them from the files they left.
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: _daemon_pid(d) not in (None, daemon), 30, 0.2, what="a new daemon")
    wait_for(lambda: _beaten_by_the_daemon(store, names, d)
             and all(store.get_agent(n).state is AgentState.IDLE for n in names), 30, 0.1,
             what="the new daemon's rounds")
