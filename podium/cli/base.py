"""The ``podium`` command group and what every command shares: the service opened on first use
and output written as UTF-8."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from podium import __version__
from podium.errors import InvalidInput
from podium.service import Podium
from podium.tmux import TmuxPanes

# Exit codes of ``podium task wait`` (see README).
EXIT_ERROR, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 1, 3, 4, 5


def write(text: str) -> None:
    """Print UTF-8 whatever the locale says (prompts and outputs are any Unicode)."""
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def write_json(obj: Any) -> None:
    write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def read_arg(value: str, what: str) -> str:
    """The argument itself, or stdin read byte-exact when it is ``-``."""
    if value != "-":
        return value
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{what} on stdin is not valid UTF-8 (byte {e.start})") from None


class Ctx:
    """What every command shares: the store URL given, and the service over it (opened on first
    use, typing messages into tmux panes)."""

    def __init__(self, store: str | None):
        self.store_url = store
        self._podium: Podium | None = None

    def open(self, init: bool = False) -> Podium:
        self._podium = Podium.open(self.store_url, init=init, panes=TmuxPanes())
        return self._podium

    @property
    def podium(self) -> Podium:
        return self._podium or self.open()


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", envvar="PODIUM_STORE", metavar="URL",
              help="Store: a path, sqlite:///path or postgresql://host/dbname (default "
                   "./.podium/podium.db; env PODIUM_STORE).")
@click.version_option(__version__, prog_name="podium")
@click.pass_context
def cli(ctx: click.Context, store: str | None) -> None:
    """Podium runs a team of AI coding agents in parallel through one durable store."""
    ctx.obj = Ctx(store)
    ctx.call_on_close(lambda: ctx.obj._podium and ctx.obj._podium.close())
