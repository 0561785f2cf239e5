"""``podium pg-host``: this host's daemon for a PostgreSQL store (hidden: ``podium up`` starts
it; see ``podium.store.pghost``)."""

from __future__ import annotations

import sys

from podium.cli.base import Ctx, cli, pass_ctx
from podium.service.hosting import run_host_daemon


@cli.command("pg-host", hidden=True)
@pass_ctx
def pg_host(c: Ctx) -> None:
    """Relay this host's wake-ups and run its PgBouncer until no local process uses them."""
    sys.exit(run_host_daemon(c.store_url))
