"""Choosing the vector store: ``open_vectors`` reads ``--memory URL`` / ``PODIUM_MEMORY``.

Without a URL the vectors follow the task store: a SQLite store keeps them in its own file
(``SQLiteVectors``), a PostgreSQL store in its own database (``PostgresVectors``). Explicitly:

``sqlite:///path/file.db`` (or a plain path)   the embedded store in that SQLite file
``postgresql://host/dbname``                    PostgreSQL: pgvector when the server has it
``chroma:///abs/dir``                           ChromaDB embedded, its files in that directory
``chroma://host:port``, ``chroma+http://...``   a ChromaDB server (``chroma run``); port 8000
``chroma+https://host:port``                    by default; ``chroma+https`` over TLS

Any other scheme names a vector store plugin (entry point group ``podium.vector_stores``;
``NAME://...`` or ``NAME+...://...``), whose class is called with the whole URL. A URL that
cannot be right is one ``InvalidInput`` line, before anything is opened or created.

A read (``create=False``: a search, a count) of an embedded store that does not exist (a
SQLite file, a ChromaDB directory holding no ChromaDB) is ``StoreNotFound``, and creates
nothing (``ChromaVectors`` keeps what it makes private).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from podium import plugins
from podium.errors import InvalidInput, StoreNotFound
from podium.memory.base import VectorStore
from podium.store import resolve_url, sqlite_path
from podium.store.pgconnect import redact

GROUP = "podium.vector_stores"
#: Podium's own stores (found without their entry points, which name the same classes).
BUILTIN_SCHEMES = ("sqlite", "postgres", "postgresql", "chroma", "chroma+http", "chroma+https")
CHROMA_PORT = 8000
EXPECTED = ("expected sqlite:///path, postgresql://host/dbname, chroma:///absolute/dir or "
            "chroma://host:port (or leave it out: the vectors follow the task store)")


def _bad(url: str, why: str) -> InvalidInput:
    return InvalidInput(f"bad memory URL {redact(url)!r}: {why}")


#: The file an embedded ChromaDB keeps its tables in: a directory without it holds none.
CHROMA_FILE = "chroma.sqlite3"


def _no_store(url: str, why: str) -> StoreNotFound:
    return StoreNotFound(f"no such memory store: {redact(url)} ({why}; it is made when a memory "
                         "is first stored with this --memory)")


def _chroma(url: str, create: bool = True) -> VectorStore:
    from podium.memory.chroma import ChromaVectors

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _bad(url, f"{e}") from None
    if parts.query or parts.fragment:
        raise _bad(url, "ChromaDB URLs take no options")
    if parts.scheme == "chroma" and not parts.netloc:
        path = unquote(parts.path)
        if not path.startswith("/") or path.strip("/") == "":
            raise _bad(url, "an embedded ChromaDB needs an absolute directory, as in "
                            "chroma:///home/me/team/chroma")
        where = Path(path).expanduser().resolve()
        if not create and not (where / CHROMA_FILE).is_file():
            raise _no_store(url, f"{where} does not exist" if not where.exists()
                            else f"{where} holds no ChromaDB")
        if where.exists() and not where.is_dir():
            raise _bad(url, f"{where} is not a directory")
        return ChromaVectors(path=where)
    if not parts.hostname:
        raise _bad(url, "name the ChromaDB server, as in chroma://127.0.0.1:8000")
    if parts.path.strip("/"):
        raise _bad(url, "a ChromaDB server URL has no path (chroma://host:port); for an "
                        "embedded one write chroma:///absolute/dir")
    return ChromaVectors(host=parts.hostname, port=port or CHROMA_PORT,
                         ssl=parts.scheme == "chroma+https")


def _plugin(url: str, scheme: str) -> VectorStore:
    name = scheme.split("+", 1)[0]
    if name not in plugins.names(GROUP):
        raise _bad(url, EXPECTED)
    cls = plugins.load(GROUP, name, VectorStore, "vector store")
    store: VectorStore = cls(url)  # type: ignore[abstract, call-arg]
    return store


def open_vectors(memory_url: str | None, store_url: str | None,
                 create: bool = True) -> VectorStore:
    """The vector store ``memory_url`` names (default: ``PODIUM_MEMORY``, else the one that
    follows the task store at ``store_url``); see the module's docstring. ``create``: an
    embedded store that does not exist yet is made (else ``StoreNotFound``, nothing made)."""
    if memory_url is None:
        memory_url = os.environ.get("PODIUM_MEMORY") or None
    if memory_url is None:
        found = sqlite_path(store_url)
        if found is None:
            from podium.memory.postgres_vectors import PostgresVectors

            return PostgresVectors(resolve_url(store_url))
        from podium.memory.sqlite_vectors import SQLiteVectors

        return SQLiteVectors(found[0], create=False)
    if not isinstance(memory_url, str) or not memory_url.strip():
        raise InvalidInput(f"memory URL is empty: {EXPECTED}")
    url = memory_url.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme and url.lower().startswith("chroma"):
        if url.split(":", 1)[0].lower() in BUILTIN_SCHEMES:  # chroma:dir, chroma+http:host
            raise _bad(url, EXPECTED)
    if scheme.startswith("chroma"):
        if scheme not in BUILTIN_SCHEMES:
            raise _bad(url, EXPECTED)
        return _chroma(url, create)
    if scheme and scheme not in BUILTIN_SCHEMES:
        return _plugin(url, scheme)
    try:
        found = sqlite_path(url)
    except InvalidInput as e:
        raise InvalidInput(str(e).replace("store URL", "memory URL", 1)) from None
    if found is None:
        from podium.memory.postgres_vectors import PostgresVectors

        return PostgresVectors(url)
    from podium.memory.sqlite_vectors import SQLiteVectors

    if not create and not found[0].exists():
        raise _no_store(url, f"{found[0]} does not exist")
    return SQLiteVectors(found[0])
