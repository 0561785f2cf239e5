"""The service's answers that a first-hour walkthrough found wrong, on a real SQLite store in
a tmp dir: the hint that starts a stopped agent again names its backend and roles; every
listing gives agents by name; a task cancelled as it is added (its dependency failed already)
is warned of; reading a vector store that does not exist makes
none, and what is made of an embedded ChromaDB is private; a store made in an empty file is
private; listing the backends loads no model."""

from __future__ import annotations

import importlib.util
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from podium.errors import StoreNotFound
from podium.models import Outcome, TaskState
from podium.service import Podium
from podium.store.base import Finish
from podium.store.sqlite import SQLiteStore

ELSEWHERE = "another-host"  # (agents of no process here: nothing marks them dead meanwhile)


def register(podium: Podium, name: str, roles=(), backend: str = "echo"):
    return podium.store.register_agent(name, list(roles), backend, ELSEWHERE, 4242, 3600.0, {})


# -- 1. the restart hint -----------------------------------------------------------------------

def test_restart_hint_names_the_backend_and_roles(podium):
    register(podium, "j-1", ["code review", "docs"], backend="echo")
    podium.store.deregister("j-1")
    t = podium.add_task("say hi", agent="j-1")
    why = podium.why_waiting(t)
    assert why is not None and why.startswith("agent j-1 is stopped; start it again with ")
    command = why.split(" with ", 1)[1].strip("'")
    assert shlex.split(command) == ["podium", "agent", "run", "--name", "j-1", "--backend",
                                    "echo", "--role", "code review", "--role", "docs"]


def test_restart_hint_of_an_agent_without_roles(podium):
    register(podium, "solo", backend="claude")
    podium.store.deregister("solo")
    why = podium.why_waiting(podium.add_task("x", agent="solo"))
    assert why is not None and why.endswith(
        "'podium agent run --name solo --backend claude'")


# -- 2. agents by name, everywhere --------------------------------------------------------------

NAMES = ["agent-3", "agent-10", "agent-1", "agent-2"]
BY_NAME = ["agent-1", "agent-2", "agent-3", "agent-10"]


def test_every_listing_of_agents_is_by_name(podium):
    for name in NAMES:
        register(podium, name)
    assert [a.id for a in podium.agents()] == BY_NAME
    assert [a.id for a in podium.status().live_agents] == BY_NAME
    assert [a.id for a in podium.costs().agents] == BY_NAME
    assert [row["agent"] for row in podium.costs().to_dict()["agents"]] == BY_NAME
    assert [t.target_agent for t in podium.broadcast("hello")] == BY_NAME
    for t in podium.tasks(state="queued"):
        podium.cancel(t.id)
    for name in NAMES:
        podium.store.deregister(name)
    done = podium.prune_agents()
    assert done.removed == BY_NAME and not done.kept


# -- 8. a dependency that already failed or was cancelled ---------------------------------------

def _failed_task(podium: Podium):
    register(podium, "runner")
    t = podium.add_task("will fail", agent="runner")
    claimed = podium.store.claim("runner", [], 60.0)
    assert claimed is not None and claimed.id == t.id
    podium.store.finish("runner", Finish(t.id, claimed.attempts,
                                         Outcome(TaskState.FAILED, error="boom")))
    assert podium.task(t.id).state is TaskState.FAILED
    return t


def test_adding_after_a_failed_dependency_warns(podium):
    failed = _failed_task(podium)
    t = podium.add_task("next", depends_on=[failed.id])
    assert t.state is TaskState.CANCELLED  # (the documented rule: it never runs)
    warning = podium.add_warning(t)
    assert warning is not None
    assert f"{t.id} was cancelled at once" in warning
    assert f"dependency {failed.id} had already failed" in warning
    assert f"'podium task retry {failed.id}'" in warning


def test_adding_after_a_cancelled_dependency_warns(podium):
    register(podium, "any")
    gone = podium.cancel(podium.add_task("never").id)
    t = podium.add_task("next", depends_on=[gone.id])
    warning = podium.add_warning(t)
    assert warning is not None and f"dependency {gone.id} had already been cancelled" in warning


def test_add_warning_of_waiting_and_runnable_tasks(podium):
    t = podium.add_task("nobody runs it")
    assert podium.add_warning(t) == f"{t.id} will wait: {podium.why_waiting(t)}"
    register(podium, "w")
    assert podium.add_warning(podium.add_task("w runs it")) is None


# -- 4. vector stores: a read makes none; Chroma's files are private ----------------------------

def test_reading_a_missing_chroma_store_makes_nothing(podium, tmp_path):
    where = tmp_path / "nonexist"
    podium.use_memory(f"chroma://{where}")
    with pytest.raises(StoreNotFound, match="no such memory store"):
        podium.memory_search("foo")
    with pytest.raises(StoreNotFound, match="no such memory store"):
        podium.memory_stats()
    with pytest.raises(StoreNotFound, match="no such memory store"):
        podium.similar_tasks("foo")
    assert not where.exists()
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    podium.use_memory(f"chroma://{empty}")
    with pytest.raises(StoreNotFound, match="holds no ChromaDB"):
        podium.memory_search("foo")
    assert list(empty.iterdir()) == []


def test_reading_a_missing_sqlite_vector_store_makes_nothing(podium, tmp_path):
    where = tmp_path / "vectors.db"
    podium.use_memory(f"sqlite://{where}")
    with pytest.raises(StoreNotFound, match="no such memory store"):
        podium.memory_search("foo", mode="keyword")
    assert not where.exists()


@pytest.mark.skipif(importlib.util.find_spec("chromadb") is None, reason="chromadb not installed")
def test_a_chroma_store_podium_makes_is_private_whatever_the_umask(tmp_path):
    import numpy as np

    from podium.memory import open_vectors

    where = tmp_path / "deep" / "chroma"
    old = os.umask(0o022)
    try:
        vectors = open_vectors(f"chroma://{where}", None)
        vectors.add(["m-1", "m-2"], np.ones((2, 8), dtype=np.float32), "model-x")
        assert [i for i, _ in vectors.search(np.ones(8, dtype=np.float32), 2, "model-x")]
        vectors.close()
        again = open_vectors(f"chroma://{where}", None, create=False)  # (it exists now)
        assert again.counts() == {"model-x": 2}
        again.close()
    finally:
        os.umask(old)
    assert (where / "chroma.sqlite3").is_file()
    for p in [where.parent, where, *where.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {mode:o}"


# -- 5. a store made in an empty file -----------------------------------------------------------

def test_a_store_made_in_an_empty_file_is_private(tmp_path):
    path = tmp_path / "given.db"
    path.touch()
    os.chmod(path, 0o644)
    old = os.umask(0o022)
    try:
        store = SQLiteStore(path, create_in_empty_file=True)
        try:
            store.add_tasks([Podium(store).spec("x")])
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
            assert store.exposure() == []
        finally:
            store.close()
    finally:
        os.umask(old)


# -- 6. listing the backends loads no model ----------------------------------------------------

def test_listing_backends_loads_no_model():
    code = ("import sys\n"
            "from podium.agents import backends\n"
            "listing = backends.describe()\n"
            "local = [b for b in listing if b['name'] == 'local']\n"
            "assert local and local[0]['options'], listing\n"
            "print('llama_cpp' in sys.modules, local[0]['available'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded, available = r.stdout.decode().split()
    assert loaded == "False"
    assert r.stderr == b""
    if importlib.util.find_spec("llama_cpp") is not None:
        assert available == "True"
