"""Messages, reports and shared context."""

from __future__ import annotations

import os

import click

from podium import render
from podium.cli.base import (
    Ctx,
    cli,
    pass_ctx,
    read_arg,
    write,
    write_json,
    write_table,
)
from podium.clock import iso
from podium.errors import InvalidInput


@cli.command()
@click.argument("agent_id")
@click.argument("message")
@click.option("--from", "sender", default="orchestrator", show_default=True)
@pass_ctx
def send(c: Ctx, agent_id, message, sender) -> None:
    """Put a message in an agent's inbox; MESSAGE '-' reads stdin."""
    m = c.podium.send(agent_id, read_arg(message, "message"), sender)
    write(f"message {m.id} -> {m.agent_id}\n")


@cli.command()
@click.argument("agent_id")
@click.option("--unread", is_flag=True, help="Only messages not yet read.")
@click.option("--ack", is_flag=True, help="Mark the listed messages read.")
@click.option("--outbox", is_flag=True, help="Messages from the agent (reports) instead.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def inbox(c: Ctx, agent_id, unread, ack, outbox, as_json) -> None:
    """Messages to an agent (or, with --outbox, from it)."""
    msgs = c.podium.outbox(agent_id) if outbox else c.podium.inbox(agent_id, unread, ack)
    if as_json:
        write_json([m.to_dict() for m in msgs])
        return
    for m in msgs:
        mark = " " if m.read_at else "*"
        write(f"{mark} #{m.id} {iso(m.created_at)} {m.sender or '-'} [{m.kind}]\n{m.body}\n")


@cli.command()
@click.option("--status", "-s", required=True, help="idle, busy, waiting_input, or any word.")
@click.option("--note", "-m", help="Free text; '-' reads stdin.")
@click.option("--agent", envvar="PODIUM_AGENT_ID",
              help="The reporting agent (default $PODIUM_AGENT_ID, set for tasks).")
@click.option("--task", "task_id", envvar="PODIUM_TASK_ID", metavar="ID",
              help="The task the report is about (default $PODIUM_TASK_ID, set for tasks).")
@pass_ctx
def report(c: Ctx, status, note, agent, task_id) -> None:
    """An agent reports its own status to the orchestrator."""
    if agent is None:
        raise InvalidInput("report: which agent? give --agent NAME (inside a task "
                           "$PODIUM_AGENT_ID says it)")
    m = c.podium.report(agent, status, read_arg(note, "note") if note else None, task_id)
    write(f"report {m.id} from {agent}\n")


@cli.group()
def context() -> None:
    """Shared context, injected into the prompts of backends that take context."""


@context.command("set")
@click.argument("key")
@click.argument("value")
@pass_ctx
def context_set(c: Ctx, key, value) -> None:
    """Set KEY to VALUE ('-' reads stdin)."""
    by = os.environ.get("PODIUM_AGENT_ID") or None  # set but empty: unset, as click reads it
    e = c.podium.set_context(key, read_arg(value, "value"), by=by)
    write(f"{e.key} v{e.version}\n")


@context.command("get")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def context_get(c: Ctx, key, as_json) -> None:
    """Print the value of KEY."""
    e = c.podium.get_context(key)
    if as_json:
        write_json(e.to_dict())
    else:
        write(e.value if e.value.endswith("\n") else e.value + "\n")


@context.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def context_list(c: Ctx, as_json) -> None:
    """List context keys."""
    entries = c.podium.list_context()
    if as_json:
        write_json([e.to_dict() for e in entries])
        return
    write_table([[e.key, f"v{e.version}", render.age(e.updated_at), render.short(e.value)]
                         for e in entries], ["KEY", "VERSION", "AGE", "VALUE"])
