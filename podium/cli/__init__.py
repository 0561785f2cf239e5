"""The ``podium`` command: argument parsing and rendering over the service API, nothing more.

``base`` holds the command group and what every command shares; each other module holds one
group of commands, registered on import. ``main`` turns every error of bad input, click's usage
errors too, into the one line ``podium: error: ...`` and exit 1.
"""

from __future__ import annotations

import os
import re
import sys

import click

from podium import render
from podium.cli import (  # noqa: F401 - each registers its commands
    doctor,
    host,
    logs,
    mcp,
    memory,
    messages,
    store,
    tasks,
    team,
    watching,
    web,
)
from podium.cli.base import EXIT_ERROR, cli
from podium.errors import InvalidInput, PodiumError

__all__ = ["cli", "main"]


def _utf8_args(argv: list[str]) -> list[str]:
    """Arguments as UTF-8 whatever the locale says, as stdin is read and output written.

    Bytes the locale could not decode arrive as lone surrogates (which no store can take);
    re-read them as UTF-8, and refuse them with a clear error when they are not UTF-8 either.
    """
    args = []
    for a in argv:
        if any("\udc80" <= ch <= "\udcff" for ch in a):
            raw = os.fsencode(a)
            try:
                a = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"argument {raw!r} is not valid UTF-8") from None
        args.append(a)
    return args


def usage_message(e: click.UsageError) -> str:
    """A click usage error on one line: click's message (which option, which choices), the
    variable that can stand for a missing option, and where the command's help is."""
    message = re.sub(r"\s*\n\s*", " ", e.format_message().strip()).rstrip(".")
    param = getattr(e, "param", None)
    if isinstance(e, click.MissingParameter) and isinstance(param, click.Option) \
            and isinstance(param.envvar, str):
        message += f" (or set ${param.envvar})"
    command = e.ctx.command_path if e.ctx is not None else "podium"
    return render.visible(f"{message} (see '{command} --help')")


def main() -> None:
    try:
        cli.main(args=_utf8_args(sys.argv[1:]), prog_name="podium", standalone_mode=False)
    except PodiumError as e:
        click.echo(f"podium: error: {e}", err=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.NoArgsIsHelpError as e:  # a group alone: its help
        e.show()
        sys.exit(e.exit_code)
    except click.UsageError as e:
        click.echo(f"podium: error: {usage_message(e)}", err=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.Abort:
        click.echo("podium: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
