"""The ``podium`` command: argument parsing and rendering over the service API, nothing more."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from podium import __version__, limits, render
from podium.clock import iso, now
from podium.errors import InvalidInput, PodiumError
from podium.service import Podium
from podium.tmux import TmuxPanes

# Exit codes of ``podium task wait`` (see README).
EXIT_ERROR, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 1, 3, 4, 5


def _write(text: str) -> None:
    """Print UTF-8 whatever the locale says (prompts and outputs are any Unicode)."""
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def _json(obj: Any) -> None:
    _write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def _read_arg(value: str, what: str) -> str:
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


# -- store and team ------------------------------------------------------------------------

@cli.command()
@pass_ctx
def init(c: Ctx) -> None:
    """Create (or migrate) the store and print where it is (an empty file becomes a store)."""
    _write(c.open(init=True).url + "\n")


@cli.group()
def store() -> None:
    """Manage the store itself."""


@store.command("migrate")
@pass_ctx
def store_migrate(c: Ctx) -> None:
    """Apply pending schema migrations (opening a store does it too) and list them."""
    applied = c.podium.migrate()
    _write(("applied: " + ", ".join(applied) if applied else "up to date") + "\n")


@store.command("copy")
@click.argument("source")
@click.argument("destination")
def store_copy(source, destination) -> None:
    """Copy every agent, task, message, event and context entry from SOURCE to an empty
    DESTINATION (paths or URLs; SQLite and PostgreSQL in either direction)."""
    counts = Podium.copy(source, destination)
    _write("copied " + ", ".join(f"{n} {t}" for t, n in counts.items()) + "\n")


@cli.command()
@click.argument("n", type=int)
@click.option("--backend", "-b", default="shell", show_default=True)
@click.option("--role", "-r", "roles", multiple=True, help="Role of every started agent (repeat).")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Backend option (repeat).")
@click.option("--prefix", default="agent", show_default=True,
              help="Agent names: PREFIX-1, PREFIX-2...")
@click.option("--lease", type=float, help="Lease seconds (an agent silent this long is dead).")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Working directory of the agents.")
@click.option("--tmux", "in_tmux", is_flag=True,
              help="Run the agents in panes of a tmux session, with a dashboard pane.")
@click.option("--session", default="podium", show_default=True, help="tmux session name.")
@click.option("--interactive", metavar="CMD",
              help="With --tmux: each pane runs this interactive program (e.g. claude) as the "
                   "agent.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def up(c: Ctx, n, backend, roles, options, prefix, lease, workdir, in_tmux, session, interactive,
       as_json) -> None:
    """Start N agents in the background (logs next to the store, in logs/) or in tmux panes."""
    from podium.agents import backends
    from podium.supervisor import log_dir, up_tmux
    from podium.supervisor import up as start

    # Checked before the store opens: supervisor and worker take these as they are.
    n, prefix = limits.agent_count(n), limits.agent_prefix(prefix)
    roles = [limits.name(r, "role") for r in roles]
    if lease is not None:
        lease = limits.lease(lease)[0]
    if workdir is not None:
        workdir = limits.given(workdir, "--workdir")
    session = limits.name(session, "tmux session")
    if interactive is not None:
        interactive = limits.given(interactive, "--interactive command")
    if interactive and not in_tmux:
        raise InvalidInput("--interactive needs --tmux (an interactive program needs a pane)")
    if not interactive:  # (its options checked here, before any worker or log is made)
        backends.load(backend)(backends.parse_options(options), Path(workdir or "."))
    if in_tmux:
        agents = up_tmux(c.podium, n, backend, list(roles), list(options), prefix, lease, workdir,
                         session, interactive)
    else:
        agents = start(c.podium, n, backend, list(roles), list(options), prefix, lease, workdir)
    if as_json:
        _json([a.to_dict(now()) for a in agents])
        return
    for a in agents:
        _write(f"{a.id}  pid {a.pid}  backend {a.backend}\n")
    if in_tmux:
        _write(f"tmux session {session}: podium attach --session {session}\n")
    else:
        _write(f"logs: {log_dir(c.podium)}\n")


@cli.command()
@click.option("--session", default="podium", show_default=True)
def attach(session) -> None:
    """Attach this terminal to the team's tmux session."""
    from podium.tmux import Tmux, require_tmux

    tmux = Tmux.from_env()
    if not tmux.has_session(session):
        raise InvalidInput(f"no tmux session {session!r}; start one with 'podium up N --tmux'")
    os.execvp(require_tmux(), [require_tmux(), *tmux.args(), "attach-session", "-t", f"={session}"])


@cli.command()
@pass_ctx
def dashboard(c: Ctx) -> None:
    """The terminal dashboard: agents, queue and live events (keys: a add, c cancel, s send,
    o output)."""
    from podium.tui.app import Dashboard

    Dashboard(c.podium).run()


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
    _write(f"{a.id} {a.state.value}\n")


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

    path = Path(limits.given(directory, "--dir")).resolve() / ".claude" / "settings.local.json"
    install(path, c.podium.url)
    _write(f"wrote hooks to {path}\n")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="Seconds to wait before killing.")
@click.option("--drain", is_flag=True,
              help="Let running tasks finish (SIGINT) instead of requeueing them.")
@pass_ctx
def down(c: Ctx, names, timeout, drain) -> None:
    """Stop this host's live agents (all, or the NAMES given)."""
    from podium.supervisor import down as stop

    timeout = limits.wait_timeout(timeout)
    names = [limits.name(nm, "agent name") for nm in names]
    stopped = stop(c.podium, timeout, drain, names or None)
    _write(f"stopped {len(stopped)} agent(s){': ' + ', '.join(stopped) if stopped else ''}\n")


def _agents_out(c: Ctx, as_json: bool) -> None:
    agents = c.podium.agents()
    if as_json:
        t = now()
        _json([a.to_dict(t) for a in agents])
        return
    rows = [[a.id, a.state.value, render.roles(a.roles), a.backend, a.host, str(a.pid or "-"),
             a.current_task or "-", render.age(a.last_heartbeat), str(a.tasks_done),
             render.short(a.note, 30)] for a in agents]
    _write(render.table(rows, ["AGENT", "STATE", "ROLES", "BACKEND", "HOST", "PID", "TASK",
                               "HEARTBEAT", "DONE", "NOTE"]))


@cli.command("agents")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def agents_cmd(c: Ctx, as_json: bool) -> None:
    """List agents with state, current task and last heartbeat."""
    _agents_out(c, as_json)


@cli.group()
def agent() -> None:
    """Run or list agents."""


@agent.command("list")
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
@click.option("--lease", type=float, default=30.0, show_default=True,
              help="Seconds a claim lives without a heartbeat.")
@click.option("--heartbeat", type=float, help="Heartbeat interval (default lease/6).")
@click.option("--workdir", type=click.Path(file_okay=False, exists=True))
@click.option("--echo-output", is_flag=True, help="Also print tasks and their output (for panes).")
@pass_ctx
def agent_run(c: Ctx, name, roles, backend, options, lease, heartbeat, workdir,
              echo_output) -> None:
    """Run one agent in the foreground: pull tasks and run them until stopped."""
    from podium.agents import backends

    lease, heartbeat = limits.lease(lease, heartbeat)
    name, roles = limits.name(name, "agent name"), [limits.name(r, "role") for r in roles]
    cls = backends.load(backend)
    wd = Path(workdir).resolve() if workdir else Path.cwd()
    # (made before the store opens: a bad option is refused without touching it)
    worker_backend = cls(backends.parse_options(options), wd)
    worker = c.podium.worker(name, worker_backend, list(roles), lease, heartbeat, wd,
                             echo_output)
    worker.install_signal_handlers()
    sys.exit(worker.run())


@agent.command("interactive", context_settings={"ignore_unknown_options": True})
@click.option("--name", "-n", required=True)
@click.option("--role", "-r", "roles", multiple=True)
@click.option("--lease", type=float, default=30.0, show_default=True)
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
def backends_cmd(as_json: bool) -> None:
    """List the installed backends: their options, and whether each can run here."""
    from podium.agents import backends

    listing = backends.describe()
    if as_json:
        _json(listing)
        return
    for i, b in enumerate(listing):
        state = "available" if b["available"] else f"not available here: {b['reason']}"
        _write(("\n" if i else "") + f"{b['name']}  {state}\n")
        if not b["options"]:
            _write("  (no options)\n")
            continue
        _write(render.table(
            [["  " + o["name"], _option_type(o), _option_default(o["default"]), o["help"]]
             for o in b["options"]], ["  OPTION", "TYPE", "DEFAULT", "HELP"]))


# -- tasks ---------------------------------------------------------------------------------

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
              help="Run in this named agent session (continued by every task naming it).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def task_add(c: Ctx, prompt, agent, role, priority, depends_on, context, timeout, max_attempts,
             retry, session, as_json) -> None:
    """Queue a task; PROMPT '-' reads it from stdin. Prints the task id."""
    t = c.podium.add_task(_read_arg(prompt, "prompt"), agent=agent, role=role, priority=priority,
                          depends_on=list(depends_on), context=context, timeout_s=timeout,
                          max_attempts=max_attempts, retry=retry, session=session)
    if as_json:
        _json(t.to_dict())
    else:
        _write(t.id + "\n")


def _task_text(t) -> str:
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
        f"created    {iso(t.created_at)}",
        f"started    {iso(t.started_at) or '-'}",
        f"completed  {iso(t.completed_at) or '-'}",
        f"duration   {r['duration_ms'] if r['duration_ms'] is not None else '-'} ms",
    ]
    if t.exit_code is not None:
        lines.append(f"exit code  {t.exit_code}")
    if t.error:
        lines.append(f"error      {t.error}")
    if t.tokens_in is not None or t.cost_usd is not None:
        lines.append(f"tokens     {t.tokens_in} in / {t.tokens_out} out, cost ${t.cost_usd}")
    lines.append("prompt:")
    lines.append(t.prompt)
    if r["output"] is not None:
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
    if as_json:
        _json(t.to_dict())
    else:
        _write(_task_text(t))


@task.command("list")
@click.option("--state", "-s", help="blocked, queued, running, completed, failed or cancelled.")
@click.option("--agent", "-a")
@click.option("--limit", "-n", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def task_list(c: Ctx, state, agent, limit, as_json) -> None:
    """List tasks, oldest first (the last LIMIT)."""
    tasks = c.podium.tasks(state, agent, limit)
    if as_json:
        _json([t.to_dict(with_output=False) for t in tasks])
        return
    rows = [[t.id, t.state.value, t.priority.name.lower(), render.target(t), t.agent_id or "-",
             render.tries(t), render.age(t.created_at), render.short(t.prompt)] for t in tasks]
    _write(render.table(rows, ["TASK", "STATE", "PRIORITY", "TARGET", "AGENT", "TRIES", "AGE",
                               "PROMPT"]))


@task.command("cancel")
@click.argument("task_id")
@click.option("--reason", default="cancelled by user", show_default=True)
@pass_ctx
def task_cancel(c: Ctx, task_id, reason) -> None:
    """Cancel a blocked, queued or running task (a running one is killed)."""
    t = c.podium.cancel(task_id, reason)
    _write(f"{t.id} {t.state.value}\n")


@task.command("wait")
@click.argument("task_id")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON when done.")
@pass_ctx
def task_wait(c: Ctx, task_id, timeout, as_json) -> None:
    """Wait for a task; exit 0 completed, 3 failed, 4 cancelled, 5 timed out waiting."""
    t = c.podium.wait(task_id, timeout)
    if as_json:
        _json(t.result())
    else:
        _write(f"{t.id} {t.state.value}\n")
    code = {"completed": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
    sys.exit(code.get(t.state.value, EXIT_TIMEOUT))


@cli.command()
@click.argument("task_id")
@click.option("--raw", is_flag=True, help="Write the output bytes only, exactly as produced.")
@pass_ctx
def result(c: Ctx, task_id, raw) -> None:
    """Print a task's result JSON."""
    if raw:
        t = c.podium.task(task_id)
        sys.stdout.buffer.write(t.output or b"")
        sys.stdout.buffer.flush()
        return
    _json(c.podium.result(task_id))


@cli.command()
@click.argument("prompt")
@click.option("--context", "-c")
@click.option("--timeout", type=float)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def broadcast(c: Ctx, prompt, context, timeout, as_json) -> None:
    """Give every live agent its own copy of a task; prints one task id per agent."""
    tasks = c.podium.broadcast(_read_arg(prompt, "prompt"), context=context, timeout_s=timeout)
    if as_json:
        _json([t.to_dict() for t in tasks])
        return
    for t in tasks:
        _write(f"{t.id} {t.target_agent}\n")


# -- messages and context -------------------------------------------------------------------

@cli.command()
@click.argument("agent_id")
@click.argument("message")
@click.option("--from", "sender", default="orchestrator", show_default=True)
@pass_ctx
def send(c: Ctx, agent_id, message, sender) -> None:
    """Put a message in an agent's inbox; MESSAGE '-' reads stdin."""
    m = c.podium.send(agent_id, _read_arg(message, "message"), sender)
    _write(f"message {m.id} -> {m.agent_id}\n")


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
        _json([m.to_dict() for m in msgs])
        return
    for m in msgs:
        mark = " " if m.read_at else "*"
        _write(f"{mark} #{m.id} {iso(m.created_at)} {m.sender or '-'} [{m.kind}]\n{m.body}\n")


@cli.command()
@click.option("--status", "-s", required=True, help="idle, busy, waiting_input, or any word.")
@click.option("--note", "-m", help="Free text; '-' reads stdin.")
@click.option("--agent", envvar="PODIUM_AGENT_ID", required=True,
              help="The reporting agent (default $PODIUM_AGENT_ID, set for tasks).")
@click.option("--task", "task_id", envvar="PODIUM_TASK_ID")
@pass_ctx
def report(c: Ctx, status, note, agent, task_id) -> None:
    """An agent reports its own status to the orchestrator."""
    m = c.podium.report(agent, status, _read_arg(note, "note") if note else None, task_id)
    _write(f"report {m.id} from {agent}\n")


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
    e = c.podium.set_context(key, _read_arg(value, "value"), by=by)
    _write(f"{e.key} v{e.version}\n")


@context.command("get")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def context_get(c: Ctx, key, as_json) -> None:
    """Print the value of KEY."""
    e = c.podium.get_context(key)
    if as_json:
        _json(e.to_dict())
    else:
        _write(e.value if e.value.endswith("\n") else e.value + "\n")


@context.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def context_list(c: Ctx, as_json) -> None:
    """List context keys."""
    entries = c.podium.list_context()
    if as_json:
        _json([e.to_dict() for e in entries])
        return
    _write(render.table([[e.key, f"v{e.version}", render.age(e.updated_at), render.short(e.value)]
                         for e in entries], ["KEY", "VERSION", "AGE", "VALUE"]))


# -- watching ------------------------------------------------------------------------------

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
            _write(json.dumps(ev.to_dict(), ensure_ascii=False) + "\n")
            continue
        _write(render.event_line(ev) + "\n")
        output = render.event_output(ev)
        if output:
            _write("  | " + output.rstrip("\n").replace("\n", "\n  | ") + "\n")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Ctx, as_json) -> None:
    """Summary of agents and queue."""
    s = c.podium.status()
    for warning in s["warnings"]:
        click.echo(f"podium: warning: {warning}", err=True)
    if as_json:
        _json(s)
        return
    a, t = s["agents"], s["tasks"]
    _write(f"store   {s['store']}\n")
    _write("agents  " + ", ".join(f"{v} {k}" for k, v in a.items()) + "\n")
    _write("tasks   " + ", ".join(f"{v} {k}" for k, v in t.items()) + "\n")
    for ag in s["live_agents"]:
        _write(f"  {ag['id']:<14} {ag['state']:<8} {ag['current_task'] or '-'}\n")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def costs(c: Ctx, as_json) -> None:
    """Tokens and cost per agent, per role, per backend and overall."""
    s = c.podium.costs()
    if as_json:
        _json(s)
        return
    nums = ["TASKS", "TOKENS IN", "TOKENS OUT", "COST USD"]

    def cols(r) -> list[str]:
        return [str(r["tasks"]), str(r["tokens_in"]), str(r["tokens_out"]), f"{r['cost_usd']:.4f}"]

    _write(render.table([[r["agent"], r["backend"], render.roles(r["roles"]), *cols(r)]
                         for r in s["agents"]], ["AGENT", "BACKEND", "ROLES", *nums]))
    _write("\n")
    _write(render.table([[r["role"] or "-", str(r["agents"]), *cols(r)] for r in s["roles"]],
                        ["ROLE", "AGENTS", *nums]))
    _write("\n")
    _write(render.table([[r["backend"], str(r["agents"]), *cols(r)] for r in s["backends"]] +
                        [["total", str(s["total"]["agents"]), *cols(s["total"])]],
                        ["BACKEND", "AGENTS", *nums]))


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

    sys.exit(run_demo(limits.agent_count(n), keep, _write, ai_backend, list(ai_options) or None))


@cli.group("mcp")
def mcp_group() -> None:
    """MCP server: let an AI orchestrator (Claude Code, any MCP client) drive the team."""


@mcp_group.command("serve")
@click.option("--http", "use_http", is_flag=True,
              help="Streamable HTTP at http://HOST:PORT/mcp (bearer token) instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="With --http: address to bind.")
@click.option("--port", type=int, default=8765, show_default=True,
              help="With --http: port (0: any free one).")
@pass_ctx
def mcp_serve(c: Ctx, use_http, host, port) -> None:
    """Serve Podium's tools and resources over MCP (stdio by default)."""
    from podium.mcp import serve

    # Before the store opens; an empty host would bind every interface.
    host, port = limits.name(host, "host"), limits.port(port, any_free=True)
    serve(c.podium, http=use_http, host=host, port=port)


@mcp_group.command("install")
@click.option("--scope", type=click.Choice(["project"]), default="project", show_default=True,
              help="project: DIR/.mcp.json, which Claude Code reads in that project.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Project directory.")
@click.option("--name", default="podium", show_default=True, help="Server name in the file.")
@click.option("--with-password", is_flag=True,
              help="Write a PostgreSQL store's password into the file too (by default it is "
                   "left out: .mcp.json is usually committed).")
@pass_ctx
def mcp_install(c: Ctx, scope, directory, name, with_password) -> None:
    """Write or merge .mcp.json so that Claude Code starts 'podium mcp serve' on this store."""
    from podium.mcp import install

    directory = limits.given(directory, "--dir")
    url, left_out = c.podium.shareable_url(with_password)
    path, entry = install(url, directory, name, scope)
    if left_out:
        click.echo("the store's password was left out of the file (it is usually committed): "
                   "give it to Claude Code's environment as PGPASSWORD, or put it in ~/.pgpass; "
                   "--with-password writes it", err=True)
    _write(f"wrote server {name!r} to {path}:\n")
    _json(entry)


@mcp_group.command("token")
@pass_ctx
def mcp_token(c: Ctx) -> None:
    """Print the bearer token of 'podium mcp serve --http' (created on first use, mode 0600)."""
    from podium.mcp import load_token

    _write(load_token(c.podium.home) + "\n")


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


def main() -> None:
    try:
        cli.main(args=_utf8_args(sys.argv[1:]), standalone_mode=False)
    except PodiumError as e:
        click.echo(f"podium: error: {e}", err=True)
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
