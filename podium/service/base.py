"""What every part of the service stands on: the store, the pane delivery, recovery."""

from __future__ import annotations

from pathlib import Path

from podium.agents import registration
from podium.service.delivery import PaneDelivery
from podium.store import Store, make_home
from podium.store.pgconnect import redact

#: How often a waiting call re-checks the store even without a wake-up (a safety net).
SAFETY_POLL_S = 2.0


class ServiceBase:
    """The store a service talks to, and how it reaches panes (None: it cannot)."""

    def __init__(self, store: Store, panes: PaneDelivery | None = None):
        self.store = store
        self.panes = panes

    def _recover(self) -> None:
        """Take tasks back from agents that are gone, and end what they left running here."""
        registration.end_taken(self.store.url, self.store.recover())

    @property
    def url(self) -> str:
        """The store's URL (a PostgreSQL password in it included: see ``shareable_url``)."""
        return self.store.url

    @property
    def shown_url(self) -> str:
        """The store's URL to show (a PostgreSQL password as ``***``)."""
        return redact(self.store.url)

    @property
    def home(self) -> Path:
        """The directory for files that belong with the store (worker logs, the MCP token)."""
        return self.store.home

    def private_home(self) -> Path:
        """``home``, made when missing as the default store's directory is (0700 whatever the
        umask, with a ``.gitignore`` that keeps it out of git); one that exists is left as it is
        (a SQLite store's directory may be a project's)."""
        if not self.home.exists():
            make_home(self.home)
        return self.home
