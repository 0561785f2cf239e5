"""The ``podium`` command group and what every command shares: the service opened on first use
and output written as UTF-8."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from podium import __version__, render
from podium.errors import InvalidInput
from podium.service import WRITER_LOCK_TIMEOUT_S, Podium
from podium.tmux import TmuxPanes

# Exit codes of ``podium task wait`` (see README).
EXIT_ERROR, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 1, 3, 4, 5


def write(text: str) -> None:
    """Print UTF-8 whatever the locale says (prompts and outputs are any Unicode)."""
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def colour() -> bool:
    """Whether output may be coloured: a terminal, and no ``NO_COLOR`` (no-color.org)."""
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and \
        os.environ.get("TERM") != "dumb"


def write_table(rows: list[list[str]], headers: list[str]) -> None:
    """A table for people: aligned, its states coloured on a terminal (``colour``)."""
    write(render.table(rows, headers, colour=colour()))


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


#: The commands that may create the store when there is none: ``init``, and those that start
#: agents or add work (tasks, shared context for them). Any other finds no store and says so
#: (a mistyped path, or a command run outside the project, must not silently start an empty
#: store).
CREATES_STORE = frozenset({"init", "up", "agent run", "agent interactive", "task add",
                           "broadcast", "context set", "mcp serve", "web"})
#: How long a command waits for another process's hold on a SQLite store's writer lock, where
#: not the service's default: a worker for as long as it takes (its stop watchdog bounds a stop),
#: ``down`` briefly (it stops this host's agents without the store when it cannot have it).
LOCK_TIMEOUTS_S: dict[str, float | None] = {"agent run": None, "down": 3.0}


def _command(ctx: click.Context) -> str:
    """The command being run, as typed after ``podium``: ``task add``."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


class Ctx:
    """What every command shares: the store URL given, and the service over it (opened on first
    use, typing messages into tmux panes)."""

    def __init__(self, store: str | None):
        self.store_url = store
        self._podium: Podium | None = None

    def open(self, init: bool = False) -> Podium:
        command = _command(click.get_current_context())
        timeout = LOCK_TIMEOUTS_S.get(command, WRITER_LOCK_TIMEOUT_S)
        self._podium = Podium.open(self.store_url, init=init, panes=TmuxPanes(),
                                   create=command in CREATES_STORE, lock_timeout_s=timeout)
        return self._podium

    @property
    def podium(self) -> Podium:
        return self._podium or self.open()


pass_ctx = click.make_pass_decorator(Ctx)


STORE_HELP = ("Store: a path, sqlite:///path or postgresql://host/dbname (default "
              "./.podium/podium.db; env PODIUM_STORE).")


def _store_given(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Ctx).store_url = value


class PodiumGroup(click.Group):
    """A group whose every command (and subgroup) also takes ``--store`` after its name, as
    ``podium status --store X``: the same option as ``podium --store X status``."""

    group_class = type  # (its subgroups are PodiumGroups too)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "store_after" for p in cmd.params):
            cmd.params.append(click.Option(["--store", "store_after"], metavar="URL",
                                           expose_value=False, callback=_store_given,
                                           help=STORE_HELP))
        super().add_command(cmd, name)


@click.group(cls=PodiumGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", envvar="PODIUM_STORE", metavar="URL", help=STORE_HELP)
@click.version_option(__version__, prog_name="podium")
@click.pass_context
def cli(ctx: click.Context, store: str | None) -> None:
    """Podium runs a team of AI coding agents in parallel through one durable store."""
    ctx.obj = Ctx(store)
    ctx.call_on_close(lambda: ctx.obj._podium and ctx.obj._podium.close())
