"""Tasks: ``task add/show/list/cancel/wait/result`` and ``broadcast``."""

from __future__ import annotations

import copy
import sys

import click

from podium import limits, render
from podium.cli.base import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    Ctx,
    cli,
    pass_ctx,
    read_arg,
    write,
    write_json,
    write_table,
)
from podium.errors import InvalidInput
from podium.models import Task


def _with_seq(c: Ctx, t: Task) -> dict:
    """``t``, just added, as JSON with its ``seq``: read back for --json only (the add itself
    does not read it, sparing every add a round trip)."""
    return {**t.to_dict(), "seq": c.podium.task(t.id).seq or None}


def _context(value: str | None) -> str | None:
    """``--context`` as given; an empty one (which would mean no context: the default) is
    refused, as every empty string is."""
    if value is not None and limits.blank(value):
        raise InvalidInput("--context is empty: leave it out for a task without context")
    return value


@cli.group()
def task() -> None:
    """Add, list, show, cancel and wait for tasks."""


@task.command("add")
@click.argument("prompt")
@click.option("--agent", "-a", help="Only this agent may take it.")
@click.option("--role", "-r", help="Only agents with this role may take it.")
@click.option("--priority", "-p", type=click.Choice(["high", "normal", "low"]), default="normal",
              show_default=True)
@click.option("--depends-on", "-d", "depends_on", multiple=True, metavar="ID",
              help="Run only after this task completed (repeat).")
@click.option("--context", "-c", help="Context handed to the agent with the prompt.")
@click.option("--timeout", type=float, help="Seconds before the run is killed.")
@click.option("--max-attempts", type=int, default=3, show_default=True,
              help="Claims allowed (a crashed agent's task is retried until then).")
@click.option("--retry", is_flag=True, help="Also retry when the run fails (up to --max-attempts).")
@click.option("--session", metavar="NAME",
              help="Run in this named agent session: the agent CLI's conversation (a Claude "
                   "Code session), continued by every task naming it.")
@click.option("--recall", type=int, metavar="K",
              help="Put the K memories most like the prompt in front of it (0: none, whatever "
                   "the agent's --recall).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def task_add(c: Ctx, prompt, agent, role, priority, depends_on, context, timeout, max_attempts,
             retry, session, recall, as_json) -> None:
    """Queue a task; PROMPT '-' reads it from stdin. Prints the task id."""
    context = _context(context)  # (before the store opens: it may be made for the task)
    t = c.podium.add_task(read_arg(prompt, "prompt"), agent=agent, role=role, priority=priority,
                          depends_on=list(depends_on), context=context, timeout_s=timeout,
                          max_attempts=max_attempts, retry=retry, session=session,
                          recall=recall)
    warning = c.podium.add_warning(t)  # (accepted all the same: the agent may come later)
    if warning is not None:
        click.echo(f"podium: warning: {warning}", err=True)
    if as_json:  # (with the seq that --before pages by: the database numbered it at commit)
        write_json(_with_seq(c, t))
    else:
        write(t.id + "\n")


def _task_text(t, why: str | None = None) -> str:
    """``task show``'s text; ``why``: what the task waits for in vain, if it does."""
    r = t.result()
    target = t.target_agent or (f"role {t.target_role}" if t.target_role else "any agent")
    lines = [
        f"task       {t.id}",
        f"state      {t.state.value}",
        f"priority   {t.priority.name.lower()}",
        f"target     {target}",
        f"agent      {t.agent_id or '-'}",
        f"attempts   {t.attempts}/{t.max_attempts}",
        f"depends on {', '.join(t.depends_on) or '-'}",
        f"created    {render.when(t.created_at)}",
        f"started    {render.when(t.started_at)}",
        f"completed  {render.when(t.completed_at)}",
        f"duration   {'-' if r['duration_ms'] is None else str(r['duration_ms']) + ' ms'}",
    ]
    if t.exit_code is not None:
        lines.append(f"exit code  {t.exit_code}")
    if t.error:
        lines.append(f"error      {t.error}")
    if t.tokens_in is not None or t.cost_usd is not None:
        lines.append(f"tokens     {t.tokens_in} in / {t.tokens_out} out, cost ${t.cost_usd}")
    if why:
        lines.append(f"waiting    {why}")
    lines.append("prompt:")
    lines.append(t.prompt)
    if t.output_pruned:
        lines.append("output     (pruned)")
    elif r["output"] is not None:
        lines.append("output" + (" (base64):" if r.get("output_encoding") else ":"))
        lines.append(r["output"])
    return "\n".join(lines) + "\n"


@task.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def task_show(c: Ctx, task_id, as_json) -> None:
    """Show one task with its result."""
    t = c.podium.task(task_id)
    why = c.podium.why_waiting(t)
    if as_json:
        write_json({**t.to_dict(), "waiting_for_nobody": why})
    else:
        write(_task_text(t, why))


@task.command("list")
@click.option("--state", "-s", help="blocked, queued, running, completed, failed or cancelled.")
@click.option("--agent", "-a")
@click.option("--limit", "-n", type=int, default=100, show_default=True)
@click.option("--before", type=int, metavar="SEQ",
              help="Only tasks older than this seq (the next page: the first seq listed).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def task_list(c: Ctx, state, agent, limit, before, as_json) -> None:
    """List tasks, oldest first (the last LIMIT)."""
    tasks = c.podium.tasks(state, agent, limit, before=before)
    if as_json:
        write_json([t.to_dict(with_output=False) for t in tasks])
        return
    rows = [[t.id, t.state.value, t.priority.name.lower(),
             render.short_name(render.target(t)), render.short_name(t.agent_id or "-"),
             render.tries(t),
             render.age(t.created_at), render.short(t.prompt)] for t in tasks]
    write_table(rows, ["TASK", "STATE", "PRIORITY", "TARGET", "AGENT", "TRIES", "AGE", "PROMPT"])


@task.command("cancel")
@click.argument("task_id")
@click.option("--reason", default="cancelled by user", show_default=True)
@pass_ctx
def task_cancel(c: Ctx, task_id, reason) -> None:
    """Cancel a blocked, queued or running task (a running one is killed)."""
    t = c.podium.cancel(task_id, reason)
    write(f"{t.id} {t.state.value}\n")


@task.command("wait")
@click.argument("task_id")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON when done.")
@pass_ctx
def task_wait(c: Ctx, task_id, timeout, as_json) -> None:
    """Wait for a task; exit 0 completed, 3 failed, 4 cancelled, 5 timed out waiting. Without
    --timeout, says on stderr every few seconds what it is waiting for."""
    if timeout is not None:
        t = c.podium.wait(task_id, timeout)
    else:
        t = c.podium.wait(task_id, WAIT_REPORT_S)
        while not t.state.finished:
            click.echo(f"podium: still waiting for {t.id}: {_waiting_for(c, t)}", err=True)
            t = c.podium.wait(t.id, WAIT_REPORT_S)
    if as_json:
        write_json(t.result())
    else:
        write(f"{t.id} {t.state.value}\n")
    code = {"completed": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
    sys.exit(code.get(t.state.value, EXIT_TIMEOUT))


#: How often ``task wait`` without a timeout says what it waits for.
WAIT_REPORT_S = 5.0


def _waiting_for(c: Ctx, t) -> str:
    """What a task that is not finished waits for, in a few words."""
    if t.state.value == "running":
        return f"running on {t.agent_id} for {render.age(t.started_at)}"
    if t.state.value == "blocked":
        return "blocked until " + ", ".join(t.depends_on) + " complete" + (
            f" (and then: {why})" if (why := c.podium.why_waiting(t)) else "")
    why = c.podium.why_waiting(t)
    return f"queued, {why}" if why else f"queued for {render.age(t.created_at)}"


@task.command("result")
@click.argument("task_id")
@click.option("--raw", is_flag=True, help="Write the output bytes only, exactly as produced.")
@pass_ctx
def task_result(c: Ctx, task_id, raw) -> None:
    """Print a task's result JSON."""
    if raw:
        t = c.podium.task(task_id)
        if t.output_pruned:
            click.echo(f"podium: {t.id}'s output was pruned (podium store prune)", err=True)
        sys.stdout.buffer.write(t.output or b"")
        sys.stdout.buffer.flush()
        return
    write_json(c.podium.task(task_id).result())


# ``podium result``: the first spelling, kept working (not listed).
_result_alias = copy.copy(task_result)
_result_alias.hidden = True
cli.add_command(_result_alias, "result")


@cli.command()
@click.argument("prompt")
@click.option("--context", "-c")
@click.option("--timeout", type=float)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def broadcast(c: Ctx, prompt, context, timeout, as_json) -> None:
    """Give every live agent its own copy of a task; prints one task id per agent."""
    context = _context(context)
    tasks = c.podium.broadcast(read_arg(prompt, "prompt"), context=context, timeout_s=timeout)
    if as_json:
        write_json([_with_seq(c, t) for t in tasks])
        return
    for t in tasks:
        write(f"{t.id} {t.target_agent}\n")


@task.command("retry")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def task_retry(c: Ctx, task_id, as_json) -> None:
    """Queue a failed or cancelled task again, afresh (its dependents that its end cancelled
    are blocked again, to run after it)."""
    t = c.podium.retry(task_id)
    if as_json:
        write_json(t.to_dict(with_output=False))
    else:
        write(f"{t.id} {t.state.value}\n")
