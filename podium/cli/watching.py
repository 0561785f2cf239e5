"""Watching the team: the event stream, status, costs, the dashboard and the demo."""

from __future__ import annotations

import json
import sys

import click

from podium import limits, render
from podium.cli.base import (
    Ctx,
    cli,
    pass_ctx,
    write,
    write_json,
    write_table,
)


@cli.command()
@click.option("--from", "after", type=int, help="Start after this event id (0: from the start).")
@click.option("--task", "task_id", help="Only this task's events.")
@click.option("--idle-timeout", type=float, help="Exit after this many seconds without events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def watch(c: Ctx, after, task_id, idle_timeout, as_json) -> None:
    """Stream events live."""
    for ev in c.podium.follow(after, idle_timeout, task_id):
        if as_json:
            write(json.dumps(ev.to_dict(), ensure_ascii=False) + "\n")
            continue
        write(render.event_line(ev) + "\n")
        output = render.event_output(ev)
        if output:  # (control characters as escapes: the output cannot drive the terminal)
            write(render.output_lines(output))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Ctx, as_json) -> None:
    """Summary of agents and queue."""
    s = c.podium.status()
    for warning in s.warnings:
        click.echo(f"podium: warning: {warning}", err=True)
    d = s.to_dict()
    if as_json:
        write_json(d)
        return
    write(f"store   {s.store_url}\n")
    write("agents  " + ", ".join(f"{v} {k}" for k, v in d["agents"].items()) + "\n")
    write("tasks   " + ", ".join(f"{v} {k}" for k, v in s.tasks_by_state.items()) + "\n")
    for ag in s.live_agents:
        write(f"  {render.short_name(ag.id):<14} {ag.state.value:<8} "
              f"{ag.current_task or '-'}\n")
    for u in s.unrunnable:
        target = u.target_agent or (f"role {u.target_role}" if u.target_role else "any agent")
        write(render.short(f"waiting for nobody: {u.tasks} queued task(s) for {target}: "
                           f"{u.reason}", 10_000) + "\n")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def costs(c: Ctx, as_json) -> None:
    """Tokens and cost per agent, per role, per backend and overall."""
    s = c.podium.costs().to_dict()
    if as_json:
        write_json(s)
        return
    nums = ["TASKS", "TOKENS IN", "TOKENS OUT", "COST USD"]

    def cols(r) -> list[str]:
        return [str(r["tasks"]), str(r["tokens_in"]), str(r["tokens_out"]), f"{r['cost_usd']:.4f}"]

    name = render.short_name
    write_table([[name(r["agent"]), name(r["backend"]), name(render.roles(r["roles"])), *cols(r)]
                 for r in s["agents"]], ["AGENT", "BACKEND", "ROLES", *nums])
    write("\n")
    write_table([[name(r["role"] or "-"), str(r["agents"]), *cols(r)] for r in s["roles"]],
                ["ROLE", "AGENTS", *nums])
    write("\n")
    write_table([[name(r["backend"]), str(r["agents"]), *cols(r)] for r in s["backends"]] +
                [["total", str(s["total"]["agents"]), *cols(s["total"])]],
                ["BACKEND", "AGENTS", *nums])


@cli.command()
@pass_ctx
def dashboard(c: Ctx) -> None:
    """The terminal dashboard: agents, queue and live events (keys: a add, c cancel, s send,
    o output)."""
    from podium.tui.app import Dashboard

    Dashboard(c.podium).run()


@cli.command()
@click.option("--agents", "n", type=int, default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the store in place afterwards (path printed).")
@click.option("--ai-backend", default="local", show_default=True,
              help="Backend of the AI agent (e.g. claude when its CLI is logged in).")
@click.option("--ai-option", "ai_options", multiple=True, metavar="KEY=VALUE",
              help="Option of the AI agent's backend (repeat; default: the local model's).")
def demo(n: int, keep: bool, ai_backend: str, ai_options) -> None:
    """The main job: start agents, run a small pipeline of real tasks, print the results."""
    from podium.demo import run_demo

    sys.exit(run_demo(limits.agent_count(n), keep, write, ai_backend, list(ai_options) or None))
