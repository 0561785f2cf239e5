"""The README's command reference names every option each command takes.

Every visible command of ``podium`` (walked from the click tree, as ``--help`` shows them) has
a row in the README's reference tables, and every visible option of it appears in its row, by
its long or its short name. Two options are documented once for all commands instead: ``--json``
("Every listing takes ``--json``") and ``--memory`` (the vector store, in Memory); ``--store``
and ``--help`` are everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from podium.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED_ONCE = {"--json", "--memory", "--store", "--help"}


def _commands(cmd: click.Command, path: list[str]):
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                yield from _commands(sub, [*path, name])
    else:
        yield " ".join(path), cmd


def _rows() -> list[str]:
    return [line for line in README.read_text().splitlines() if line.startswith("| `")]


def test_every_command_and_option_is_in_the_readme_reference():
    rows = _rows()
    missing = []
    for name, cmd in _commands(cli, []):
        mine = [r for r in rows
                if re.search(r"(podium |`)" + re.escape(name) + r"\b", r.split(" | ")[0])]
        if not mine:
            missing.append(f"podium {name}: no row")
            continue
        text = " ".join(mine)
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            names = param.opts + param.secondary_opts
            if DOCUMENTED_ONCE & set(names):
                continue
            if not any(re.search(re.escape(n) + r"(?![\w-])", text) for n in names):
                missing.append(f"podium {name} {'/'.join(names)}")
    assert not missing, "not in the README's reference:\n" + "\n".join(missing)
