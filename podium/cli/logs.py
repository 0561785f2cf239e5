"""``podium logs AGENT|TASK``: an agent's log file, or a task's output, read or followed."""

from __future__ import annotations

import sys

import click

from podium.cli.base import Ctx, cli, pass_ctx


def _out(data: bytes, err: bool = False) -> None:
    stream = sys.stderr.buffer if err else sys.stdout.buffer
    stream.write(data)
    stream.flush()


@cli.command()
@click.argument("name", metavar="AGENT|TASK")
@click.option("--follow", "-f", is_flag=True,
              help="Follow: an agent's log until Ctrl-C (or the agent has stopped); a task's "
                   "output until the task ends.")
@click.option("--lines", "-n", type=int, metavar="N",
              help="Only the last N lines (default: 50 of an agent's log, all of a task's "
                   "output).")
@pass_ctx
def logs(c: Ctx, name: str, follow: bool, lines: int | None) -> None:
    """An agent's log (the background worker's, as 'podium up' writes it), or a task's output
    (stored once finished; live while it runs). NAME is an agent's exact name, else a task id
    or a unique prefix of one."""
    kind, ident = c.podium.log_target(name)
    if kind == "agent":
        for chunk in c.podium.agent_log_text(ident, 50 if lines is None else lines, follow):
            _out(chunk)
        return
    for piece in c.podium.task_log(ident, lines, follow):
        if piece.stream == "note":
            _out(b"podium: " + piece.data + b"\n", err=True)
        else:
            _out(piece.data, err=piece.stream == "err")
