"""Stopping always works: ``podium down`` without the store, and SIGTERM bounded whatever the
store's state.

Real workers started by ``podium up``, a real store made unusable for real: an SQLite file
replaced by garbage or its directory moved away, an SQLite store whose writer lock another
process holds, a PostgreSQL store whose role may no longer log in (its connections ended
too: to the workers it is a server that went away and refuses them). Nothing is mocked.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import PG_SERVER, _pg_admin, run_cli
from helpers import wait_for
from podium import orphans, pids
from podium.agents import local
from podium.agents.worker import STOP_BUDGET_S
from podium.errors import StoreUnavailable
from podium.models import TaskState
from podium.service import Podium

#: How long a SIGTERMed worker may take, measured from outside (process start-up noise).
SIGTERM_BOUND_S = STOP_BUDGET_S + 2


def up(url: str, n: int, *args: str, env: dict | None = None) -> dict[str, int]:
    """``podium up n`` (shell agents): their pids by name."""
    p = run_cli("up", str(n), "--json", *args, store_url=url, env=env)
    assert p.returncode == 0, p.stderr.decode()
    return {a["id"]: a["pid"] for a in json.loads(p.stdout)}


def gone(pid: int) -> bool:
    return not pids.exists(pid)


def sigterm_and_time(pid: int) -> float:
    """SIGTERM ``pid``; seconds until it has exited (failing past twice the bound)."""
    began = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: gone(pid), 2 * SIGTERM_BOUND_S, 0.01, f"pid {pid} to exit")
    return time.monotonic() - began


def running_task(podium: Podium, task_id: str):
    return wait_for(lambda: (t := podium.task(task_id)).state is TaskState.RUNNING and t, 20,
                    what=f"{task_id} to run")


def stalled_prompt(go: Path) -> str:
    """A task that sleeps until ``go`` exists, then completes at once (the retry's run)."""
    return f"if [ -e {go} ]; then echo recovered; else sleep 30; fi"


def kill_all(pids_by_name: dict[str, int]) -> None:
    for pid in pids_by_name.values():
        if not gone(pid):
            os.killpg(pid, signal.SIGKILL)


def down_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- SQLite --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["garbage", "moved"])
def test_down_stops_the_local_agents_of_an_unusable_sqlite_store(tmp_path, how):
    home = tmp_path / "store"
    home.mkdir()
    url = f"sqlite://{home / 'podium.db'}"
    started = up(url, 3)
    try:
        if how == "garbage":  # (the workers keep the files they opened; a new open fails)
            junk = home / "junk"
            junk.write_bytes(secrets.token_bytes(8192))
            os.replace(junk, home / "podium.db")
            for suffix in ("-wal", "-shm"):  # (else the log's pages would still be read)
                os.unlink(f"{home / 'podium.db'}{suffix}")
        else:
            home.rename(tmp_path / "elsewhere")
        r = run_cli("agents", store_url=url)
        assert r.returncode == 1 and b"Traceback" not in r.stderr  # the store really is unusable

        # One by name: just that one stops.
        line = down_line(run_cli("down", "agent-2", "--timeout", "5", store_url=url))
        assert line.startswith("store unreachable ("), line
        assert line.endswith("): stopped 1 local agent(s) by their local records: agent-2; "
                             "their leases will be recovered when the store is back"), line
        assert gone(started["agent-2"])
        assert not gone(started["agent-1"]) and not gone(started["agent-3"])

        began = time.monotonic()
        line = down_line(run_cli("down", "--timeout", "5", store_url=url))
        assert "stopped 2 local agent(s) by their local records: agent-1, agent-3;" in line, line
        assert time.monotonic() - began < 5 + 3
        assert all(gone(pid) for pid in started.values())
        line = down_line(run_cli("down", store_url=url))  # nothing left to stop
        assert line.endswith("): by this host's local records, none of its agents runs "
                             "here"), line
    finally:
        kill_all(started)


def test_sigterm_exits_in_time_while_the_sqlite_store_is_locked(tmp_path):
    """Another process holds the store's writer lock (hung mid-write, say): every write waits
    on it. A worker given SIGTERM mid-task still exits within the bound, its program with it;
    once the lock is free, the task's lease runs out and the other agent runs it."""
    url = f"sqlite://{tmp_path / 'podium.db'}"
    started = up(url, 2, "--lease", "2")
    podium = Podium.open(url)
    try:
        go = tmp_path / "go"
        task = running_task(podium, podium.add_task(stalled_prompt(go)).id)
        busy, other = task.agent_id, next(n for n in started if n != task.agent_id)
        wait_for(lambda: orphans.find(podium.url, busy), 10, what="its program to run")
        with open(str(tmp_path / "podium.db") + "-writer.lock", "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            time.sleep(0.5)  # (its heartbeats, every 1/3 s, are stuck on the lock by now)
            took = sigterm_and_time(started[busy])
            print(f"\nSIGTERM to a worker of a locked SQLite store: exited in {took:.2f}s")
            assert took <= SIGTERM_BOUND_S
            assert not orphans.find(podium.url, busy)  # nothing it ran is left
            go.touch()
        done = wait_for(lambda: (t := podium.task(task.id)).state.finished and t, 30,
                        what="the task to be recovered and run again")
        assert (done.state, done.agent_id, done.output) == (TaskState.COMPLETED, other,
                                                            b"recovered\n")
        log = (tmp_path / "logs" / f"{busy}.log").read_text()
        assert "still stopping" in log, log
        assert down_line(run_cli("down", store_url=url)) == f"stopped 1 agent(s): {other}"
    finally:
        podium.close()
        kill_all(started)


def test_a_lock_held_for_ever_neither_hangs_down_nor_writes(tmp_path):
    """Another process holds the writer lock and never lets go. ``podium down`` still stops the
    agents (its writes give up after a few seconds), a write with a timeout fails with one clear
    line and changes nothing, and the wait it gave up on lets go of the lock once it gets it."""
    url = f"sqlite://{tmp_path / 'podium.db'}"
    started = up(url, 2)
    lock_path = str(tmp_path / "podium.db") + "-writer.lock"
    try:
        with open(lock_path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            began = time.monotonic()
            line = down_line(run_cli("down", "--timeout", "5", store_url=url))
            took = time.monotonic() - began
            print(f"\npodium down with the writer lock held for ever: {took:.1f}s")
            assert line.startswith("stopped 2 agent(s): ") and \
                sorted(line.split(": ", 1)[1].split(", ")) == ["agent-1", "agent-2"], line
            assert all(gone(pid) for pid in started.values())
            assert took < 3 * 3 + 5  # (a few lock waits of 3 s at most, and the stop itself)

            podium = Podium.open(url, lock_timeout_s=0.3)
            try:
                began = time.monotonic()
                with pytest.raises(StoreUnavailable, match="is locked: another process has "
                                   "held its writer lock for 0.3 s"):
                    podium.add_task("echo never")
                assert time.monotonic() - began < 2
            finally:
                podium.close()
        # Released: the given-up wait took the lock and let it go at once.
        with open(lock_path, "rb") as lock:
            wait_for(lambda: _try_lock(lock), 5, what="the writer lock to be free")
        podium = Podium.open(url, lock_timeout_s=0.3)
        try:
            assert [t.prompt for t in podium.tasks()] == []  # nothing was changed
            podium.add_task("echo later")
        finally:
            podium.close()
    finally:
        kill_all(started)


def _try_lock(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(lock, fcntl.LOCK_UN)
    return True


def test_records_are_private_whatever_the_umask(tmp_path):
    # (short: socket paths are limited; XDG_RUNTIME_DIR itself is the user's, Podium makes
    # what is in it)
    run = Path(tempfile.mkdtemp(prefix="podium-t-", dir="/tmp"))
    os.chmod(run, 0o755)
    script = "import os; os.umask(0); from podium.cli import main; main()"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run)}
    url = f"sqlite://{(tmp_path / 'podium.db').resolve()}"
    p = subprocess.run([sys.executable, "-c", script, "--store", url, "up", "2", "--json"],
                       env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    started = {a["id"]: a["pid"] for a in json.loads(p.stdout)}
    try:
        (records,) = [d for d in (run / "podium").iterdir() if d.name.startswith("agents-")]
        assert records.name == local.records_dir(url).name  # (keyed by the store)
        for d in (run / "podium", records):
            st = os.lstat(d)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700, d
            assert st.st_uid == os.getuid()
        files = sorted(records.iterdir())
        assert len(files) == 2
        seen = {}
        for f in files:
            assert stat.S_IMODE(os.lstat(f).st_mode) == 0o600, f
            data = json.loads(f.read_bytes())
            seen[data["name"]] = data["pid"]
            assert data["store"] == url and data["started"] == local.start_time(data["pid"])
            assert data["log"] == str(tmp_path / "logs" / f"{data['name']}.log")
        assert seen == started
        # Stopped cleanly, through the store: each removes its own record.
        p = subprocess.run([sys.executable, "-c", script, "--store", url, "down"], env=env,
                           capture_output=True, timeout=60)
        assert p.returncode == 0 and p.stdout.startswith(b"stopped 2 agent(s)"), p.stderr
        assert list(records.iterdir()) == []
    finally:
        kill_all(started)
        shutil.rmtree(run, ignore_errors=True)


# -- PostgreSQL ----------------------------------------------------------------------------

@pytest.fixture
def pg_role_url():
    """A fresh schema owned by a role of its own on the test server, and a switch that stops
    that role from logging in (``cut()``, its sessions ended) and lets it again (``mend()``)."""
    admin = _pg_admin()
    role = "podium_stop_" + secrets.token_hex(5)
    admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    parts = urlsplit(PG_SERVER)
    query = "&".join(q for q in (parts.query, f"options=-csearch_path%3D{role}") if q)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}",
                                    query=query))

    class Switch:
        def cut(self) -> None:
            admin.execute(f"ALTER ROLE {role} NOLOGIN")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE usename = %s", (role,))

        def mend(self) -> None:
            admin.execute(f"ALTER ROLE {role} LOGIN")

    try:
        yield url, Switch()
    finally:
        admin.execute(f"ALTER ROLE {role} NOLOGIN")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                      (role,))
        admin.execute(f"DROP SCHEMA {role} CASCADE")
        admin.execute(f"DROP ROLE {role}")
        admin.close()


def test_postgres_gone_sigterm_is_bounded_down_stops_by_records_and_the_task_recovers(
        tmp_path, pg_role_url, monkeypatch):
    url, switch = pg_role_url
    started = up(url, 3, "--lease", "2")
    go = tmp_path / "go"
    podium = Podium.open(url)
    try:
        task = running_task(podium, podium.add_task(stalled_prompt(go)).id)
        busy = task.agent_id
        wait_for(lambda: orphans.find(url, busy), 10, what="its program to run")
        podium.close()
        switch.cut()
        time.sleep(0.5)  # (the workers' heartbeats now wait for a connection that never comes)

        took = sigterm_and_time(started[busy])
        print(f"\nSIGTERM to a worker whose PostgreSQL is gone: exited in {took:.2f}s")
        assert took <= SIGTERM_BOUND_S
        assert not orphans.find(url, busy)  # its program went with it
        # (a store call that hangs meets the bound; one that fails at once, as through a
        # host's PgBouncer refusing, ends the stop sooner: either way the log says so)
        log = (tmp_path / ".podium" / "logs" / f"{busy}.log").read_text()
        assert "still stopping" in log or "could not deregister" in log, log

        began = time.monotonic()
        line = down_line(run_cli("down", "--timeout", "10", store_url=url))
        took = time.monotonic() - began
        print(f"podium down of 2 agents, PostgreSQL gone: {took:.2f}s")
        rest = sorted(n for n in started if n != busy)
        assert line.startswith("store unreachable ("), line
        assert line.endswith(f"): stopped 2 local agent(s) by their local records: "
                             f"{', '.join(rest)}; their leases will be recovered when the store "
                             "is back"), line
        assert took < SIGTERM_BOUND_S + 3  # (they stop within the bound; no SIGKILL needed)
        assert all(gone(pid) for pid in started.values())

        # The store is back: the task, still leased by the worker that stopped, is recovered
        # once that lease runs out, and another agent runs it.
        switch.mend()
        # (a host's PgBouncer, where there is one, waits server_login_retry -- 15 s -- after
        # failed logins before it tries again: from here on, straight to the server)
        monkeypatch.setenv("PODIUM_PG_HOST", "off")
        go.touch()
        rescuer = up(url, 1, "--lease", "2", "--prefix", "rescue")
        started.update(rescuer)
        podium = Podium.open(url)
        done = wait_for(lambda: (t := podium.task(task.id)).state.finished and t, 30,
                        what="the task to be recovered and run again")
        assert (done.state, done.agent_id, done.output) == (TaskState.COMPLETED, "rescue-1",
                                                            b"recovered\n")
        assert done.attempts == 2
        assert down_line(run_cli("down", store_url=url)) == "stopped 1 agent(s): rescue-1"
    finally:
        podium.close()
        kill_all(started)


def test_a_store_error_that_will_not_pass_ends_the_run_before_the_worker(
        tmp_path, pg_role_url, monkeypatch):
    """The server starts refusing the worker's writes for good (read-only, as a standby after a
    failover is) while a program runs: the worker stops, and stops the program first; it does
    not leave it running on its own while the task goes back to the queue."""
    url, _ = pg_role_url
    monkeypatch.setenv("PODIUM_PG_HOST", "off")
    started = up(url, 1, "--lease", "3")
    ((name, pid),) = started.items()
    podium = Podium.open(url)
    admin = _pg_admin()
    try:
        running_task(podium, podium.add_task("sleep 30").id)
        wait_for(lambda: orphans.find(url, name), 10, what="its program to run")
        role = urlsplit(url).username
        admin.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE usename = %s", (role,))
        wait_for(lambda: gone(pid), 20, 0.05, what="the worker to stop")
        assert not orphans.find(url, name), "its program outlived it"
        log = (tmp_path / ".podium" / "logs" / f"{name}.log").read_text()
        assert "stopping the run" in log and "read-only" in log, log
        assert "Traceback" not in log, log
    finally:
        admin.close()
        podium.close()
        kill_all(started)
        for group in orphans.find(url, name):
            os.killpg(group, signal.SIGKILL)


def test_a_worker_that_cannot_listen_does_not_stay_registered(tmp_path, pg_role_url):
    """A worker registers, then cannot open its LISTEN connection (the role's connection limit
    reached, as a full server's would be): it exits with one clear line and deregisters. Left
    registered, idle and taking hand-offs, it would be handed tasks by other hosts' adders
    until its lease ran out."""
    url, _ = pg_role_url
    admin = _pg_admin()
    role = urlsplit(url).username
    podium = Podium.open(url)
    podium.close()  # (the schema made)
    try:
        admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT 1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        p = subprocess.run([sys.executable, "-m", "podium", "--store", url, "agent", "run",
                            "-n", "deaf", "--backend", "shell"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env={**env, "PODIUM_PG_HOST": "off"})
        assert p.returncode != 0
        assert "too many connections" in p.stderr and "Traceback" not in p.stderr, p.stderr
        admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        podium = Podium.open(url)
        (agent,) = podium.agents()
        assert (agent.id, agent.state.live) == ("deaf", False), agent
    finally:
        admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        admin.close()
        podium.close()


def test_a_dead_agent_whose_worker_still_runs_here_keeps_its_name(tmp_path):
    """A worker that cannot beat for a while (here SIGSTOP; a machine too busy, a lease too
    short) is found dead by the others, yet its process runs on: ``up`` must not give its name
    to a new worker, nor may ``agent run --name`` take it, or two processes would be one agent
    (fuzzing the web API's ``team/up`` with tiny leases left 39 workers named agent-1)."""
    url = f"sqlite://{tmp_path / 'podium.db'}"
    started = up(url, 2, "--lease", "1")
    first, more = started["agent-1"], {}
    p = Podium.open(url)
    try:
        _found_dead_yet_holding_its_name(url, p, first, more)
    finally:
        os.kill(first, signal.SIGCONT)
        p.close()
        run_cli("down", store_url=url)
        kill_all({**started, **more})


def test_a_worker_whose_name_another_host_took_over_stops_and_leaves_it(any_store_url):
    """The other half of the case above: the name of an agent found dead is registered on
    another host (here straight through the store, as that host's worker would). The worker
    that comes back must not beat for the other host's agent nor deregister it: its next
    beat finds the row naming another process, and it stops, saying so in its log. On
    PostgreSQL the host's daemon beats for idle agents: it must not cover the old worker."""
    url = any_store_url
    started = up(url, 2, "--lease", "1")
    first = started["agent-1"]
    p = Podium.open(url)
    try:
        os.kill(first, signal.SIGSTOP)
        wait_for(lambda: p.agent("agent-1").state.value == "dead", 20,
                 what="agent-1 found dead by agent-2's beats")
        p.store.register_agent("agent-1", [], "shell", "elsewhere", 4242, 30, {})
        os.kill(first, signal.SIGCONT)
        wait_for(lambda: gone(first), 20, what="the replaced worker to exit")
        a = p.agent("agent-1")
        assert (a.host, a.pid, a.state.value) == ("elsewhere", 4242, "idle")
        log = (p.home / "logs" / "agent-1.log").read_text()
        assert "'agent-1' was taken over by pid 4242 on elsewhere: " \
               "this process is no longer that agent; stopping" in log, log
        assert "Traceback" not in log
        assert p.agent("agent-2").state.value == "idle"
    finally:
        os.kill(first, signal.SIGCONT)
        p.close()
        run_cli("down", store_url=url)
        kill_all(started)


def _found_dead_yet_holding_its_name(url: str, p: Podium, first: int, more: dict) -> None:
    try:
        os.kill(first, signal.SIGSTOP)
        wait_for(lambda: p.agent("agent-1").state.value == "dead", 20,
                 what="agent-1 found dead by agent-2's beats")
        more.update(up(url, 1, "--lease", "1"))
        assert list(more) == ["agent-3"], more  # (not agent-1: its worker runs)
        refused = run_cli("agent", "run", "--name", "agent-1", "--backend", "shell",
                          store_url=url, timeout=30)
        assert refused.returncode != 0
        err = refused.stderr.decode()
        assert f"agent 'agent-1' is already running (pid {first}" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert p.agent("agent-1").pid == first
    finally:
        os.kill(first, signal.SIGCONT)
    wait_for(lambda: p.agent("agent-1").state.value == "idle", 20, what="agent-1 to beat again")
    assert "stopped 3 agent(s)" in down_line(run_cli("down", store_url=url))
    for pid in [first, *more.values()]:
        wait_for(lambda pid=pid: gone(pid), 20, what=f"pid {pid} to exit")
