"""The MCP face's commands: ``mcp serve``, ``mcp install`` and ``mcp token``."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from podium import limits
from podium.cli.base import (
    Ctx,
    cli,
    pass_ctx,
    write,
    write_json,
)
from podium.errors import InvalidInput
from podium.service import Podium


@cli.group("mcp")
def mcp_group() -> None:
    """MCP server: let an AI orchestrator (Claude Code, any MCP client) drive the team."""


@mcp_group.command("serve")
@click.option("--http", "use_http", is_flag=True,
              help="Streamable HTTP at http://HOST:PORT/mcp (bearer token) instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="With --http: address to bind (anything but loopback needs --allow-remote).")
@click.option("--port", type=int, default=8765, show_default=True,
              help="With --http: port (0: any free one).")
@click.option("--allow-remote", is_flag=True,
              help="With --http: allow a non-loopback --host: the server is then reachable "
                   "from the network (the token is still needed).")
@pass_ctx
def mcp_serve(c: Ctx, use_http, host, port, allow_remote) -> None:
    """Serve Podium's tools and resources over MCP (stdio by default)."""
    from podium.mcp import serve
    from podium.web.security import check_bind

    # Before the store opens: options stdio would ignore are refused, and an empty host would
    # bind every interface.
    if not use_http:
        ctx = click.get_current_context()
        given = [f"--{name.replace('_', '-')}" for name in ("host", "port", "allow_remote")
                 if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
        if given:
            raise InvalidInput(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} "
                               "--http: stdio, the default, listens on no address")
    host = limits.name(host.strip().strip("[]"), "host")
    port = limits.port(port, any_free=True)
    if use_http:
        check_bind(host, allow_remote, "the MCP server")
    serve(c.podium, http=use_http, host=host, port=port)


@mcp_group.command("install")
@click.option("--scope", type=click.Choice(["project"]), default="project", show_default=True,
              help="project: DIR/.mcp.json, which Claude Code reads in that project.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Project directory.")
@click.option("--name", default="podium", show_default=True, help="Server name in the file.")
@click.option("--with-password", is_flag=True,
              help="Write a PostgreSQL store's password into the file too (by default it is "
                   "left out: .mcp.json is usually committed).")
@pass_ctx
def mcp_install(c: Ctx, scope, directory, name, with_password) -> None:
    """Write or merge .mcp.json so that Claude Code starts 'podium mcp serve' on this store."""
    from podium.mcp import install, server_entry

    directory = limits.given(directory, "--dir")
    project = Path(directory).resolve()
    if not project.is_dir():
        raise InvalidInput(f"{project} is not a directory")
    store, left_out, store_note = Podium.store_for_project(c.store_url, project, with_password)
    entry, notes = server_entry(project, store)
    path = install(entry, project, name, scope)
    for note in [*notes, *([store_note] if store_note else [])]:
        click.echo(f"podium: note: {note}", err=True)
    if left_out:
        click.echo("the store's password was left out of the file (it is usually committed): "
                   "give it to Claude Code's environment as PGPASSWORD, or put it in ~/.pgpass; "
                   "--with-password writes it", err=True)
    write(f"wrote server {name!r} to {path}:\n")
    write_json(entry)


@mcp_group.command("token")
@pass_ctx
def mcp_token(c: Ctx) -> None:
    """Print the bearer token of 'podium mcp serve --http' (created on first use, mode 0600)."""
    from podium.mcp import load_token

    write(load_token(c.podium.home) + "\n")
