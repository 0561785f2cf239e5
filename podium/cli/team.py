"""Starting, stopping and listing agents, their backends and hooks."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

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
from podium.clock import now
from podium.errors import InvalidInput, StoreError, StoreNotFound

#: The lease of an agent started without ``--lease`` (``up``, ``agent run``, ``interactive``).
DEFAULT_LEASE_S = 30.0


@cli.command()
@click.argument("n", type=int)
@click.option("--backend", "-b", default="shell", show_default=True)
@click.option("--role", "-r", "roles", multiple=True, help="Role of every started agent (repeat).")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Backend option (repeat).")
@click.option("--prefix", default="agent", show_default=True,
              help="Agent names: PREFIX-1, PREFIX-2...")
@click.option("--lease", type=float, default=DEFAULT_LEASE_S, show_default=True,
              help="Lease seconds (an agent silent this long is dead).")
@click.option("--workdir", metavar="DIRECTORY",
              help="Working directory of the agents (an existing one).")
@click.option("--tmux", "in_tmux", is_flag=True,
              help="Run the agents in panes of a tmux session, with a dashboard pane.")
@click.option("--tmux-session", "session", default="podium", show_default=True,
              help="tmux session name.")
@click.option("--session", "old_session", hidden=True)  # (the first spelling, kept working)
@click.option("--interactive", metavar="CMD",
              help="With --tmux: each pane runs this interactive program (e.g. claude) as the "
                   "agent.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def up(c: Ctx, n, backend, roles, options, prefix, lease, workdir, in_tmux, session, old_session,
       interactive, as_json) -> None:
    """Start N agents in the background (logs next to the store, in logs/) or in tmux panes."""
    session = session if old_session is None else old_session
    from podium.agents import backends
    from podium.supervisor import log_dir, up_tmux
    from podium.supervisor import up as start

    # Checked before the store opens: supervisor and worker take these as they are.
    n, prefix = limits.agent_count(n), limits.agent_prefix(prefix)
    roles = [limits.name(r, "role") for r in roles]
    lease = limits.lease(lease)[0]
    if workdir is not None:  # (as 'agent run' will refuse it, in each worker, after it started)
        workdir = limits.directory(workdir, "--workdir")
    session = limits.name(session, "tmux session")
    if interactive is not None:
        interactive = limits.given(interactive, "--interactive command")
    if interactive and not in_tmux:
        raise InvalidInput("--interactive needs --tmux (an interactive program needs a pane)")
    if not interactive:  # (its options checked here, before any worker or log is made)
        # What each worker reads from the environment: refused here, not by every worker.
        limits.max_output()
        limits.claim_batch()
        limits.env_recall()
        # And whether the backend can run at all, as 'podium doctor' says (a claude not logged
        # in is refused now, not at the first task); cheap: no model loaded, no network.
        backends.load(backend)(backends.parse_options(options), Path(workdir or ".")).preflight()
    if in_tmux:
        agents = up_tmux(c.podium, n, backend, list(roles), list(options), prefix, lease, workdir,
                         session, interactive)
    else:
        agents = start(c.podium, n, backend, list(roles), list(options), prefix, lease, workdir,
                       progress=_progress_line("agents registered") if n > 1 else None)
    if as_json:
        write_json([a.to_dict(now()) for a in agents])
        return
    for a in agents:
        write(f"{a.id}  pid {a.pid}  backend {a.backend}\n")
    if in_tmux:
        write(f"tmux session {session}: podium attach --tmux-session {shlex.quote(session)}\n")
    else:
        write(f"logs: {log_dir(c.podium)}\n")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="Seconds to wait before killing.")
@click.option("--drain", is_flag=True,
              help="Let running tasks finish (SIGINT) instead of requeueing them.")
@pass_ctx
def down(c: Ctx, names, timeout, drain) -> None:
    """Stop this host's live agents (all, or the NAMES given); without the store, those this
    host recorded."""
    from podium.supervisor import down as stop
    from podium.supervisor import down_local

    timeout = limits.wait_timeout(timeout)
    names = [limits.name(nm, "agent name") for nm in names]
    try:
        stopped = stop(c.podium, timeout, drain, names or None)
    except (StoreError, StoreNotFound) as e:  # (before anything was stopped: supervisor.down)
        stopped = down_local(c.store_url, timeout, drain, names or None)
        reason = " ".join(str(e).split())
        if not stopped:
            write(f"store unreachable ({reason}): by this host's local records, none of its "
                  "agents runs here\n")
            return
        write(f"store unreachable ({reason}): stopped {len(stopped)} local agent(s) by their "
              f"local records: {', '.join(stopped)}; their leases will be recovered when the "
              "store is back\n")
        return
    write(f"stopped {len(stopped)} agent(s){': ' + ', '.join(stopped) if stopped else ''}\n")


@cli.command()
@click.option("--tmux-session", "session", default="podium", show_default=True,
              help="tmux session name.")
@click.option("--session", "old_session", hidden=True)  # (the first spelling, kept working)
def attach(session, old_session) -> None:
    """Attach this terminal to the team's tmux session."""
    session = session if old_session is None else old_session
    from podium.tmux import Tmux, require_tmux

    tmux = Tmux.from_env()
    if not tmux.has_session(session):
        raise InvalidInput(f"no tmux session {session!r}; start one with 'podium up N --tmux'")
    os.execvp(require_tmux(), [require_tmux(), *tmux.args(), "attach-session", "-t", f"={session}"])


def _progress_line(what: str):
    """A progress reporter that keeps one line on a terminal's stderr up to date (and says
    nothing elsewhere: logs and pipes get the result only)."""
    if not sys.stderr.isatty():
        return None
    shown = [-1]

    def show(done: int, total: int) -> None:
        if done != shown[0]:
            shown[0] = done
            click.echo(f"\r{what}: {done}/{total}", err=True, nl=done == total)
    return show


def _agents_out(c: Ctx, as_json: bool) -> None:
    agents = c.podium.agents()  # (by name)
    if as_json:
        t = now()
        write_json([a.to_dict(t) for a in agents])
        return
    name = render.short_name
    rows = [[name(a.id), a.state.value, name(render.roles(a.roles)), name(a.backend),
             name(a.host), str(a.pid or "-"),
             a.current_task or "-", render.age(a.last_heartbeat), str(a.tasks_done),
             render.short(a.note, 30)] for a in agents]
    write_table(rows, ["AGENT", "STATE", "ROLES", "BACKEND", "HOST", "PID", "TASK",
                               "HEARTBEAT", "DONE", "NOTE"])


@cli.command("agents")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def agents_cmd(c: Ctx, as_json: bool) -> None:
    """List agents with state, current task and last heartbeat."""
    _agents_out(c, as_json)


@cli.group()
def agent() -> None:
    """Run or list agents."""


@agent.command("list", hidden=True)  # (``podium agents``, under the name of the group)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def agent_list(c: Ctx, as_json: bool) -> None:
    """List agents (same as 'podium agents')."""
    _agents_out(c, as_json)


@agent.command("run")
@click.option("--name", "-n", required=True)
@click.option("--role", "-r", "roles", multiple=True)
@click.option("--backend", "-b", default="shell", show_default=True)
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE")
@click.option("--lease", type=float, default=DEFAULT_LEASE_S, show_default=True,
              help="Seconds a claim lives without a heartbeat.")
@click.option("--heartbeat", type=float, help="Heartbeat interval (default lease/6).")
@click.option("--workdir", type=click.Path(file_okay=False, exists=True))
@click.option("--echo-output", is_flag=True, help="Also print tasks and their output (for panes).")
@click.option("--recall", type=int, default=0, envvar="PODIUM_RECALL", show_default=True,
              metavar="K", help="Put the K memories most like each task's prompt in front of "
                                "it (env PODIUM_RECALL; a task's own --recall wins).")
@pass_ctx
def agent_run(c: Ctx, name, roles, backend, options, lease, heartbeat, workdir,
              echo_output, recall) -> None:
    """Run one agent in the foreground: pull tasks and run them until stopped."""
    from podium.agents import backends

    lease, heartbeat = limits.lease(lease, heartbeat)
    name, roles = limits.name(name, "agent name"), [limits.name(r, "role") for r in roles]
    cls = backends.load(backend)
    wd = Path(workdir).resolve() if workdir else Path.cwd()
    # (made before the store opens: a bad option is refused without touching it)
    worker_backend = cls(backends.parse_options(options), wd)
    recall = limits.recall(recall, "--recall")
    worker = c.podium.worker(name, worker_backend, list(roles), lease, heartbeat, wd,
                             echo_output, recall)
    worker.install_signal_handlers()
    sys.exit(worker.run())


@agent.command("interactive", context_settings={"ignore_unknown_options": True})
@click.option("--name", "-n", required=True)
@click.option("--role", "-r", "roles", multiple=True)
@click.option("--lease", type=float, default=DEFAULT_LEASE_S, show_default=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def agent_interactive(c: Ctx, name, roles, lease, command) -> None:
    """Run an interactive program (e.g. claude) as agent NAME in this terminal: podium agent
    interactive --name N -- CMD ARGS..."""
    lease = limits.lease(lease)[0]
    name, roles = limits.name(name, "agent name"), [limits.name(r, "role") for r in roles]
    sys.exit(c.podium.interactive_agent(name, list(command), roles, lease).run())


def _option_type(o: dict[str, Any]) -> str:
    """An option's type with its bounds: ``float, 0 to 2``."""
    low, high = o["min"], o["max"]
    if low is not None and high is not None:
        return f"{o['type']}, {low} to {high}"
    if low is not None:
        return f"{o['type']}, at least {low}"
    if high is not None:
        return f"{o['type']}, at most {high}"
    return o["type"]


def _option_default(value: Any) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return " ".join(value) if isinstance(value, list) else str(value)


@cli.command("backends")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", is_flag=True,
              help="Print the built-in backends' options as Markdown (the README's section).")
def backends_cmd(as_json: bool, markdown: bool) -> None:
    """List the installed backends: their options, and whether each can run here."""
    from podium.agents import backends

    if markdown:
        write(backends.options_markdown())
        return
    listing = backends.describe()
    if as_json:
        write_json(listing)
        return
    for i, b in enumerate(listing):
        state = "available" if b["available"] else f"not available here: {b['reason']}"
        write(("\n" if i else "") + f"{b['name']}  {state}\n")
        if not b["options"]:
            write("  (no options)\n")
            continue
        write_table(
            [["  " + o["name"], _option_type(o), _option_default(o["default"]), o["help"]]
             for o in b["options"]], ["  OPTION", "TYPE", "DEFAULT", "HELP"])


@cli.command()
@click.argument("name")
@click.option("--agent", envvar="PODIUM_AGENT_ID", required=True,
              help="The agent (default $PODIUM_AGENT_ID, set for interactive agents).")
@pass_ctx
def hook(c: Ctx, name, agent) -> None:
    """Record a Claude Code hook event (JSON on stdin) as the agent's state."""
    from podium.hooks import parse_payload

    payload = parse_payload(b"" if sys.stdin.isatty() else sys.stdin.buffer.read())
    a = c.podium.hook(agent, name, payload)
    write(f"{a.id} {a.state.value}\n")


@cli.group()
def hooks() -> None:
    """Claude Code hooks that report interactive agents' state."""


@hooks.command("install")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Project directory of the agent (its .claude/ is used).")
@pass_ctx
def hooks_install(c: Ctx, directory) -> None:
    """Write Podium's hooks into DIR/.claude/settings.local.json (merged with what is there)."""
    from podium.hooks import install
    from podium.service.local import store_url_of

    path = Path(limits.given(directory, "--dir")).resolve() / ".claude" / "settings.local.json"
    install(path, store_url_of(c.store_url))  # (the store's URL: it need not exist yet)
    write(f"wrote hooks to {path}\n")


@agent.command("prune")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def agent_prune(c: Ctx, as_json: bool) -> None:
    """Remove stopped and dead agents (with their inbox and outbox) whose process is gone and
    for which no unfinished task waits; say why any other stopped or dead one is kept."""
    done = c.podium.prune_agents()
    if as_json:
        write_json({"removed": done.removed, "kept": done.kept})
        return
    write(f"removed {len(done.removed)} agent(s)"
          f"{': ' + ', '.join(done.removed) if done.removed else ''}\n")
    for agent_id, why in sorted(done.kept.items()):
        write(f"kept {agent_id}: {why}\n")
