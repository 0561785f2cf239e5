"""What a first-hour walkthrough found wrong, through the real CLI (``python -m podium``) on a
real SQLite store:
the restart hint works as printed; agents are listed by name by status, costs, broadcast,
down and prune; odd store paths are one error line and create nothing; reading a ChromaDB
that does not exist makes none; ``init`` in an empty file leaves it private; ``backends``
loads no model; ``task add --json`` and ``broadcast --json`` show the ``seq``; a store copy's
agents are stopped; a PostgreSQL password is never shown; ``up`` makes ``.podium/`` private."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import run_cli
from helpers import error_line, files_under, wait_for
from podium.models import TaskState

ELSEWHERE = "another-host"


def register(podium, name, roles=(), backend="echo"):
    return podium.store.register_agent(name, list(roles), backend, ELSEWHERE, 4242, 3600.0, {})


# -- 1. the restart hint works verbatim ------------------------------------------------------

def test_the_restart_hint_starts_the_agent_with_its_backend(podium, cli, store_url, tmp_path):
    register(podium, "j-1", ["writer"], backend="echo")
    podium.store.deregister("j-1")
    r = cli("task", "add", "--agent", "j-1", "--role", "writer", "echo-me")
    assert r.returncode == 0, r.stderr
    task_id = r.stdout.decode().strip()
    warning = r.stderr.decode()
    assert "start it again with 'podium agent run --name j-1 --backend echo --role writer'" \
        in warning
    command = shlex.split(warning.split(" with ", 1)[1].strip().strip("'"))
    assert command[0] == "podium"
    log = open(tmp_path / "hint.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "podium", *command[1:]], stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PODIUM_STORE": store_url})
    log.close()
    try:
        t = wait_for(lambda: (t := podium.task(task_id)).state.finished and t, timeout=30,
                     what="the task run by the agent the hint started")
        assert t.state is TaskState.COMPLETED and t.agent_id == "j-1"
        assert b"echo-me" in (t.output or b"")  # (the echo backend's, not a shell's)
        assert podium.agent("j-1").backend == "echo"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- 2. agents by name -------------------------------------------------------------------------

NAMES = ["agent-3", "agent-10", "agent-1", "agent-2"]
BY_NAME = ["agent-1", "agent-2", "agent-3", "agent-10"]


def test_status_costs_broadcast_prune_list_agents_by_name(podium, cli):
    for name in NAMES:
        register(podium, name)
    status = json.loads(cli("status", "--json").stdout)
    assert [a["id"] for a in status["live_agents"]] == BY_NAME
    costs = json.loads(cli("costs", "--json").stdout)
    assert [a["agent"] for a in costs["agents"]] == BY_NAME
    r = cli("broadcast", "hi", "--json")
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert [t["target_agent"] for t in sent] == BY_NAME
    for t in sent:
        assert cli("task", "cancel", t["id"]).returncode == 0
    for name in NAMES:
        podium.store.deregister(name)
    pruned = json.loads(cli("agent", "prune", "--json").stdout)
    assert pruned["removed"] == BY_NAME


def test_down_lists_the_agents_it_stopped_by_name(workers, cli):
    for name in ("agent-10", "agent-2"):
        workers.start(name)
    r = cli("down", "--timeout", "10")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "stopped 2 agent(s): agent-2, agent-10"


# -- 3. odd store paths --------------------------------------------------------------------------

def _refused(tmp_path: Path, store: str, *command: str) -> str:
    before = files_under(tmp_path)
    r = run_cli(*command, store_url=store, timeout=30)
    line = error_line(r)
    assert files_under(tmp_path) == before, "a refused store path created files"
    return line


COMMANDS = [("status",), ("task", "add", "x"), ("init",)]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_directory_is_no_store(tmp_path, command):
    (tmp_path / "adir").mkdir()
    line = _refused(tmp_path, "adir", *command)
    assert line == (f"podium: error: cannot open store {tmp_path / 'adir'}: it is a directory, "
                    "not a Podium store (give a file path)")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_or_a_device_is_no_store(tmp_path, command):
    os.mkfifo(tmp_path / "fifo")
    line = _refused(tmp_path, "fifo", *command)
    assert line.endswith("fifo: it is a FIFO (named pipe), not a Podium store (give a file "
                         "path)")
    line = _refused(tmp_path, "/dev/null", *command)
    assert line == ("podium: error: cannot open store /dev/null: it is a character device, not "
                    "a Podium store (give a file path)")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_store_in_a_missing_or_file_directory(tmp_path, command):
    line = _refused(tmp_path, "nope/x.db", *command)
    assert "nope does not exist" in line
    (tmp_path / "afile").write_text("")
    line = _refused(tmp_path, "afile/x.db", *command)
    assert "afile is not a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any file")
@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreadable_store(tmp_path, command):
    (tmp_path / "locked.db").write_bytes(b"")
    os.chmod(tmp_path / "locked.db", 0)
    line = _refused(tmp_path, "locked.db", *command)
    assert "permission denied" in line.lower()
    closed = tmp_path / "closed"
    closed.mkdir()
    os.chmod(closed, 0)
    try:
        line = _refused(tmp_path, "closed/x.db", *command)
        assert "permission denied" in line.lower()
    finally:
        os.chmod(closed, 0o700)


# -- 4. a read of a ChromaDB that does not exist ---------------------------------------------

@pytest.mark.parametrize("command", [("memory", "search", "foo"), ("memory", "stats")])
def test_reading_a_missing_chroma_store_is_an_error_and_makes_nothing(podium, store_url,
                                                                      tmp_path, command):
    where = tmp_path / "nonexist"
    before = files_under(tmp_path)
    r = run_cli(*command, "--memory", f"chroma://{where}", store_url=store_url)
    line = error_line(r)
    assert line.startswith(f"podium: error: no such memory store: chroma://{where}")
    assert not where.exists() and files_under(tmp_path) == before


# -- 5. init in an empty file ----------------------------------------------------------------

def test_init_in_an_empty_file_makes_it_private(tmp_path):
    path = tmp_path / "given.db"
    path.touch()
    os.chmod(path, 0o644)
    init = subprocess.run(
        ["sh", "-c", 'umask 022; exec "$0" -m podium --store "$1" init', sys.executable,
         str(path)], capture_output=True, timeout=60)
    assert init.returncode == 0, init.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # While it is open, its write-ahead log and shared memory are there: 0600 too.
    from podium.store.sqlite import SQLiteStore

    old = os.umask(0o022)
    try:
        store = SQLiteStore(path)
    finally:
        os.umask(old)
    try:
        for p in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        status = run_cli("status", store_url=str(path))
        assert status.returncode == 0 and b"open to other users" not in status.stderr, \
            status.stderr
    finally:
        store.close()


# -- 6. podium backends loads no model ---------------------------------------------------------

def test_backends_loads_no_model(cli):
    started = time.monotonic()
    for args in (("backends",), ("backends", "--json")):
        r = run_cli(*args)
        assert r.returncode == 0 and r.stderr == b"", r.stderr
    listing = json.loads(r.stdout)
    assert any(b["name"] == "local" and b["options"] for b in listing)
    assert time.monotonic() - started < 10


# -- 7. seq in task add --json and broadcast --json ------------------------------------------

def test_add_and_broadcast_json_show_the_seq(podium, cli):
    register(podium, "w-1")
    added = json.loads(cli("task", "add", "one", "--json").stdout)
    shown = json.loads(cli("task", "show", added["id"], "--json").stdout)
    assert isinstance(added["seq"], int) and added["seq"] == shown["seq"]
    sent = json.loads(cli("broadcast", "all", "--json").stdout)
    for t in sent:
        assert t["seq"] == json.loads(cli("task", "show", t["id"], "--json").stdout)["seq"]
        assert t["seq"] > added["seq"]


# -- a copy's agents are stopped: down on the copy leaves the source's team alone ---------------

def test_down_on_a_store_copy_leaves_the_source_teams_workers(tmp_path):
    source, copy = tmp_path / "source.db", tmp_path / "copy.db"
    env = {"PODIUM_HOME": str(tmp_path / ".podium")}
    ok = dict(env=env, timeout=60)
    assert run_cli("init", store_url=str(source), **ok).returncode == 0
    r = run_cli("up", "1", "--backend", "echo", "--prefix", "src", "--json",
                store_url=str(source), **ok)
    assert r.returncode == 0, r.stderr
    (agent,) = json.loads(r.stdout)
    try:
        r = run_cli("store", "copy", str(source), str(copy), **ok)
        assert r.returncode == 0, r.stderr
        agents = json.loads(run_cli("agents", "--json", store_url=str(copy), **ok).stdout)
        assert [(a["id"], a["state"], a["current_task"]) for a in agents] == \
            [("src-1", "stopped", None)]
        r = run_cli("down", store_url=str(copy), **ok)
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)
        assert os.path.exists(f"/proc/{agent['pid']}"), "down on the copy stopped the source's"
        live = json.loads(run_cli("agents", "--json", store_url=str(source), **ok).stdout)
        assert [a["state"] for a in live] == ["idle"]
    finally:
        run_cli("down", store_url=str(source), **ok)


# -- a PostgreSQL password is never shown ----------------------------------------------------

def test_a_postgres_password_is_never_shown(pg_url, tmp_path):
    """In the user part or as ``password=``: ``init``, ``status`` (text and JSON), a worker's
    log and an error say ``***`` (the test server trusts loopback, so any password logs in)."""
    secret = "TopS3cretPW"
    parts = urlsplit(pg_url)
    user = parts.username or getpass.getuser()  # (libpq's default)
    url = urlunsplit(parts._replace(netloc=f"{user}:{secret}@{parts.hostname}"
                                           f"{':' + str(parts.port) if parts.port else ''}"))
    env = {"PODIUM_HOME": str(tmp_path / ".podium"), "PODIUM_PG_HOST": "off"}
    outputs = []
    for args in (["init"], ["status"], ["status", "--json"]):
        r = run_cli(*args, store_url=url, env=env)
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout + r.stderr)
    assert b":***@" in outputs[0] and b":***@" in outputs[1]
    r = run_cli("up", "1", "--backend", "echo", "--prefix", "pw", store_url=url, env=env)
    assert r.returncode == 0, r.stderr
    try:
        log = wait_for(lambda: (t := (tmp_path / ".podium" / "logs" / "pw-1.log").read_bytes())
                       and b"registered" in t and t, timeout=20, what="the worker's log")
        outputs.append(log)
    finally:
        run_cli("down", store_url=url, env=env)
    unreachable = f"postgresql://{user}@127.0.0.1:1/test?password={secret}&sslmode=disable"
    line = error_line(run_cli("status", store_url=unreachable, env=env))
    assert "password=***" in line, line
    for out in outputs:
        assert secret.encode() not in out, out
    assert secret not in line


def test_up_on_a_postgres_store_makes_its_home_private(pg_url, tmp_path):
    """``.podium/`` (the logs' directory of a PostgreSQL store) made by ``up`` is 0700 with a
    ``.gitignore``, whatever the umask, as a SQLite store's is."""
    home = tmp_path / "project" / ".podium"
    home.parent.mkdir()
    env = {"PODIUM_HOME": str(home), "PODIUM_PG_HOST": "off"}
    old = os.umask(0o022)
    try:
        r = run_cli("up", "1", "--backend", "echo", "--prefix", "home", store_url=pg_url, env=env)
    finally:
        os.umask(old)
    try:
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert (home / ".gitignore").read_text().strip().endswith("*")
        assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700
    finally:
        run_cli("down", store_url=pg_url, env=env)
