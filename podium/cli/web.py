"""`podium web`: the web dashboard server (podium.web)."""

from __future__ import annotations

import click

from podium import limits
from podium.cli.base import Ctx, cli, pass_ctx


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (anything but loopback needs --allow-remote).")
@click.option("--port", type=int, default=8766, show_default=True,
              help="Port (0: any free one; the printed link has it).")
@click.option("--open", "open_browser", is_flag=True, help="Open the link in a browser.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host: the dashboard is then reachable from the "
                   "network (the token is still needed).")
@pass_ctx
def web(c: Ctx, host, port, open_browser, allow_remote) -> None:
    """Serve the web dashboard; prints the link that signs a browser in (Ctrl-C stops it)."""
    from podium.web.security import check_bind
    from podium.web.serve import serve

    # Before the store opens: an empty host would bind every interface.
    host = limits.name(host.strip().strip("[]"), "host")
    port = limits.port(port, any_free=True)
    check_bind(host, allow_remote)
    serve(c.podium, host, port, open_browser, allow_remote, say=click.echo)
