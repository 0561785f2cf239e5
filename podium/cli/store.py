"""The store itself: ``init``, ``store migrate`` and ``store copy``."""

from __future__ import annotations

import click

from podium.cli.base import (
    Ctx,
    cli,
    pass_ctx,
    write,
)
from podium.service import Podium


@cli.command()
@pass_ctx
def init(c: Ctx) -> None:
    """Create (or migrate) the store and print where it is (an empty file becomes a store)."""
    write(c.open(init=True).url + "\n")


@cli.group()
def store() -> None:
    """Manage the store itself."""


@store.command("migrate")
@pass_ctx
def store_migrate(c: Ctx) -> None:
    """Apply pending schema migrations (opening a store does it too) and list them."""
    applied = c.podium.migrate()
    write(("applied: " + ", ".join(applied) if applied else "up to date") + "\n")


@store.command("copy")
@click.argument("source")
@click.argument("destination")
def store_copy(source, destination) -> None:
    """Copy every agent, task, message, event and context entry from SOURCE to an empty
    DESTINATION (paths or URLs; SQLite and PostgreSQL in either direction)."""
    counts = Podium.copy(source, destination)
    write("copied " + ", ".join(f"{n} {t}" for t, n in counts.items()) + "\n")
