"""This host's agents as it records them itself (``podium.agents.local``), for faces that must
act without the store: ``podium down`` when the store cannot be reached.

Nothing here connects to the store. A store URL as a user gives it (a path, ``sqlite:///...``,
``postgresql://...``, or none for the default) is turned into the URL the store itself reports
(``Store.url``), which is what the workers keyed their records by.
"""

from __future__ import annotations

from podium.agents import local
from podium.agents.local import LocalAgent, running_here
from podium.models import name_key
from podium.store import resolve_url, sqlite_path

__all__ = ["LocalAgent", "local_agents", "running_here", "store_url_of"]


def store_url_of(url: str | None) -> str:
    """The URL the store at ``url`` would report once opened, worked out without opening it:
    ``sqlite://`` and the file's resolved path for SQLite, the URL itself for PostgreSQL."""
    found = sqlite_path(url)
    return resolve_url(url) if found is None else f"sqlite://{found[0].resolve()}"


def local_agents(url: str | None) -> list[LocalAgent]:
    """The agents of the store at ``url`` that run on this host, by their own records (those
    whose process is gone are dropped), by name as every listing gives them."""
    return sorted(local.live(store_url_of(url)), key=lambda a: name_key(a.name))
