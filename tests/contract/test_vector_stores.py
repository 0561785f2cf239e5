"""The vector store contract, run on every store this machine has: SQLite BLOBs, PostgreSQL
without pgvector (always: the bytea fallback), PostgreSQL with pgvector (when the server has the
extension, or ``PODIUM_TEST_PGVECTOR`` names one that does), ChromaDB embedded, and a real
``chroma run`` server on a free loopback port. Then ``open_vectors``'s URLs.

Each kind is reached by its ``--memory`` URL, so a test can reopen a store, or write to it from
another process, exactly as Podium's processes do.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PG_SERVER
from podium.errors import InvalidInput, MemoryUnavailable
from podium.memory import open_vectors
from podium.memory.base import VectorStore
from podium.memory.postgres_vectors import PostgresVectors

MODEL = "test-model@1"
OTHER = "other-model@2"
KINDS = ["sqlite", "postgres", "pgvector", "chroma", "chroma-server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real ``chroma run`` on loopback for the whole session; its URL."""
    pytest.importorskip("chromadb")
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        pytest.skip(f"no chroma command beside {sys.executable}")
    port = _free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = open(data.parent / "chroma-server.log", "wb")
    proc = subprocess.Popen([str(exe), "run", "--path", str(data), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("chroma run did not start: " + (
                    data.parent / "chroma-server.log").read_text()[-2000:]) from None
            time.sleep(0.05)
    yield f"chroma://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pg_schema(server: str):
    """A fresh schema on ``server`` (a context: yields its URL, drops it afterwards)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        pytest.skip(f"no PostgreSQL at {server}: {str(e).strip()}")
    schema = "podium_v_" + secrets.token_hex(6)
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server else "?"
    return admin, schema, f"{server}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=KINDS)
def url(request, tmp_path):
    """The ``--memory`` URL of a fresh, empty store of each kind."""
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite://{tmp_path / 'podium.db'}"
        return
    if kind == "chroma":
        pytest.importorskip("chromadb")
        yield f"chroma://{tmp_path / 'chroma'}"
        return
    if kind == "chroma-server":
        server = request.getfixturevalue("chroma_server")
        store = open_vectors(server, None)
        store.clear()  # (one server for the session: each test starts from nothing)
        store.close()
        yield server
        return
    server = os.environ.get("PODIUM_TEST_PGVECTOR", PG_SERVER) if kind == "pgvector" \
        else PG_SERVER
    admin, schema, schema_url = _pg_schema(server)
    try:
        store = PostgresVectors(schema_url, use_pgvector=kind == "pgvector")
        if kind == "pgvector" and not store.uses_pgvector:
            store.close()
            pytest.skip(f"the PostgreSQL server at {server} has no pgvector extension (Debian's "
                        "packages here do not ship it); set PODIUM_TEST_PGVECTOR to a server "
                        "that has it")
        assert store.uses_pgvector == (kind == "pgvector")
        store.close()
        yield schema_url
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def store(url):
    s = open_vectors(url, None)
    yield s
    s.close()


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def rows(*vectors) -> np.ndarray:
    return np.stack([unit(*v) for v in vectors])


def test_search_orders_by_cosine_with_exact_scores(store: VectorStore):
    vectors = rows((1, 0, 0, 0), (1, 1, 0, 0), (0, 1, 0, 0), (-1, 0, 0.2, 0))
    store.add(["a", "b", "c", "d"], vectors, MODEL)
    query = unit(1, 0.2, 0, 0)
    found = store.search(query, 3, MODEL)
    assert [i for i, _ in found] == ["a", "b", "c"]
    expected = vectors @ query
    for (memory_id, score), row in zip(found, (0, 1, 2)):
        assert score == pytest.approx(float(expected[row]), abs=1e-4), memory_id
    assert [i for i, _ in store.search(query, 10, MODEL)] == ["a", "b", "c", "d"]
    assert store.search(query, 0, MODEL) == []
    # A vector not of unit length is stored by its direction: scores stay cosines.
    store.add(["e"], np.array([[0, 0, 0, 5]], dtype=np.float32), MODEL)
    assert store.search(unit(0, 0, 0, 1), 1, MODEL)[0][1] == pytest.approx(1.0, abs=1e-4)


def test_replace_only_and_remove(store: VectorStore):
    store.add(["a", "b", "c"], rows((1, 0, 0), (0, 1, 0), (0, 0, 1)), MODEL)
    store.add(["a"], rows((0, 0, 1)), MODEL)  # replaced: now beside c
    assert store.counts() == {MODEL: 3}
    assert {i for i, _ in store.search(unit(0, 0, 1), 2, MODEL)} == {"a", "c"}
    assert store.search(unit(1, 0.5, 0.1), 1, MODEL)[0][0] == "b"  # (a no longer there)
    # only=: the nearest among those ids; ids it does not hold are no error.
    assert [i for i, _ in store.search(unit(0, 0, 1), 5, MODEL, only=["b", "c", "zz"])] == \
        ["c", "b"]
    assert store.search(unit(0, 0, 1), 5, MODEL, only=[]) == []
    assert store.remove(["a", "zz"]) == 1
    assert store.remove(["a"]) == 0
    assert [i for i, _ in store.search(unit(0, 0, 1), 5, MODEL)] == ["c", "b"]
    assert store.counts() == {MODEL: 2}


def test_two_models_kept_apart_and_cleared(store: VectorStore):
    store.add(["a", "b"], rows((1, 0, 0), (0, 1, 0)), MODEL)
    store.add(["x", "y", "z"], rows((1, 0, 0, 0, 0), (0, 1, 0, 0, 0), (0, 0, 1, 0, 0)), OTHER)
    assert store.counts() == {MODEL: 2, OTHER: 3}
    assert {i for i, _ in store.search(unit(1, 0, 0), 10, MODEL)} == {"a", "b"}
    assert {i for i, _ in store.search(unit(1, 0, 0, 0, 0), 10, OTHER)} == {"x", "y", "z"}
    assert store.search(unit(1, 0, 0), 10, "no-such-model") == []
    with pytest.raises(InvalidInput):  # a query of the other model's dimension
        store.search(unit(1, 0, 0, 0, 0), 1, MODEL)
    with pytest.raises(InvalidInput):  # a model has one dimension
        store.add(["c"], rows((1, 0, 0, 0)), MODEL)
    # An id re-made by another model leaves the first one (reindex after a model change).
    store.add(["a"], rows((0, 0, 0, 1, 0)), OTHER)
    assert store.counts() == {MODEL: 1, OTHER: 4}
    assert [i for i, _ in store.search(unit(1, 0, 0), 10, MODEL)] == ["b"]
    assert store.clear(MODEL) == 1
    assert store.counts() == {OTHER: 4}
    assert store.search(unit(0, 1, 0), 10, MODEL) == []
    assert store.clear() == 4
    assert store.counts() == {}
    assert store.search(unit(1, 0, 0, 0, 0), 10, OTHER) == []


def test_bad_input_is_refused(store: VectorStore):
    with pytest.raises(InvalidInput):
        store.add(["a", "b"], rows((1, 0)), MODEL)
    with pytest.raises(InvalidInput):
        store.add(["a"], np.zeros((1, 3), dtype=np.float32), MODEL)
    with pytest.raises(InvalidInput):
        store.add(["a"], np.array([[np.nan, 1, 0]], dtype=np.float32), MODEL)
    with pytest.raises(InvalidInput):
        store.add([""], rows((1, 0)), MODEL)
    with pytest.raises(InvalidInput):
        store.add(["a"], rows((1, 0)), "")
    with pytest.raises(InvalidInput):
        store.search(unit(1, 0), -1, MODEL)
    assert store.counts() == {}


def test_reopened_store_keeps_its_vectors_and_has_a_clear_description(url):
    first = open_vectors(url, None)
    first.add(["a", "b"], rows((1, 0, 0), (0, 1, 0)), MODEL)
    first.close()
    again = open_vectors(url, None)
    try:
        assert again.counts() == {MODEL: 2}
        assert again.search(unit(0, 1, 0), 1, MODEL)[0][0] == "b"
        assert again.describe() and "***" not in again.describe()
    finally:
        again.close()


CHILD = textwrap.dedent("""
    import sys, numpy as np
    from podium.memory import open_vectors
    s = open_vectors(sys.argv[1], None)
    s.add(["new"], np.array([[0, 0, 1]], dtype=np.float32), sys.argv[2])
    assert s.remove(["a"]) == 1
    s.close()
""")


def test_another_process_writes_are_seen(store: VectorStore, url):
    store.add(["a", "b"], rows((1, 0, 0), (0, 1, 0)), MODEL)
    assert store.search(unit(0, 0, 1), 5, MODEL)  # (this process's cache is loaded)
    subprocess.run([sys.executable, "-c", CHILD, url, MODEL], check=True, timeout=120)
    assert [i for i, _ in store.search(unit(0, 0, 1), 5, MODEL)][0] == "new"
    assert "a" not in {i for i, _ in store.search(unit(1, 0, 0), 5, MODEL)}
    assert store.counts() == {MODEL: 2}


CLEARING_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from podium.memory import open_vectors
    s = open_vectors(sys.argv[1], None)
    assert s.clear() == 2
    s.add(["z"], np.array([[0, 1, 0]], dtype=np.float32), sys.argv[2])
    s.close()
""")


def test_another_process_clear_is_seen(store: VectorStore, url):
    store.add(["a", "b"], rows((1, 0, 0), (0, 1, 0)), MODEL)
    assert len(store.search(unit(0, 1, 0), 5, MODEL)) == 2
    subprocess.run([sys.executable, "-c", CLEARING_CHILD, url, MODEL], check=True, timeout=120)
    assert [i for i, _ in store.search(unit(0, 1, 0), 5, MODEL)] == ["z"]
    assert store.counts() == {MODEL: 1}


def test_sqlite_vectors_live_in_the_task_store_file(tmp_path):
    from podium.store import open_store

    store_url = f"sqlite://{tmp_path / 'podium.db'}"
    tasks = open_store(store_url)
    vectors = open_vectors(None, store_url)
    try:
        vectors.add(["m-1"], rows((1, 0)), MODEL)
        assert "memory_vectors" in vectors.describe()
        assert str(tmp_path / "podium.db") in vectors.describe()
        tasks.add_event("after.vectors")  # the task store still writes to its file
    finally:
        vectors.close()
        tasks.close()
    assert os.stat(tmp_path / "podium.db").st_mode & 0o077 == 0


def test_following_a_sqlite_store_that_does_not_exist_makes_no_file(tmp_path):
    from podium.errors import StoreNotFound

    with pytest.raises(StoreNotFound):
        open_vectors(None, f"sqlite://{tmp_path / 'podium.db'}")
    assert not (tmp_path / "podium.db").exists()


def test_postgres_follows_the_task_store_and_hides_its_password(pg_url):
    with_password = pg_url.replace("postgresql://", "postgresql://postgres:s3cret@", 1)
    store = open_vectors(None, with_password)
    try:
        assert isinstance(store, PostgresVectors)
        assert "s3cret" not in store.describe() and "PostgreSQL" in store.describe()
    finally:
        store.close()


@pytest.mark.parametrize("bad", [
    "", "   ", "mysql://host/db", "chroma:relative/dir", "chroma://", "chroma+ftp://host:1",
    "chroma://127.0.0.1:99999", "chroma://host:8000/some/path", "postgresql://host:0/db",
    "sqlite://host/file.db", "postgresql://u:hunter2@host",
])
def test_bad_memory_urls_are_one_clear_line(bad):
    with pytest.raises(InvalidInput) as e:
        open_vectors(bad, None)
    assert "\n" not in str(e.value) and "hunter2" not in str(e.value)


def test_memory_url_from_the_environment_and_an_unreachable_chroma_server(
        monkeypatch, tmp_path):
    pytest.importorskip("chromadb")
    monkeypatch.setenv("PODIUM_MEMORY", f"sqlite://{tmp_path / 'vectors.db'}")
    store = open_vectors(None, "postgresql://nowhere.invalid/none")  # (the store not used)
    assert str(tmp_path / "vectors.db") in store.describe()
    store.close()
    with pytest.raises(MemoryUnavailable) as e:
        open_vectors(f"chroma://127.0.0.1:{_free_port()}", None)
    assert "chroma run" in str(e.value) and "\n" not in str(e.value)


def test_embedded_chroma_is_private_and_downloads_nothing(tmp_path, monkeypatch):
    pytest.importorskip("chromadb")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    store = open_vectors(f"chroma://{tmp_path / 'chroma'}", None)
    try:
        store.add(["a"], rows((1, 0, 0)), MODEL)
        assert store.search(unit(1, 0, 0), 1, MODEL)[0][0] == "a"
    finally:
        store.close()
    assert os.stat(tmp_path / "chroma").st_mode & 0o077 == 0
    assert not (tmp_path / "home" / ".cache" / "chroma").exists()


IDLE_AFTER_SEARCHES = textwrap.dedent("""
    import resource, sys, time, numpy as np
    from podium.memory import open_vectors
    store = open_vectors(sys.argv[1], None)
    rng = np.random.default_rng(3)
    store.add([f"m-{i}" for i in range(10_000)],
              rng.standard_normal((10_000, 384)).astype(np.float32), "m")
    query = rng.standard_normal(384).astype(np.float32)
    for _ in range(20):
        assert len(store.search(query, 5, "m")) == 5
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before = usage.ru_utime + usage.ru_stime
    time.sleep(0.5)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(usage.ru_utime + usage.ru_stime - before)
""")


def test_in_process_search_leaves_no_thread_spinning(tmp_path):
    """numpy's BLAS threads spin for a while after each product: the search must not use it.
    (In a process of its own: only its threads count.)"""
    out = subprocess.run([sys.executable, "-c", IDLE_AFTER_SEARCHES,
                          f"sqlite://{tmp_path / 'podium.db'}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    busy = float(out.stdout)
    assert busy < 0.02, f"{busy:.3f} s of CPU in 0.5 s after searching: a thread spins"
