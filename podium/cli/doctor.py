"""``podium doctor``: what this machine needs to run the team, checked, with how to fix it."""

from __future__ import annotations

import sys

import click

from podium.cli.base import EXIT_ERROR, Ctx, cli, pass_ctx, write, write_json, write_table
from podium.errors import InvalidInput


@cli.command()
@click.option("--backend", "-b", "backend_names", multiple=True, metavar="NAME",
              help="Check this backend (repeat); default: the backends of this store's agents, "
                   "and shell.")
@click.option("--all", "all_backends", is_flag=True, help="Check every installed backend.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Option of the one --backend checked, as 'up' takes it (repeat).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def doctor(c: Ctx, backend_names, all_backends, options, as_json) -> None:
    """Check the store, tmux and each backend (program, version, login or key, model file);
    exit 1 when something fails (warnings do not)."""
    from podium.agents import backends
    from podium.service.doctor import diagnose, failed

    if all_backends and backend_names:
        raise InvalidInput("give --backend or --all, not both")
    checks = diagnose(c.store_url, list(backend_names) or None, all_backends,
                      backends.parse_options(options))
    if as_json:
        write_json({"ok": not failed(checks), "checks": [ch.to_dict() for ch in checks]})
    else:
        write_table([[ch.name, ch.status, ch.detail, ch.fix or "-"] for ch in checks],
                           ["CHECK", "STATUS", "DETAIL", "FIX"])
        fails = sum(ch.status == "fail" for ch in checks)
        warns = sum(ch.status == "warn" for ch in checks)
        write(f"{fails} failed, {warns} warning(s), {len(checks) - fails - warns} ok\n")
    if failed(checks):
        sys.exit(EXIT_ERROR)
