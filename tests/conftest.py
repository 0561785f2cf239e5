"""Shared fixtures: a fresh real store per test, real worker processes, the real CLI.

Store contract tests take the ``store`` fixture, which is parametrized over the store kinds
this machine can run (SQLite always; PostgreSQL joins when its store exists).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podium.models import TaskSpec
from podium.service import Podium
from podium.store import open_store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """No test sees the user's store or leaves files behind in the checkout."""
    monkeypatch.delenv("PODIUM_STORE", raising=False)
    monkeypatch.delenv("PODIUM_AGENT_ID", raising=False)
    monkeypatch.delenv("PODIUM_TASK_ID", raising=False)
    # Workers remember finished tasks when memory is read, not in the background: a test that
    # is not about memory does not load the embedding model (tests/integration/test_memory.py
    # turns it on where it is tested).
    monkeypatch.setenv("PODIUM_MEMORY_INDEX", "lazy")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite://{tmp_path / 'podium.db'}"


PG_SERVER = os.environ.get("PODIUM_TEST_PG", "postgresql://127.0.0.1:5432/test")


def _pg_admin():
    """A connection to the test PostgreSQL server, or a skip saying why there is none."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed")
    try:
        return psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        if os.environ.get("PODIUM_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"no PostgreSQL at {PG_SERVER}: {str(e).strip()}")


@pytest.fixture
def pg_url():
    """A fresh, empty schema on the test server; dropped afterwards."""
    admin = _pg_admin()
    schema = "podium_t_" + secrets.token_hex(6)
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_SERVER else "?"
    try:
        yield f"{PG_SERVER}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_store_url(request, tmp_path):
    """Every store kind: contract tests run once per kind."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'podium.db'}"
    return request.getfixturevalue("pg_url")


def pytest_generate_tests(metafunc):
    """The store contract runs once more on a store that held a history and was pruned."""
    if metafunc.module.__name__.endswith("test_store_contract") and \
            "store" in metafunc.fixturenames:
        metafunc.parametrize("history", ["fresh", "pruned"], indirect=True)


@pytest.fixture
def history(request) -> str:
    return getattr(request, "param", "fresh")


def _prune_a_history(s) -> None:
    """Finished tasks (one cancelled by its dependency), events, then all of it pruned: what
    follows starts on ids that have moved on, in an otherwise empty store."""
    a, b = s.add_tasks([TaskSpec("old 1"), TaskSpec("old 2")])
    s.add_tasks([TaskSpec("old dependent", depends_on=[a.id])])
    s.cancel(a.id, "old")
    s.cancel(b.id, "old")
    s.add_event("old.event")
    s.prune(time.time() + 1)


@pytest.fixture
def store(any_store_url, history):
    s = open_store(any_store_url)
    if history == "pruned":
        _prune_a_history(s)
    yield s
    # Finished tasks are counted as they finish: the counts always equal the rows.
    with s._reader() as tx:
        assert s.counts() == s._scan_counts(tx)
    s.close()


@pytest.fixture
def podium(store_url):
    p = Podium.open(store_url)
    yield p
    p.close()


class Workers:
    """Real ``podium agent run`` processes, stopped (and checked) at teardown."""

    def __init__(self, store_url: str, tmp_path: Path):
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, backend: str = "echo", roles=(), lease: float = 30.0,
              heartbeat: float | None = None, options=(), wait: bool = True) -> subprocess.Popen:
        argv = [sys.executable, "-m", "podium", "--store", self.store_url, "agent", "run",
                "--name", name, "--backend", backend, "--lease", str(lease)]
        if heartbeat is not None:
            argv += ["--heartbeat", str(heartbeat)]
        for r in roles:
            argv += ["--role", r]
        for o in options:
            argv += ["--option", o]
        log = open(self.tmp_path / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        if wait:
            self.wait_registered(name, proc)
        return proc

    def wait_registered(self, name: str, proc: subprocess.Popen, timeout: float = 20) -> None:
        s = open_store(self.store_url)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"worker {name} exited {proc.returncode}: {self.log(name)}")
                try:
                    a = s.get_agent(name)
                    if a.pid == proc.pid and a.state.live:
                        return
                except Exception:
                    pass
                time.sleep(0.02)
            raise AssertionError(f"worker {name} did not register: {self.log(name)}")
        finally:
            s.close()

    def log(self, name: str) -> str:
        p = self.tmp_path / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        return proc.wait(timeout=timeout)

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers(store_url, tmp_path):
    w = Workers(store_url, tmp_path)
    yield w
    w.stop_all()


def run_cli(*args: str, store_url: str | None = None, input: bytes | None = None,
            env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real ``podium`` command; returns bytes stdout/stderr."""
    argv = [sys.executable, "-m", "podium"]
    if store_url:
        argv += ["--store", store_url]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(argv + list(args), input=input, capture_output=True, timeout=timeout,
                          env=full_env)


@pytest.fixture
def cli(store_url):
    def run(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float = 60):
        return run_cli(*args, store_url=store_url, input=input, env=env, timeout=timeout)
    return run


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The agents' working directory (workers start in the current directory)."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.fixture
def claude_bin():
    """The real Claude Code CLI, installed by scripts/test."""
    from agent_clis import npm_bin

    return npm_bin("claude")
