"""Opening a store from a URL: a path, ``sqlite:///path`` or (later) ``postgresql://...``."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from podium.errors import InvalidInput
from podium.store.base import Finish, HeartbeatReply, Store

DEFAULT_PATH = Path(".podium") / "podium.db"

__all__ = ["Store", "Finish", "HeartbeatReply", "open_store", "resolve_url", "DEFAULT_PATH"]


def resolve_url(url: str | None) -> str:
    """The store URL to use: the argument, ``PODIUM_STORE``, or ``./.podium/podium.db``."""
    return url or os.environ.get("PODIUM_STORE") or str(DEFAULT_PATH)


def open_store(url: str | None = None) -> Store:
    """Open (and migrate) the store named by ``url``; see ``resolve_url`` for the default."""
    explicit = bool(url or os.environ.get("PODIUM_STORE"))
    url = resolve_url(url)
    if "://" not in url:
        path, query = url, {}
    else:
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            # As in file URLs: sqlite:///tmp/x.db is /tmp/x.db (sqlite:////tmp/x.db too);
            # sqlite:///./x.db is x.db in the current directory.
            path = url.split("://", 1)[1].split("?", 1)[0]
            if parts.netloc:
                raise InvalidInput(f"bad store URL {url!r}: use sqlite:///path/to/file.db")
            if path.startswith("/./") or path.startswith("/../"):
                path = path[1:]
            elif path.startswith("//"):
                path = "/" + path.lstrip("/")
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        elif parts.scheme in ("postgres", "postgresql"):
            from podium.store.postgres import PostgresStore

            return PostgresStore(url)
        else:
            raise InvalidInput(
                f"bad store URL {url!r}: expected a file path, sqlite:///path or postgresql://...")
    if not path:
        raise InvalidInput(f"bad store URL {url!r}: no file path")
    p = Path(path).expanduser()
    if not explicit:
        p.parent.mkdir(parents=True, exist_ok=True)
    unknown = set(query) - {"synchronous"}
    if unknown:
        raise InvalidInput(f"bad store URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    from podium.store.sqlite import SQLiteStore

    return SQLiteStore(p, synchronous=query.get("synchronous", "NORMAL"))
