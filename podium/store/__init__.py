"""Opening a store from a URL: a path, ``sqlite:///path`` or ``postgresql://host/dbname``.

A URL that cannot be right is refused here, with one clear message, before anything is
created or connected to: an empty one, a malformed one, a port out of range, a PostgreSQL URL
that names no database (libpq would quietly pick a default one and Podium create its schema
there).

Without a URL (no ``--store``, no ``PODIUM_STORE``), the store is found the way git finds its
repository: ``.podium/podium.db`` in the current directory or the nearest parent that has a
``.podium`` directory, else ``./.podium/podium.db``. A SQLite store is created only when the
caller says so (``create``: ``init`` and the commands that start agents or add work); anything
else finds no store and says so, rather than silently starting an empty one somewhere else.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from podium.errors import InvalidInput, StoreNotFound
from podium.store.base import Finish, HeartbeatReply, Store

HOME_DIR = ".podium"
DEFAULT_PATH = Path(HOME_DIR) / "podium.db"

__all__ = ["Store", "Finish", "HeartbeatReply", "open_store", "resolve_url", "sqlite_path",
           "DEFAULT_PATH"]


def find_default(start: Path | None = None) -> Path:
    """``.podium/podium.db`` of the nearest directory, from ``start`` (default: the current
    one) up to the root, that has a ``.podium`` directory; ``./.podium/podium.db`` if none."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / HOME_DIR).is_dir():
            return d / DEFAULT_PATH
    return here / DEFAULT_PATH


def resolve_url(url: str | None) -> str:
    """The store URL to use: the argument, ``PODIUM_STORE``, or the default (``find_default``).

    An empty argument is refused rather than taken for the default; an empty ``PODIUM_STORE``
    counts as unset, as an empty environment variable usually does.
    """
    if url is None:
        return os.environ.get("PODIUM_STORE") or str(find_default())
    if not isinstance(url, str):
        raise InvalidInput(f"store URL must be text, got {type(url).__name__}")
    if not url.strip():
        raise InvalidInput("store URL is empty: give a path, sqlite:///path or "
                           "postgresql://host/dbname (or leave --store out for the default)")
    if "\0" in url:
        raise InvalidInput("bad store URL: it contains a NUL character")
    try:  # as a file name: bytes from the environment come back as they were given
        os.fsencode(url)
    except UnicodeEncodeError:
        raise InvalidInput("bad store URL: it contains characters that are not valid "
                           "Unicode") from None
    return url


def _shown(url: str) -> str:
    """The URL for a message, its password hidden; works on URLs ``urlsplit`` refuses too."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{hostpart}"
    query_start = rest.find("?")
    if query_start >= 0 and "password=" in rest[query_start:]:
        params = rest[query_start + 1:].split("&")
        rest = rest[:query_start + 1] + "&".join(
            "password=***" if p.startswith("password=") else p for p in params)
    return scheme + sep + rest


def _check_ports(url: str, hosts: str) -> None:
    """Every ``host:port`` of a (possibly multi-host) netloc has a port from 1 to 65535.

    ``SplitResult.port`` cannot be used: it raises on out-of-range ports and does not
    understand libpq's ``host1:port1,host2:port2``.
    """
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        if ":" not in port:
            continue
        port = port.rpartition(":")[2]
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise InvalidInput(f"bad store URL {_shown(url)!r}: port {port!r} must be a number "
                               f"from 1 to 65535")


def _check_postgres(url: str, parts) -> None:
    """Refuse a PostgreSQL URL with a bad port or no database name."""
    _check_ports(url, parts.netloc.rpartition("@")[2])
    query = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in query:
        if key == "port":
            _check_ports(url, ",".join(f":{p}" for p in value.split(",")))
    if not unquote(parts.path.lstrip("/")) and not any(k == "dbname" and v for k, v in query):
        raise InvalidInput(
            f"bad store URL {_shown(url)!r}: name the database, as in "
            f"postgresql://host/dbname (or ?dbname=NAME); without one libpq would use a default "
            f"database")


def sqlite_path(url: str | None) -> tuple[Path, dict[str, str]] | None:
    """The file and options of the SQLite store ``url`` names (see ``resolve_url`` for the
    default), without opening it; None for a PostgreSQL URL (checked, not connected to)."""
    url = resolve_url(url)
    if "://" not in url:
        path, query = url, {}
    else:
        try:
            parts = urlsplit(url)
        except ValueError as e:  # e.g. an unclosed [ of an IPv6 address
            raise InvalidInput(f"bad store URL {_shown(url)!r}: {e}") from None
        if parts.scheme in ("postgres", "postgresql"):
            try:  # libpq takes UTF-8 text, not the file-name bytes a path may be
                url.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(f"bad store URL {_shown(url)!r}: not valid UTF-8") from None
            _check_postgres(url, parts)
            return None
        if parts.scheme != "sqlite":
            raise InvalidInput(
                f"bad store URL {_shown(url)!r}: expected a file path, sqlite:///path or "
                f"postgresql://host/dbname")
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
    if not path:
        raise InvalidInput(f"bad store URL {url!r}: no file path")
    unknown = set(query) - {"synchronous"}
    if unknown:
        raise InvalidInput(f"bad store URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        return Path(path).expanduser(), query
    except RuntimeError:  # ~name of no such user
        raise InvalidInput(f"bad store URL {url!r}: no home directory for "
                           f"{path.split('/', 1)[0]}") from None


def make_home(home: Path) -> None:
    """The default store's directory: private (its files hold prompts), and kept out of git."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:  # (0600 like every file there, whatever the umask)
        fd = os.open(home / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as ignore:
        ignore.write("# Podium's store, logs and tokens: local to this machine.\n*\n")


#: How long a SQLite store opened here waits for its writer lock before saying it is locked
#: (``SQLiteStore``'s ``lock_timeout_s``). SQLite's own busy timeout (60 s) is what it would wait
#: without Podium's lock; with the lock's fairness the worst wait measured is ~0.2 s
#: (bench/fairness.py), so this leaves a wide margin for a legitimate wait.
WRITER_LOCK_TIMEOUT_S = 30.0


def open_store(url: str | None = None, init: bool = False, create: bool = True,
               lock_timeout_s: float | None = WRITER_LOCK_TIMEOUT_S) -> Store:
    """Open (and migrate) the store named by ``url``; see ``resolve_url`` for the default.

    A SQLite store that does not exist yet is made unless ``create`` is false (the CLI's
    read-only commands), and then it is ``StoreNotFound``; the default store's ``.podium``
    directory is made with a ``.gitignore``. ``init`` (``podium init``) may also make a store
    in an existing empty file. A SQLite store's writes wait up to ``lock_timeout_s`` for its
    writer lock (None: for ever).
    """
    explicit = url is not None or bool(os.environ.get("PODIUM_STORE"))
    found = sqlite_path(url)
    if found is None:
        from podium.store.postgres import PostgresStore

        return PostgresStore(resolve_url(url))
    p, query = found
    from podium.store.sqlite import SYNCHRONOUS, SQLiteStore

    synchronous = query.get("synchronous", "NORMAL")
    if synchronous.upper() not in SYNCHRONOUS:
        raise InvalidInput(f"bad synchronous={synchronous!r}: "
                           f"expected one of {', '.join(SYNCHRONOUS)}")
    try:
        exists = p.exists()
    except OSError:  # (permission denied on the way: SQLiteStore says so, in one line)
        exists = True
    if not exists:
        if not (create or init):
            if not explicit:
                where = " (nor in any parent directory)"
            elif not os.path.lexists(p.parent):
                where = f" (directory {p.parent} does not exist)"
            elif not p.parent.is_dir():
                where = f" ({p.parent} is not a directory)"
            else:
                where = ""
            raise StoreNotFound(
                f"no store at {p}{where}: 'podium init' makes one, or give --store URL")
        if not explicit:
            make_home(p.parent)
    return SQLiteStore(p, synchronous=synchronous, create_in_empty_file=init,
                       lock_timeout_s=lock_timeout_s)
