"""ChromaDB as the vector store (the ``podium[chroma]`` extra): embedded in the process
(``chroma:///abs/dir``, a ``PersistentClient``) or a server (``chroma://host:port``, for
``chroma run --path DIR --host HOST --port PORT``).

Podium passes its own embeddings: every collection is made with ``embedding_function=None``
and cosine space (``metadata={"hnsw:space": "cosine"}``), so nothing ever tries to download
Chroma's default model; telemetry is off. One collection per model id, named
``podium-<model>-<hash>`` (Chroma's names allow few characters) with the model id and the
dimension in its metadata; an id lives in one collection only (re-made by another model, it
leaves the old one). Chroma's index is approximate (HNSW); a search limited to some ids
(``only``) is exact, computed here from their stored embeddings.

Embedded Chroma keeps its index in each process's memory and does not see what another
process writes. Podium's processes (workers indexing, a CLI searching) share the directory
through a generation counter beside Chroma's files (``podium-generation``): each write takes an
``flock`` on it and adds one; a process that finds the number moved reopens its client first
(~40 ms at 10,000 vectors) and so sees the other's writes. (Chroma shares one client among the
instances of a process that open the same directory: open one per directory per process.) A
Chroma server needs none of this.

What an embedded ChromaDB writes is private whatever the umask (Chroma makes its files with the
umask's mode): the directories Podium makes for it (parents too) and the index directories in
it are 0700, its files 0600, set after opening and after each write (``_tighten``; what else
the directory holds is left alone).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import struct
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.errors import InvalidInput, MemoryUnavailable, StoreError
from podium.memory.base import VectorStore
from podium.memory.matrix import as_matrix, as_query, dot_rows, top_k

if TYPE_CHECKING:
    from podium.memory.base import Matrix, Vector

INSTALL = "pip install 'podium[chroma]'"
MODEL_KEY = "podium_model_id"
DIM_KEY = "podium_dim"
GENERATION_FILE = "podium-generation"
#: What of an embedded ChromaDB's directory is Chroma's (or Podium's), to keep private: its
#: database (with SQLite's side files), the generation counter, and the index directories (named
#: by UUIDs).
_CHROMA_OWN = re.compile(r"chroma\.sqlite3(-wal|-shm|-journal)?|podium-generation|"
                         r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _private_dirs(path: Path) -> None:
    """Make ``path`` and its missing parents, each 0700 whatever the umask."""
    missing = [d for d in (path, *path.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)


def _tighten(path: Path) -> None:
    """Chroma's files in the directory ``path`` 0600, its directories 0700."""
    def fix(p: Path, is_dir: bool) -> None:
        try:
            want = 0o700 if is_dir else 0o600
            if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) != want:
                os.chmod(p, want)
        except OSError:
            pass  # (gone meanwhile, or not ours to change: Chroma's own calls say so)

    try:
        entries = [e for e in os.scandir(path) if _CHROMA_OWN.fullmatch(e.name)]
    except OSError:
        return
    for entry in entries:
        is_dir = entry.is_dir(follow_symlinks=False)
        fix(Path(entry.path), is_dir)
        if is_dir:
            for root, dirs, files in os.walk(entry.path):
                for name in dirs:
                    fix(Path(root, name), True)
                for name in files:
                    fix(Path(root, name), False)


def _chromadb() -> Any:
    try:
        import chromadb
    except ImportError:
        raise MemoryUnavailable(f"the ChromaDB vector store needs chromadb: {INSTALL}") from None
    return chromadb


def collection_name(model_id: str) -> str:
    """Chroma's name for a model's collection: 3-63 of [a-zA-Z0-9._-], alphanumeric ends."""
    slug = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", model_id))[:36]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
    return f"podium-{slug.strip('-._')}-{digest}".replace("--", "-")


class ChromaVectors(VectorStore):
    """Vectors in ChromaDB: embedded in ``path``, or on the server at ``host``:``port``."""

    def __init__(self, path: Path | str | None = None, host: str | None = None,
                 port: int = 8000, ssl: bool = False):
        if (path is None) == (host is None):
            raise InvalidInput("a ChromaDB store is either embedded (a path) or a server (host)")
        self._chromadb = _chromadb()
        from chromadb.config import Settings

        self._settings = Settings(anonymized_telemetry=False)
        self.path = Path(path).expanduser().resolve() if path is not None else None
        self.host, self.port, self.ssl = host, port, ssl
        self._collections: dict[str, Any] = {}
        self._mutex = threading.RLock()  # (one client call at a time, and no reopening under one)
        self._generation = -1
        self._genfile = -1
        if self.path is not None:
            try:  # private: what the team remembers is no one else's to read
                _private_dirs(self.path)
                self._genfile = os.open(self.path / GENERATION_FILE, os.O_RDWR | os.O_CREAT,
                                        0o600)
            except OSError as e:
                raise StoreError(f"cannot open the ChromaDB directory {self.path}: "
                                 f"{e.strerror}") from None
            self._generation = self._read_generation()
        self._client = self._connect()
        if self.path is not None:
            _tighten(self.path)

    # -- the client ----------------------------------------------------------------------
    def _where(self) -> str:
        if self.path is not None:
            return f"ChromaDB embedded at {self.path}"
        return f"ChromaDB server at {'https' if self.ssl else 'http'}://{self.host}:{self.port}"

    def _connect(self) -> Any:
        chromadb = self._chromadb
        try:
            if self.path is not None:
                return chromadb.PersistentClient(path=str(self.path), settings=self._settings)
            client = chromadb.HttpClient(host=self.host, port=self.port, ssl=self.ssl,
                                         settings=self._settings)
            client.heartbeat()
            return client
        except Exception as e:  # chromadb raises ValueError, its own errors, httpx's...
            raise self._unavailable(e) from None

    def _unavailable(self, e: Exception) -> MemoryUnavailable:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self.path is None:
            return MemoryUnavailable(
                f"cannot use the {self._where()}: {msg} (start one with: chroma run --path DIR "
                f"--host {self.host} --port {self.port})")
        return MemoryUnavailable(f"cannot use the {self._where()}: {msg}")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Chroma's and its transport's errors as one clear line."""
        try:
            yield
        except (InvalidInput, StoreError, MemoryUnavailable):
            raise
        except Exception as e:
            raise self._unavailable(e) from None

    def _read_generation(self) -> int:
        data = os.pread(self._genfile, 8, 0)
        return struct.unpack("<q", data)[0] if len(data) == 8 else 0

    def _sync(self) -> None:
        """Embedded: reopen the client when another process has written since."""
        if self.path is None:
            return
        generation = self._read_generation()
        if generation != self._generation:
            close = getattr(self._client, "close", None)  # (an older chromadb has none:
            with self._guard():                            # drop its cached systems then)
                (close or self._client.clear_system_cache)()
            self._collections.clear()
            self._client = self._connect()
            self._generation = generation

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        if self.path is None:
            with self._guard():
                yield
            return
        fcntl.flock(self._genfile, fcntl.LOCK_EX)
        try:
            self._sync()
            try:
                with self._guard():
                    yield
            finally:
                self._generation = self._read_generation() + 1
                os.pwrite(self._genfile, struct.pack("<q", self._generation), 0)
                _tighten(self.path)
        finally:
            fcntl.flock(self._genfile, fcntl.LOCK_UN)

    # -- collections ---------------------------------------------------------------------
    @staticmethod
    def _dim(col: Any, default: int) -> int:
        """The dimension recorded in a collection's metadata."""
        value = (col.metadata or {}).get(DIM_KEY)
        return int(value) if isinstance(value, int | float | str) else default

    def _podium_collections(self) -> dict[str, Any]:
        """Every collection Podium made here, by model id."""
        found = {}
        for col in self._client.list_collections():
            meta = col.metadata or {}
            if MODEL_KEY in meta:
                found[str(meta[MODEL_KEY])] = col
        return found

    def _collection(self, model_id: str, dim: int | None = None) -> Any:
        """The model's collection; made (for vectors of ``dim``) when ``dim`` is given; None
        when there is none."""
        col = self._collections.get(model_id)
        if col is None:
            name = collection_name(model_id)
            if dim is not None:
                col = self._client.get_or_create_collection(
                    name, embedding_function=None,
                    metadata={"hnsw:space": "cosine", MODEL_KEY: model_id, DIM_KEY: dim})
            else:
                try:
                    col = self._client.get_collection(name, embedding_function=None)
                except self._chromadb.errors.NotFoundError:
                    return None
            self._collections[model_id] = col
        have = self._dim(col, dim or 0)
        if dim is not None and have != dim:
            raise InvalidInput(f"model {model_id!r} has vectors of {have} dimensions here; "
                               f"these have {dim}")
        return col

    # -- the store -----------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: Matrix, model_id: str) -> None:
        with self._mutex:
            self._add(ids, vectors, model_id)

    def _add(self, ids: Sequence[str], vectors: Matrix, model_id: str) -> None:
        ids = list(ids)
        matrix = as_matrix(ids, vectors, model_id)
        if not ids:
            return
        latest = {memory_id: row for row, memory_id in enumerate(ids)}
        unique = list(latest)
        with self._writing():
            batch = max(1, int(self._client.get_max_batch_size()))
            self._collections.pop(model_id, None)  # (looked up afresh: another client may
            col = self._collection(model_id, int(matrix.shape[1]))  # have deleted it)
            for other, other_col in self._podium_collections().items():
                if other != model_id:
                    self._delete(other_col, unique)
            for start in range(0, len(unique), batch):
                part = unique[start:start + batch]
                col.upsert(ids=part, embeddings=matrix[[latest[i] for i in part]])

    def _delete(self, col: Any, ids: list[str]) -> int:
        """Delete those of ``ids`` that ``col`` holds; how many it held."""
        gone = 0
        for start in range(0, len(ids), 1000):
            held = col.get(ids=ids[start:start + 1000], include=[])["ids"]
            if held:
                col.delete(ids=held)
                gone += len(held)
        return gone

    def remove(self, ids: Collection[str]) -> int:
        with self._mutex:
            return self._remove(ids)

    def _remove(self, ids: Collection[str]) -> int:
        wanted = list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))
        if not wanted:
            return 0
        with self._writing():
            return sum(self._delete(col, wanted) for col in self._podium_collections().values())

    def search(self, vector: Vector, k: int, model_id: str,
               only: Collection[str] | None = None) -> list[tuple[str, float]]:
        with self._mutex:
            return self._search(vector, k, model_id, only)

    def _search(self, vector: Vector, k: int, model_id: str,
                only: Collection[str] | None) -> list[tuple[str, float]]:
        import numpy as np

        query = as_query(vector)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidInput(f"k must be a whole number of results, got {k!r}")
        if k == 0 or (only is not None and not only):
            return []
        self._sync()
        for attempt in (1, 2):
            with self._guard():
                col = self._collection(model_id)
                if col is None:
                    return []
                dim = self._dim(col, query.shape[0])
                if dim != query.shape[0]:
                    raise InvalidInput(f"the query vector has {query.shape[0]} dimensions; "
                                       f"this model's vectors have {dim}")
                try:
                    if only is not None:
                        got = col.get(ids=list(set(only)), include=["embeddings"])
                        if not got["ids"]:
                            return []
                        scores = dot_rows(np.asarray(got["embeddings"], dtype=np.float32),
                                          query)
                        return [(str(got["ids"][i]), float(scores[i]))
                                for i in top_k(scores, k)]
                    found = col.query(query_embeddings=[query], n_results=k,
                                      include=["distances"])
                except self._chromadb.errors.NotFoundError:
                    # Another client deleted the collection (a clear): look it up again.
                    self._collections.pop(model_id, None)
                    if attempt == 2:
                        raise
                    continue
            return [(str(i), 1.0 - float(d))
                    for i, d in zip(found["ids"][0], found["distances"][0])]
        return []

    def counts(self) -> dict[str, int]:
        with self._mutex:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        self._sync()
        with self._guard():
            counts = {model: int(col.count()) for model, col in
                      self._podium_collections().items()}
        return {model: n for model, n in counts.items() if n}

    def clear(self, model_id: str | None = None) -> int:
        with self._mutex:
            return self._clear(model_id)

    def _clear(self, model_id: str | None = None) -> int:
        with self._writing():
            cols = self._podium_collections()
            if model_id is not None:
                cols = {m: c for m, c in cols.items() if m == model_id}
            gone = 0
            for model, col in cols.items():
                gone += int(col.count())
                self._client.delete_collection(col.name)
                self._collections.pop(model, None)
        return gone

    def describe(self) -> str:
        return self._where()

    def close(self) -> None:
        with self._mutex:
            with contextlib.suppress(Exception):
                self._client.close()
            self._collections.clear()
            if self._genfile >= 0:
                os.close(self._genfile)
                self._genfile = -1
