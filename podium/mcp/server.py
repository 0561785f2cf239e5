"""``podium mcp serve``: the service API as MCP tools and resources.

Every tool is a thin wrapper over one ``podium.service.Podium`` call and returns what the
service returns, rendered as the JSON the CLI prints (structured content, and the same JSON as
text). A ``PodiumError`` (unknown agent or task, bad input...) becomes a tool error carrying its
message; the server never goes down because of a call.

Synchronous tools run on the SDK's worker threads; ``wait_for_task`` runs its blocking wait on a
daemon thread of its own, so waits neither block the event loop nor hold the SDK's threads, and
the server exits at once when its client goes.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from podium import __version__, limits
from podium.clock import now
from podium.errors import InvalidInput, NotFound, PodiumError
from podium.service import Podium

INSTRUCTIONS = """\
Podium runs a team of coding agents (worker processes) that pull tasks from one durable queue.
See the team with get_agents or get_system_status. Queue work with assign_task (for anyone, one
agent, or a role; with a priority, dependencies and a timeout) or broadcast_task (one copy per
live agent); it returns the task id at once. Collect output with wait_for_task (blocks up to
timeout_s) or get_task_result; list recent results with get_all_results; cancel_task stops one,
retry_task runs a failed or cancelled one again.
send_to_agent puts a message in an agent's inbox, get_agent_messages lists its mailbox, and
get_agent_response gives its latest report or result. Shared context (update_shared_context,
get_shared_context) is put in front of the prompt of every agent that takes context.
Results: status is completed, failed or cancelled when finished; output is the agent's output
(base64 when output_encoding says so); error says why a task failed.
The team's memory holds every finished task, shared context versions and notes: similar_tasks
asks whether the team solved something before, search_memory searches all of it (by keywords
and meaning), remember adds a note for agents to find later.
"""

# Parameter types. Text parameters are plain ``str`` (never ``str | None``): the SDK parses a
# string that looks like JSON for any other annotation, which would change prompts like '[1]'.
# Numbers carry the service's bounds (``podium.limits``) in their schema, so that the model sees
# them; the service checks them again, as for every face.
Text = Annotated[str, Field(description="Any text; it reaches the agent byte for byte.")]
TaskId = Annotated[str, Field(description="A task id as assign_task returns it (t-...).")]
AgentId = Annotated[str, Field(description="An agent id (its name), as listed by get_agents.")]
# Fewer than the service's limits.MAX_LIST: a listing must fit in the model's context.
Limit = Annotated[int, Field(ge=1, le=1000, description="How many, newest last (1-1000).")]
Prompt = Annotated[str, Field(description="What the agent should do; passed exactly.")]
TaskContext = Annotated[str, Field(description="Task context put in front of the prompt "
                                               "('' = none).")]


def _d(text: str) -> Any:
    return Field(description=text)


READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Podium's errors reach the model as tool errors with their own message."""
    try:
        yield
    except PodiumError as e:
        raise ToolError(str(e)) from None


def _opt(value: str) -> str | None:
    return value or None


#: The most characters one text (a prompt, an output, a message) has in a reply: a reply carries
#: its JSON twice (structured, and as text), and clients cap what they take (the MCP SDK's HTTP
#: client, 1 MiB an event: a 2 MiB prompt echoed back failed the call after the task was made).
#: A longer one is cut, and the reply's ``cut_in_reply`` gives each cut field's full length
#: (the whole text: ``podium task show`` / ``podium task result --raw``). A multiple of 4, so
#: base64 output stays decodable.
REPLY_TEXT_CHARS = 100_000


def fit_reply(value: Any) -> Any:
    """``value`` (a tool's reply) with every string longer than ``REPLY_TEXT_CHARS`` cut to it;
    a dict holding cut strings says which, with their lengths, in ``cut_in_reply``."""
    if isinstance(value, list):
        return [fit_reply(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    cut: dict[str, int] = {}
    for key, v in value.items():
        if isinstance(v, str) and len(v) > REPLY_TEXT_CHARS:
            out[key], cut[key] = v[:REPLY_TEXT_CHARS], len(v)
        else:
            out[key] = fit_reply(v)
    if cut:
        out["cut_in_reply"] = cut
    return out


def _fitted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a tool) whose reply goes through ``fit_reply``; same signature and schema."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def tool_async(*args: Any, **kwargs: Any) -> Any:
            return fit_reply(await fn(*args, **kwargs))
        return tool_async

    @functools.wraps(fn)
    def tool(*args: Any, **kwargs: Any) -> Any:
        return fit_reply(fn(*args, **kwargs))
    return tool


def build_server(podium: Podium, name: str = "podium") -> MCPServer:
    """The MCP server over ``podium`` (tools, resources); run it with ``serve``."""
    mcp = MCPServer(name, title="Podium", version=__version__, instructions=INSTRUCTIONS,
                    log_level="WARNING")

    # -- the team -------------------------------------------------------------------------
    @mcp.tool(annotations=READ)
    @_fitted
    def get_agents() -> dict[str, Any]:
        """List every agent: id, state (starting, idle, busy, waiting_input, stopped, dead),
        roles, backend, host, pid, current task, heartbeat age in seconds, tasks done, tokens
        and cost. Only live agents (not stopped or dead) take tasks."""
        with _errors():
            t = now()
            return {"agents": [a.to_dict(t) for a in podium.agents()]}

    @mcp.tool(annotations=READ)
    @_fitted
    def get_system_status() -> dict[str, Any]:
        """Podium at a glance: the store, agents by state, tasks by state (blocked, queued,
        running, completed, failed, cancelled), the live agents, and the last event id."""
        with _errors():
            return podium.status().to_dict()

    # -- tasks ----------------------------------------------------------------------------
    @mcp.tool(annotations=WRITE)
    @_fitted
    def assign_task(
        prompt: Prompt,
        agent_id: Annotated[str, _d("Only this agent may take it ('' = any).")] = "",
        role: Annotated[str, _d("Only agents with this role may take it ('' = any).")] = "",
        context: TaskContext = "",
        priority: Annotated[Literal["high", "normal", "low"],
                            _d("high is served first; FIFO within a priority.")] = "normal",
        depends_on: Annotated[list[str], _d("Task ids that must complete first; the task stays "
                                            "blocked until then.")] = [],  # noqa: B006
        timeout_s: Annotated[float | None, Field(
            gt=0, le=limits.MAX_SECONDS,
            description="Kill the run after this many seconds, at most 30 days (none: no "
                        "limit).")] = None,
    ) -> dict[str, Any]:
        """Queue a task and return it at once (its id is "id"; state queued, or blocked while
        dependencies run). An idle agent allowed to take it claims it within milliseconds.
        Follow it with wait_for_task or get_task_result."""
        with _errors():
            t = podium.add_task(prompt, agent=_opt(agent_id), role=_opt(role),
                                context=_opt(context), priority=priority,
                                depends_on=depends_on, timeout_s=timeout_s)
            return t.to_dict(with_output=False)

    @mcp.tool(annotations=WRITE)
    @_fitted
    def broadcast_task(
        prompt: Prompt,
        context: TaskContext = "",
    ) -> dict[str, Any]:
        """Give every live agent its own copy of a task. Returns the broadcast id and one task
        per agent (field target_agent); wait for each with wait_for_task."""
        with _errors():
            tasks = podium.broadcast(prompt, context=_opt(context))
            return {"broadcast_id": tasks[0].broadcast_id,
                    "tasks": [t.to_dict(with_output=False) for t in tasks]}

    @mcp.tool(annotations=READ)
    @_fitted
    def get_task_result(task_id: TaskId) -> dict[str, Any]:
        """A task's result now, finished or not: status (its state), output, error, exit_code,
        agent_id, attempts, duration_ms, times, tokens and cost. output is null until it ran."""
        with _errors():
            return podium.task(task_id).result()

    @mcp.tool(annotations=READ)
    @_fitted
    async def wait_for_task(
        task_id: TaskId,
        timeout_s: Annotated[float, Field(ge=0, le=limits.MAX_SECONDS,
                                          description="Longest wait in seconds, at most 30 "
                                                      "days; 0 checks once.")],
    ) -> dict[str, Any]:
        """Wait until a task is finished (completed, failed or cancelled) or timeout_s passes,
        then return its result as get_task_result does, plus finished (false: still running
        or queued when the time was up; call again to keep waiting)."""
        with _errors():
            t = await _in_daemon_thread(podium.wait, task_id, timeout_s)
            return {"finished": t.state.finished, **t.result()}

    @mcp.tool(annotations=READ)
    @_fitted
    def get_all_results(
        agent_id: Annotated[str, Field(description="Only tasks this agent ran ('' = all).")] = "",
        limit: Limit = 20,
    ) -> dict[str, Any]:
        """The most recent tasks (oldest first, the last `limit`), each with its prompt, state
        and result (output, error, exit_code...). Unfinished tasks have a null output."""
        with _errors():
            return {"tasks": [t.to_dict() for t in podium.tasks(agent=_opt(agent_id),
                                                                   limit=limit, with_output=True)]}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                          idempotent_hint=True, open_world_hint=False))
    @_fitted
    def cancel_task(task_id: TaskId) -> dict[str, Any]:
        """Cancel a task: a blocked or queued one at once, a running one is killed. Tasks that
        depend on it are cancelled too. Returns the task (a finished task is left as it is)."""
        with _errors():
            return podium.cancel(task_id, "cancelled by the orchestrator (MCP)").to_dict()

    # -- messages -------------------------------------------------------------------------
    @mcp.tool(annotations=WRITE)
    @_fitted
    def send_to_agent(agent_id: AgentId, message: Text) -> dict[str, Any]:
        """Put a message in an agent's inbox (an interactive agent in a tmux pane also gets it
        typed in). Returns the message with its id."""
        with _errors():
            return podium.send(agent_id, message, sender="orchestrator").to_dict()

    @mcp.tool(annotations=READ)
    @_fitted
    def get_agent_messages(agent_id: AgentId, limit: Limit = 20) -> dict[str, Any]:
        """An agent's mailbox: inbox (messages sent to it, with read_at once it read them) and
        outbox (reports it sent), the last `limit` of each, oldest first. Marks nothing read."""
        with _errors():
            return {"agent_id": agent_id,
                    "inbox": [m.to_dict() for m in podium.inbox(agent_id, limit=limit)],
                    "outbox": [m.to_dict() for m in podium.outbox(agent_id, limit=limit)]}

    @mcp.tool(annotations=READ)
    @_fitted
    def get_agent_response(agent_id: AgentId) -> dict[str, Any]:
        """The agent's latest response: whichever is newer of its latest outbound message (a
        report it sent, e.g. with 'podium report') and the result of the task it finished last.
        source says which ("message", "result", or null when neither exists); response is that
        message's body or that result's output; message and result hold both candidates."""
        with _errors():
            return podium.response(agent_id).to_dict()

    # -- shared context -------------------------------------------------------------------
    @mcp.tool(annotations=WRITE)
    @_fitted
    def update_shared_context(
        content: Annotated[str, Field(description="The new value (replaces the old one).")],
        key: Annotated[str, Field(description="Which document (default 'shared').")] = "shared",
    ) -> dict[str, Any]:
        """Set a shared context document. Agents that take context get every document in front
        of their prompts from their next task on. Returns the entry with its new version."""
        with _errors():
            return podium.set_context(key, content, by="orchestrator").to_dict()

    @mcp.tool(annotations=READ)
    @_fitted
    def get_shared_context(
        key: Annotated[str, Field(description="One document ('' = all of them).")] = "",
    ) -> dict[str, Any]:
        """Read shared context: one document (key, value, version, updated_at, updated_by), or
        every document when no key is given."""
        with _errors():
            if key:
                return podium.get_context(key).to_dict()
            return {"entries": [e.to_dict() for e in podium.list_context()]}

    # -- memory ---------------------------------------------------------------------------
    @mcp.tool(annotations=READ)
    @_fitted
    def search_memory(
        query: Annotated[str, _d("What to look for, in words (keywords and meaning both "
                                 "count).")],
        k: Annotated[int, Field(ge=1, le=100, description="How many results (1-100).")] = 5,
        kind: Annotated[Literal["", "task", "note", "context"],
                        _d("Only finished tasks, notes or shared context versions ('' = "
                           "all).")] = "",
        role: Annotated[str, _d("Only memories of this role ('' = any).")] = "",
        mode: Annotated[Literal["hybrid", "keyword", "vector"],
                        _d("hybrid ranks by keywords and meaning; or by one of them.")] =
        "hybrid",
    ) -> dict[str, Any]:
        """Search the team's memory: finished tasks (prompt and output), notes and shared
        context versions. Each hit has a score (1.0 best), its keyword and vector parts, where
        it came from (kind, task_id, agent_id, role, source, created_at) and a snippet."""
        with _errors():
            hits = podium.memory_search(query, k=k, kind=_opt(kind), role=_opt(role),
                                        mode=mode)
            return {"hits": [h.to_dict() for h in hits]}

    @mcp.tool(annotations=WRITE)
    @_fitted
    def remember(
        text: Annotated[str, _d("What to remember: a finding, a decision, how something was "
                                "solved.")],
        task_id: Annotated[str, _d("The task it is about ('' = none).")] = "",
        role: Annotated[str, _d("The role it is for ('' = none).")] = "",
    ) -> dict[str, Any]:
        """Add a note to the team's memory (source mcp); agents find it with search_memory and
        in recalled memories. Returns the memories made (a long note is cut into several)."""
        with _errors():
            made = podium.remember(text, task_id=_opt(task_id), role=_opt(role), source="mcp")
            return {"memories": [m.to_dict() for m in made]}

    @mcp.tool(annotations=READ)
    @_fitted
    def similar_tasks(
        task_or_text: Annotated[str, _d("A task id (t-...): tasks like its prompt; or any "
                                        "text: tasks like it.")],
        k: Annotated[int, Field(ge=1, le=100, description="How many results (1-100).")] = 5,
    ) -> dict[str, Any]:
        """Has the team solved this before? The finished tasks most like a task or a text,
        best first: each with its task_id, score, state and a snippet of prompt and output."""
        with _errors():
            return {"hits": [h.to_dict() for h in podium.similar_tasks(task_or_text, k=k)]}

    @mcp.tool(annotations=WRITE)
    @_fitted
    def retry_task(task_id: TaskId) -> dict[str, Any]:
        """Run a failed or cancelled task again, afresh: it is queued (blocked while a
        dependency is still to complete) with attempts, error and output cleared, and the
        tasks that its failure or cancellation cancelled are blocked again, to run after it.
        Returns the task. A task in any other state is an error."""
        with _errors():
            return podium.retry(task_id).to_dict(with_output=False)

    # -- resources ------------------------------------------------------------------------
    @mcp.resource("podium://agents", name="agents", mime_type="application/json",
                  description="Every agent with state, current task and heartbeat (JSON).")
    def agents_resource() -> str:
        with _resource_errors():
            t = now()
            return _dumps([a.to_dict(t) for a in podium.agents()])

    @mcp.resource("podium://status", name="status", mime_type="application/json",
                  description="Agents and tasks by state (JSON), as get_system_status.")
    def status_resource() -> str:
        with _resource_errors():
            return _dumps(podium.status().to_dict())

    @mcp.resource("podium://tasks/{task_id}", name="task", mime_type="application/json",
                  description="One task with its result (JSON).")
    def task_resource(task_id: str) -> str:
        with _resource_errors():
            return _dumps(fit_reply(podium.task(task_id).to_dict()))

    return mcp


async def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a daemon thread of its own, awaited without blocking the event loop.

    Not the SDK's worker threads: a long wait would hold one of its slots, and a pooled thread
    still waiting would keep the process alive after the client has gone (stdin closed).
    """
    done = anyio.Event()
    token = anyio.lowlevel.current_token()
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # handed to the awaiting task
            out["error"] = e
        finally:
            with contextlib.suppress(Exception):  # the loop is gone: nobody waits any more
                anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=target, name="podium-mcp-wait", daemon=True).start()
    await done.wait()
    if "error" in out:
        raise out["error"]
    return out["value"]


@contextlib.contextmanager
def _resource_errors() -> Iterator[None]:
    try:
        yield
    except NotFound as e:
        raise ResourceNotFoundError(str(e)) from None
    except PodiumError as e:
        raise ResourceError(str(e)) from None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2)


def http_app(server: MCPServer, token: str, host: str = "127.0.0.1", port: int = 8765):
    """The streamable HTTP ASGI app at /mcp behind the Host, Origin and bearer-token guard
    (``port``: the one it listens on, which a ``Host`` must name)."""
    from mcp.server.transport_security import TransportSecuritySettings

    from podium.mcp.security import ALLOWED_ORIGINS, Guard, allowed_hosts

    hosts = allowed_hosts(host, port)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=hosts is not None,
        allowed_hosts=hosts or [], allowed_origins=ALLOWED_ORIGINS)
    return Guard(server.streamable_http_app(transport_security=security, host=host), token,
                 hosts)


def serve(podium: Podium, http: bool = False, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until stdin closes (stdio) or the process is stopped (HTTP; port 0: any free)."""
    server = build_server(podium)
    if not http:
        server.run("stdio")
        return
    import socket

    import uvicorn

    from podium.mcp.security import LOOPBACK_NAMES, load_token, token_path

    token = load_token(podium.home)
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when it is
    # (without it, Nagle and delayed ACKs add ~40 ms to every response).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as e:
        sock.close()
        raise InvalidInput(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    port = sock.getsockname()[1]
    app = http_app(server, token, host, port)
    if host not in LOOPBACK_NAMES:
        print(f"podium mcp: warning: listening on {host}, not only on this machine's loopback",
              file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"podium mcp: serving http://{shown}:{port}/mcp (bearer token in "
          f"{token_path(podium.home)}; 'podium mcp token' prints it)", file=sys.stderr,
          flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])
