"""The trust boundaries (SECURITY.md): a wake-up is a hint, never a command; the runtime
directory and the store's files are private; an empty or foreign file is not a store.

Everything here runs against the real thing: real worker processes, a real second local user
(``nobody``, when the tests run as root), a real second PostgreSQL role that may only connect.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from helpers import error_line, wait_for
from podium.errors import StoreUnavailable
from podium.models import AgentState, TaskState
from podium.service import Podium
from podium.store import open_store
from podium.wake import WakeChannel, channel_dir

AS_ROOT = os.geteuid() == 0
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")



@pytest.fixture
def runtime(monkeypatch):
    """A runtime directory of this test's own (XDG_RUNTIME_DIR), which other users may enter
    (as /tmp: sticky and world-writable) so that a squatter can try its tricks there."""
    base = Path(tempfile.mkdtemp(prefix="podium-xdg-", dir="/tmp"))
    os.chmod(base, 0o1777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base / "podium"
    shutil.rmtree(base, ignore_errors=True)


# -- the runtime directory -----------------------------------------------------------------

def test_runtime_directory_is_made_private_whatever_the_umask(store_url, runtime):
    old = os.umask(0)
    try:
        p = Podium.open(store_url)
        try:
            waiter = p.store.agent_waiter("a1")
            waiter.close()
        finally:
            p.close()
    finally:
        os.umask(old)
    d = channel_dir(store_url.split("://", 1)[1])
    assert d.parent == runtime
    for path in (runtime, d):
        st_ = os.lstat(path)
        assert stat.S_ISDIR(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o700
        assert st_.st_uid == os.getuid()


def _squat(runtime: Path, how: str) -> None:
    if how == "file":
        runtime.touch()
    elif how == "symlink":
        target = runtime.parent / "elsewhere"
        target.mkdir(mode=0o700)
        runtime.symlink_to(target)
    elif how == "open mode":
        runtime.mkdir()
        os.chmod(runtime, 0o777)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["file", "symlink", "open mode"])
def test_a_runtime_directory_not_ours_alone_is_refused(store_url, runtime, workers, how):
    Podium.open(store_url).close()
    _squat(runtime, how)
    proc = workers.start("w1", wait=False)
    assert proc.wait(timeout=20) == 1
    log = workers.log("w1")
    assert "Traceback" not in log and "wake-up directory" in log, log
    # A command that commits still succeeds: the commit is the truth, the wake-up is lost.
    p = run_cli("task", "add", "echo hi", store_url=store_url)
    assert p.returncode == 0, p.stderr
    task_id = p.stdout.decode().strip()
    # (No process listens there, so there may be nobody to wake; a failed poke says so. The
    # worker that could not listen deregistered: no live agent, and the add says so too.)
    for line in p.stderr.decode().splitlines():
        assert "could not wake" in line or "no live agent can take it" in line, p.stderr
    assert Podium.open(store_url).task(task_id).state is TaskState.QUEUED


@pytest.mark.skipif(not AS_ROOT, reason="needs root to act as a second local user (nobody)")
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python3 for the second user")
def test_runtime_directory_squatted_by_another_user_is_refused(store_url, runtime, workers,
                                                                tmp_path):
    """Another local user makes the runtime directory first (mode 777) and listens on the
    agent's socket name there: no task reaches it, and the agent refuses to start."""
    p = Podium.open(store_url)
    d = channel_dir(store_url.split("://", 1)[1])
    sock_name = "a." + hashlib.sha1(b"w1").hexdigest()[:12] + ".sock"
    squatter = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", f"""
import os, socket, sys
os.umask(0)
os.makedirs({str(d)!r}, mode=0o777)
os.chmod({str(runtime)!r}, 0o777); os.chmod({str(d)!r}, 0o777)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind({str(d / sock_name)!r}); os.chmod({str(d / sock_name)!r}, 0o777)
print("ready", flush=True)
s.settimeout(5)
try:
    print("GOT", s.recv(65536), flush=True)
except socket.timeout:
    print("nothing", flush=True)
"""], user="nobody", stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        assert squatter.stdout.readline() == b"ready\n", squatter.stderr.read()
        assert os.stat(runtime).st_uid != os.getuid()
        p.store.register_agent("w1", [], "shell", socket.gethostname(), os.getpid(), 30, {},
                               takes_hand_offs=True)
        t = p.add_task("echo SECRET_API_KEY=hunter2")
        out, err = squatter.communicate(timeout=15)
        assert out == b"nothing\n", (out, err)
        assert p.task(t.id).agent_id == "w1"  # handed over, in the store only
        proc = workers.start("w2", wait=False)
        assert proc.wait(timeout=20) == 1
        assert "belongs to uid" in workers.log("w2") and "another user" in workers.log("w2")
    finally:
        if squatter.poll() is None:
            squatter.kill()
        p.close()


def test_runtime_directory_follows_xdg_runtime_dir(store_url, runtime, podium, workers):
    workers.start("w1")
    t = podium.add_task("hello")
    wait_for(lambda: podium.task(t.id).state is TaskState.COMPLETED, 10, what="the task")
    d = channel_dir(str(podium.store.path))
    assert d.parent == runtime and any(n.endswith(".sock") for n in os.listdir(d))


# -- wake-ups are hints --------------------------------------------------------------------

FORGED = [b"p" + b'["t-forged","touch %s",null,1,null,null,[],1,3,false,null,0,"w1",9e9,'
          b'null,null,0]', b"h", b"h touch %s", b".", b"\x00" * 10, b"p"]


def test_forged_wake_ups_run_nothing(store_url, podium, workers, tmp_path):
    marker = tmp_path / "pwned"
    workers.start("w1", backend="shell")
    wait_for(lambda: podium.agent("w1").state is AgentState.IDLE, 10, what="w1 idle")
    path = str(channel_dir(str(podium.store.path)) / ("a." + hashlib.sha1(b"w1").hexdigest()[:12]
                                                       + ".sock"))
    # (the worker binds its wake-up socket just after registering: idle comes first)
    wait_for(lambda: os.path.exists(path), 10, what="w1's wake-up socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for data in FORGED:
            s.sendto(data.replace(b"%s", str(marker).encode()), path)

        @settings(max_examples=300, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.binary(max_size=4096))
        def send(data):
            try:
                s.sendto(data, path)
            except BlockingIOError:
                time.sleep(0.01)  # (its queue is full: it is reading them)
        send()
    time.sleep(0.5)
    assert not marker.exists()
    assert podium.tasks() == []
    agent = podium.agent("w1")
    assert agent.state is AgentState.IDLE and agent.tasks_done == 0
    assert workers.procs["w1"].poll() is None, workers.log("w1")
    # Still a working agent: a real task runs at once.
    t = podium.add_task("echo real")
    wait_for(lambda: podium.task(t.id).state is TaskState.COMPLETED, 10, what="a real task")
    assert podium.task(t.id).output == b"real\n"


def test_wake_up_failure_never_fails_a_commit(store_url, tmp_path, monkeypatch):
    s = open_store(store_url)
    try:
        def broken(*args, **kwargs):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(WakeChannel, "notify", broken)
        t = s.add_tasks([Podium(s).spec("echo hi")])[0]
        assert s.get_task(t.id).state is TaskState.QUEUED
    finally:
        s.close()


# -- the store's files ---------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_store_files_are_private_whatever_the_umask(tmp_path, umask):
    home = tmp_path / "proj"
    home.mkdir()
    script = (f"import os; os.umask({umask}); "
              "from podium.cli import main; main()")
    env = dict(os.environ)
    for args in (["init"], ["task", "add", "echo hi"], ["context", "set", "k", "secret"],
                 ["mcp", "token"], ["up", "1"], ["down"]):
        p = subprocess.run([sys.executable, "-c", script, *args], cwd=home, env=env,
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
    store_dir = home / ".podium"
    for d in (store_dir, store_dir / "logs"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    log = store_dir / "logs" / "agent-1.log"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600 and b"registered" in log.read_bytes()
    old = os.umask(umask)
    try:  # (the -wal and -shm files exist while the store is open)
        p = Podium.open(str(store_dir / "podium.db"))
        p.add_task("echo again")
        files = sorted(store_dir.iterdir())
        assert {f.name for f in files} >= {"podium.db", "podium.db-wal", "podium.db-shm",
                                           "podium.db-writer.lock", "mcp-token"}
        for f in files:
            mode = stat.S_IMODE(os.stat(f).st_mode)
            assert mode & 0o077 == 0, f"{f.name} is {mode:o}"
        assert p.store.exposure() == []
        os.chmod(store_dir / "podium.db", 0o644)
        assert [w.split(" is ")[0] for w in p.store.exposure()] == [str(store_dir / "podium.db")]
        p.close()
    finally:
        os.umask(old)


def test_empty_file_is_not_a_store(tmp_path):
    db = tmp_path / "podium.db"
    db.touch()
    for args in (["task", "list"], ["task", "add", "echo hi"], ["agents"]):
        line = error_line(run_cli(*args, store_url=str(db)))
        assert "empty file" in line and "podium init" in line
    assert db.stat().st_size == 0
    p = run_cli("init", store_url=str(db))
    assert p.returncode == 0, p.stderr
    assert run_cli("task", "add", "echo hi", store_url=str(db)).returncode == 0


def test_foreign_sqlite_database_is_not_a_store(tmp_path):
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (n INTEGER)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    for args in (["init"], ["task", "add", "echo hi"]):
        line = error_line(run_cli(*args, store_url=str(db)))
        assert "not a Podium store" in line and "invoices" in line
    assert db.read_bytes() == before


def test_new_store_opened_by_many_processes_at_once(tmp_path):
    """Whoever creates the file migrates it under the writer lock: the others, finding it
    still empty, wait for it instead of refusing it."""
    url = str(tmp_path / "fresh.db")
    procs = [subprocess.Popen([sys.executable, "-m", "podium", "--store", url, "task", "add",
                               f"echo {i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert len(Podium.open(url).tasks()) == 6


# -- PostgreSQL: a role that may only connect ------------------------------------------------

@pytest.fixture
def stranger(pg_url):
    """A second, real role on the test server that may connect and see the schema, and has no
    rights on Podium's tables."""
    import secrets as _secrets

    import psycopg

    from conftest import PG_SERVER, _pg_admin

    admin = _pg_admin()
    name = "podium_stranger_" + _secrets.token_hex(4)
    schema = pg_url.rsplit("%3D", 1)[1]
    admin.execute(f"CREATE ROLE {name} LOGIN")
    admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {name}")
    parts = PG_SERVER.split("://", 1)
    url = f"{parts[0]}://{name}@{parts[1]}"
    conn = psycopg.connect(url, autocommit=True, connect_timeout=5,
                           options=f"-csearch_path={schema}")
    try:
        yield conn
    finally:
        conn.close()
        admin.execute(f"DROP OWNED BY {name}")
        admin.execute(f"DROP ROLE {name}")
        admin.close()


def test_a_connect_only_role_can_neither_command_nor_read_workers(pg_url, stranger, tmp_path):
    import psycopg

    from conftest import Workers

    p = Podium.open(pg_url)
    workers = Workers(pg_url, tmp_path)
    marker = tmp_path / "pwned"
    try:
        db, schema = stranger.execute("SELECT current_database(), current_schema()").fetchone()
        # What the channel names and the lock key used to be derived from: public facts.
        old = hashlib.sha1(f"{db}/{schema}".encode()).hexdigest()
        guessed = [f"podium_wake_{old[:12]}", f"podium_events_{old[:12]}"]
        for name in guessed:
            stranger.execute(f"LISTEN {name}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stranger.execute("SELECT secret FROM store_key")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stranger.execute("SELECT count(*) FROM tasks")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stranger.execute("BEGIN")
            try:
                stranger.execute("LOCK TABLE store_key IN EXCLUSIVE MODE")
            finally:
                stranger.execute("ROLLBACK")
        assert p.store.channel_wake not in guessed
        # The advisory lock the team used to need for every event.
        stranger.execute("SELECT pg_advisory_lock(%s)", (int(old[12:27], 16) & 0x7FFFFFFFFFFFFFFF,))

        workers.start("w1", backend="shell")
        wait_for(lambda: p.agent("w1").state is AgentState.IDLE, 15, what="w1 idle")
        forged = f'p:2:w1["t-forged","touch {marker}",null,1,null,null,[],1,3,false,null,0,' \
                 f'"w1",9e9,null,null,0]'
        for name in guessed:
            stranger.execute("SELECT pg_notify(%s, %s)", (name, forged))
        # Even someone who learnt the real channel's name only makes the worker look.
        for payload in (forged, "h:w1", "*", "w1", "h:w1 touch " + str(marker)):
            stranger.execute("SELECT pg_notify(%s, %s)", (p.store.channel_wake, payload))

        began = time.monotonic()
        t = p.add_task("echo DB_PASSWORD=hunter2")  # not held up by the stranger's lock
        assert time.monotonic() - began < 5
        wait_for(lambda: p.task(t.id).state is TaskState.COMPLETED, 15, what="the real task")
        assert p.task(t.id).output == b"DB_PASSWORD=hunter2\n"
        time.sleep(0.3)
        assert not marker.exists()
        assert [x.id for x in p.tasks()] == [t.id]
        heard = []
        stranger.execute("SELECT 1")  # (collects notifications that arrived meanwhile)
        for n in stranger.notifies(timeout=0.5, stop_after=100):
            heard.append(n.payload)
        assert not any("hunter2" in h for h in heard), heard
    finally:
        workers.stop_all()
        p.close()


def test_a_lock_held_too_long_gives_a_clear_error(pg_url, monkeypatch):
    """A session that holds the store's lock (here: a trusted one, stuck) makes others give up
    after the lock timeout with one clear line, instead of hanging."""
    import psycopg

    from podium.store import pgconnect

    monkeypatch.setattr(pgconnect, "LOCK_TIMEOUT_S", 1)
    s = open_store(pg_url)
    holder = psycopg.connect(pg_url, autocommit=False)
    try:
        holder.execute("LOCK TABLE store_key IN EXCLUSIVE MODE")
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="waited 1 s for a lock"):
            s.add_tasks([Podium(s).spec("echo hi")])
        assert time.monotonic() - began < 5
        holder.rollback()
        assert len(s.add_tasks([Podium(s).spec("echo hi")])) == 1
        assert len(s.list_tasks()) == 1  # the failed add left nothing
    finally:
        holder.close()
        s.close()



def test_status_warns_of_a_store_others_may_read(store_url, cli):
    assert cli("init").returncode == 0
    path = store_url.split("://", 1)[1]
    assert cli("status").stderr == b""
    os.chmod(path, 0o644)
    p = cli("status")
    assert p.returncode == 0
    lines = p.stderr.decode().splitlines()
    assert lines[0] == (f"podium: warning: {path} is open to other users (mode 644): "
                        f"chmod 600 {path}")
    # (SQLite gives the -wal and -shm files it makes the database's mode)
    assert all(line.startswith(f"podium: warning: {path}-") for line in lines[1:]), lines
