"""The store itself: ``init``, ``store migrate``, ``store copy`` and ``store prune``."""

from __future__ import annotations

import click

from podium import limits
from podium.cli.base import (
    Ctx,
    cli,
    pass_ctx,
    write,
    write_json,
)
from podium.clock import iso
from podium.service import Podium


@cli.command()
@pass_ctx
def init(c: Ctx) -> None:
    """Create (or migrate) the store and print where it is (an empty file becomes a store)."""
    write(c.open(init=True).shown_url + "\n")


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


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / (1024 * 1024):.1f} MiB"


@store.command("prune")
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Prune what is older than this: 30d, 12h, 90m, 3600s.")
@click.option("--keep-results", is_flag=True,
              help="Keep finished tasks and their results; clear only output and stderr.")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def store_prune(c: Ctx, older_than, keep_results, dry_run, as_json) -> None:
    """Remove events, and finished tasks (completed, failed, cancelled) with their dependency
    rows and messages, older than DURATION; queued, blocked and running tasks, agents and
    shared context stay. An SQLite store is vacuumed afterwards, so its file shrinks."""
    limits.age(older_than)  # (checked before the store is opened, or made)
    report = c.podium.prune(older_than, keep_results=keep_results, dry_run=dry_run)
    if as_json:
        write_json(report.to_dict())
        return
    r = report.removed
    verb = "would remove" if dry_run else "removed"
    what = (f"{r.events} events, output of {r.outputs} finished tasks" if keep_results else
            f"{r.events} events, {r.tasks} finished tasks ({r.task_deps} dependency rows, "
            f"{r.messages} messages)")
    line = f"{verb} {what} from before {iso(report.cutoff)}"
    if report.size_before is not None:
        line += f"; store {_size(report.size_before)} -> {_size(report.size_after)}"
    write(line + "\n")
