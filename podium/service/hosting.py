"""This host's helpers of a store: the host daemon of a PostgreSQL store (``podium.store.pghost``),
started for ``podium up`` and run by the hidden ``podium pg-host``, and what ``podium down`` tells
the helpers (that daemon, the memory indexer) once the host's team is stopped."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from podium.errors import InvalidInput, PodiumError
from podium.store import pghost, resolve_url
from podium.store.postgres import PostgresStore

if TYPE_CHECKING:
    from podium.service import Podium

#: The daemon's routes this process holds (until it exits): the daemon does not go idle while
#: the workers it was started for are still starting.
_held: list[pghost.Route] = []


def ensure_host_daemon(podium: Podium) -> None:
    """On a PostgreSQL store (and unless ``PODIUM_PG_HOST=off``): make sure this host's daemon
    runs, so that the workers about to start share its connections; warn on stderr, with how
    many agents fit, when the host has no PgBouncer."""
    store = podium.store
    if not isinstance(store, PostgresStore) or pghost.mode() == "off":
        return
    route = pghost.ensure(store.url, store.store_secret())
    _held.append(route)
    if route.bouncer is None:
        room, used = store.server_connections()
        print(f"podium: warning: pgbouncer is not installed, so each agent holds a PostgreSQL "
              f"connection of its own: this server has room for about {max(0, room - used)} "
              f"more agents; install it (apt-get install pgbouncer) and a host needs "
              f"{pghost.pool_size() + 1} however many agents it runs", file=sys.stderr)


def run_host_daemon(url: str | None) -> int:
    """Run this host's daemon for the PostgreSQL store at ``url`` until it goes idle."""
    url = resolve_url(url)
    if urlsplit(url).scheme not in ("postgres", "postgresql"):
        raise InvalidInput("podium pg-host serves PostgreSQL stores only "
                           "(--store postgresql://host/dbname)")
    from podium.store.pghost.daemon import HostDaemon

    return HostDaemon(url).run()


def release_host_helpers(store_url: str) -> None:
    """Once no agent of the store at ``store_url`` runs on this host (``podium down`` stopped
    the last), its helpers go now instead of lingering for their idle times: the memory indexer
    a worker started, and the host daemon with its PgBouncer as soon as no other process (a
    ``podium web``, say) uses it. Needs no store: signals, to the pids their locks name."""
    from podium.agents import local
    from podium.service import indexer

    with contextlib.suppress(OSError, PodiumError):
        if local.any_live(store_url):
            return
        indexer.release(store_url)
        if urlsplit(store_url).scheme in ("postgres", "postgresql"):
            pghost.release(store_url)
