"""``podium doctor``: whether this machine can run the team, each check with how to fix it.

``diagnose`` checks the store (reachable, migrated, writable, disk space where it lives, its
files private), tmux, and each backend asked for (by default the backends of the store's
registered agents, and ``shell``): what each backend needs is its own knowledge, given by its
``doctor`` method (``podium.agents.backends.Backend.doctor``, which third-party backends
override too). Every check is cheap and offline: a file looked at, a program's ``--version``
or login status, one write transaction that changes nothing. A check that cannot run is a
``fail`` row, never an exception: the report is what the user needs when things are broken.

``preflight`` is the backend check ``podium up`` runs before it starts any worker: the same
words as the ``fail`` row of ``doctor``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium import __version__
from podium.agents import backends
from podium.errors import InvalidInput, PodiumError, StoreNotFound
from podium.store import Store, open_store
from podium.store.migrations import MIGRATIONS
from podium.store.pgconnect import without_password

__all__ = ["Check", "diagnose", "failed", "preflight", "backend_checks", "store_checks",
           "tmux_checks"]

#: Free space under which the store's disk fails the check (a write may not fit), and warns.
DISK_FAIL_BYTES = 64 * 2**20
DISK_WARN_BYTES = 1 * 2**30
#: Seconds ``tmux -V`` may take.
TMUX_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    """One row of ``podium doctor``: ``subject`` is what was checked (``store``, ``tmux``,
    ``backend claude``), ``check`` which part of it (``login``); ``status`` ``ok``, ``warn``
    (it may still work) or ``fail`` (it cannot: the exit code says so); ``fix`` how to put it
    right."""

    subject: str
    check: str
    status: str
    detail: str
    fix: str = ""

    @property
    def name(self) -> str:
        """The row's name in the table: ``claude login``, ``store writable``."""
        subject = self.subject.removeprefix("backend ")
        return f"{subject} {self.check}" if self.check else subject

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subject": self.subject, "check": self.check,
                "status": self.status, "detail": self.detail, "fix": self.fix}


def failed(checks: list[Check]) -> bool:
    """Whether any check failed (warnings do not fail)."""
    return any(c.failed for c in checks)


def _line(e: BaseException) -> str:
    """An error as one line (PostgreSQL's messages run over several)."""
    return " ".join(str(e).split()) or type(e).__name__


# -- backends ------------------------------------------------------------------------------
def _backend(name: str, options: Mapping[str, str] | None,
             workdir: Path | None) -> backends.Backend:
    """The backend ``name`` made with ``options`` (InvalidInput for an unknown one or a bad
    option)."""
    return backends.load(name)(dict(options or {}), workdir or Path.cwd())


def backend_checks(name: str, options: Mapping[str, str] | None = None,
                   workdir: Path | None = None) -> list[Check]:
    """The backend's own checks (its ``doctor``), as rows; one that cannot be loaded, made
    with these options or checked is a ``fail`` row saying why."""
    subject = f"backend {name}"
    if name not in backends.available():
        return [Check(subject, "", "fail", f"backend {name!r} is not installed (an agent of "
                      "this store used it)", "install the package that provides it")]
    try:
        backend = _backend(name, options, workdir)
    except InvalidInput as e:
        return [Check(subject, "options", "fail", str(e), "fix the --option given")]
    except Exception as e:  # a plugin that cannot even be imported is what doctor must show
        return [Check(subject, "", "fail", f"cannot be loaded: {_line(e)}",
                      "reinstall the package that provides it")]
    try:
        findings = backend.doctor()
    except Exception as e:  # (a third-party doctor with a bug: the report goes on)
        return [Check(subject, "doctor", "fail", f"its doctor check raised {_line(e)}")]
    if not findings:
        return [Check(subject, "", "ok", "nothing to check")]
    return [Check(subject, f.check, f.status, f.detail, f.fix) for f in findings]


def preflight(name: str, options: Mapping[str, str] | None = None,
              workdir: Path | None = None) -> None:
    """Raise ``BackendUnavailable`` if backend ``name`` cannot run here, in the words of its
    ``doctor`` (InvalidInput for an unknown backend or a bad option): what ``podium up``
    checks before it starts any worker. Cheap: no worker, no model loaded, no network."""
    _backend(name, options, workdir).preflight()


# -- tmux ----------------------------------------------------------------------------------
def tmux_checks() -> list[Check]:
    """tmux found and its version (needed for ``up --tmux`` and interactive agents only: a
    missing tmux is a warning)."""
    path = shutil.which("tmux")
    if path is None:
        return [Check("tmux", "", "warn", "tmux is not installed (needed only for "
                      "`podium up --tmux` and interactive agents)",
                      "install tmux (apt install tmux, brew install tmux)")]
    try:
        res = subprocess.run([path, "-V"], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=TMUX_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [Check("tmux", "", "warn", f"{path} -V failed: {_line(e)}", "reinstall tmux")]
    said = res.stdout.decode("utf-8", "replace").strip()
    if res.returncode != 0 or not said:
        return [Check("tmux", "", "warn", f"{path} -V exited with code {res.returncode}",
                      "reinstall tmux")]
    return [Check("tmux", "", "ok", f"{said} ({path})")]


# -- the store -----------------------------------------------------------------------------
def _shown(url: str) -> str:
    """The store URL without a PostgreSQL password."""
    return without_password(url)[0] if url.startswith(("postgres://", "postgresql://")) else url


def store_checks(url: str | None) -> tuple[list[Check], list[str]]:
    """The store's rows, and the backends of its registered agents (empty when it cannot be
    opened). Opening it is what any command does (a store made by an older Podium is migrated
    then); a store that does not exist yet is not made."""
    try:
        store = open_store(url, create=False)  # (doctor makes no store)
    except StoreNotFound as e:
        said = _line(e).split(": 'podium init'")[0]  # (the fix is the FIX column's)
        return [Check("store", "", "warn", said, "`podium init` makes one (`podium up` and "
                      "`podium task add` too), or give --store URL")], []
    except InvalidInput as e:
        return [Check("store", "", "fail", _line(e), "fix --store or PODIUM_STORE")], []
    except PodiumError as e:
        given = url or os.environ.get("PODIUM_STORE") or ""
        fix = ("check that the PostgreSQL server is running and that the URL, user and "
               "database are right" if given.startswith(("postgres://", "postgresql://"))
               else "fix the store's file or directory, or give another --store")
        return [Check("store", "", "fail", _line(e), fix)], []
    except Exception as e:  # (a driver missing, say: still one row)
        return [Check("store", "", "fail", f"cannot open the store: {_line(e)}")], []
    try:
        checks = [Check("store", "", "ok", f"reachable: {_shown(store.url)}"),
                  _schema(store), _writable(store), _disk(store), *_modes(store)]
        try:
            names = sorted({a.backend for a in store.list_agents()})
        except PodiumError:
            names = []
        return checks, names
    finally:
        try:
            store.close()
        except Exception:  # (closing a broken connection: nothing left to report)
            pass


def _schema(store: Store) -> Check:
    """Every migration this Podium knows is applied (opening applies what is pending), and
    none it does not know (a store of a newer Podium)."""
    reader = getattr(store, "_reader", None)
    if reader is None:
        return Check("store", "schema", "warn", "not checked (not an SQL store)")
    try:
        with reader() as tx:
            applied = {r["name"] for r in tx.all("SELECT name FROM schema_migrations")}
    except PodiumError as e:
        return Check("store", "schema", "fail", f"cannot read its migrations: {_line(e)}",
                     "podium store migrate")
    known = [name for name, _ in MIGRATIONS]
    pending = [name for name in known if name not in applied]
    if pending:
        return Check("store", "schema", "fail", f"{len(pending)} migration(s) pending: "
                     f"{', '.join(pending)}", "podium store migrate")
    newer = sorted(applied - set(known))
    if newer:
        return Check("store", "schema", "warn",
                     f"migrated by a newer Podium ({', '.join(newer)} unknown to {__version__})",
                     "upgrade Podium on this machine")
    return Check("store", "schema", "ok", f"migrated ({len(known)} migrations, none pending)")


def _writable(store: Store) -> Check:
    """One write transaction that changes nothing (a row set to its own value), committed."""
    transaction = getattr(store, "_transaction", None)
    if transaction is None:
        return Check("store", "writable", "warn", "not checked (not an SQL store)")
    try:
        with transaction() as tx:
            tx.execute("UPDATE store_key SET secret = secret WHERE id = 1")
    except PodiumError as e:
        return Check("store", "writable", "fail", _line(e),
                     "make the store's files writable by this user, or free disk space")
    return Check("store", "writable", "ok", "a write transaction committed")


def _where(store: Store) -> Path:
    """The directory whose disk the store writes to here: the SQLite file's, else the one
    for the store's files on this host (worker logs), or its nearest existing parent."""
    path = getattr(store, "path", None)
    d = Path(path).parent if path is not None else Path(store.home)
    while not d.exists() and d != d.parent:
        d = d.parent
    return d


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _disk(store: Store) -> Check:
    d = _where(store)
    what = "its files" if getattr(store, "path", None) is not None else "worker logs"
    try:
        free = shutil.disk_usage(d).free
    except OSError as e:
        return Check("store", "disk space", "warn", f"cannot tell for {d}: {e.strerror or e}")
    detail = f"{_size(free)} free in {d} ({what})"
    if free < DISK_FAIL_BYTES:
        return Check("store", "disk space", "fail", detail, f"free some space on the disk of {d}")
    if free < DISK_WARN_BYTES:
        return Check("store", "disk space", "warn", detail, f"free some space on the disk of {d}")
    return Check("store", "disk space", "ok", detail)


def _modes(store: Store) -> list[Check]:
    exposed = store.exposure()
    if not exposed:
        return [Check("store", "file modes", "ok", "private: nothing open to other users")]
    rows = []
    for warning in exposed:
        what, _, fix = warning.partition(": ")
        rows.append(Check("store", "file modes", "warn", what, fix))
    return rows


# -- all of it -----------------------------------------------------------------------------
def diagnose(store_url: str | None = None, backend_names: list[str] | None = None,
             all_backends: bool = False, options: Mapping[str, str] | None = None,
             workdir: Path | None = None) -> list[Check]:
    """Every check: Podium itself, the store, tmux, then the backends — those named, or every
    registered one (``all_backends``), or by default those of the store's registered agents
    and ``shell``. ``options`` go to the backend named (only one may be, then). An unknown
    backend name is InvalidInput, before anything is checked."""
    available = backends.available()
    for name in backend_names or ():
        if name not in available:
            raise InvalidInput(f"unknown backend {name!r}: available backends are "
                               f"{', '.join(available)}")
    if options and len(backend_names or ()) != 1:
        raise InvalidInput("--option needs exactly one --backend (the options are that "
                           "backend's)")
    checks = [Check("podium", "", "ok", f"podium {__version__}, Python "
                    f"{'.'.join(map(str, sys.version_info[:3]))} ({sys.executable})")]
    store_rows, agent_backends = store_checks(store_url)
    checks += store_rows
    checks += tmux_checks()
    if all_backends:
        names = available
    elif backend_names:
        names = list(dict.fromkeys(backend_names))
    else:
        names = ["shell", *(n for n in agent_backends if n != "shell")]
    for name in names:
        checks += backend_checks(name, options, workdir)
    return checks
