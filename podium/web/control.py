"""Starting and stopping agents from the dashboard (``podium up`` / ``podium down`` through
``podium.supervisor``, as the CLI does), and the read-only view of an agent's tmux pane.

Workers that ``up`` starts are children of the server: a thread per worker waits for it to
exit, so that none is left a zombie (which ``podium down`` from another process would take for
a live worker until its timeout).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from podium import limits
from podium.agents import backends
from podium.agents.backends import Option, Options
from podium.clock import now
from podium.errors import InvalidInput, NotFound, PodiumError
from podium.models import Agent
from podium.service import Podium
from podium.web import payloads
from podium.web.jsonio import (
    blank_none,
    boolean,
    json_body,
    json_int,
    json_response,
    number_or_none,
    or_default,
)

Call = Callable[..., Awaitable[Any]]

#: ``down``'s wait before it kills, when the request gives none (the CLI's default).
DOWN_TIMEOUT_S = 15.0


def backend_options(value: Any, declared: Options) -> list[str]:
    """Backend options as ``podium up --option`` takes them (``KEY=VALUE``), from a JSON
    object (``{"model": "x", "temperature": 0.2}``): each value as ``Option.text_of_json``
    reads it; an unknown key is left for the backend's own check to refuse."""
    value = blank_none(value)
    if value is None:
        return []
    if not isinstance(value, dict):
        raise InvalidInput(f"options must be an object of backend options, got "
                           f"{type(value).__name__}")
    by_name = {o.name: o for o in declared}
    out = []
    for key, v in value.items():
        key = limits.name(key, "backend option")
        option = by_name.get(key, Option(key, str, None, ""))
        out.append(f"{key}={option.text_of_json(v)}")
    return out


def _reap_when_done(agents: list[Agent]) -> None:
    """Wait, on a thread each, for the workers this process started, so none stays a zombie."""
    def reap(pid: int) -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # (reaped already: podium.supervisor.down does it for those it stops)

    for a in agents:
        if a.pid:
            threading.Thread(target=reap, args=(a.pid,), name=f"podium-reap-{a.pid}",
                             daemon=True).start()


class TeamControl:
    """``/api/team/up``, ``/api/team/down`` and ``/api/agents/{id}/pane``."""

    def __init__(self, podium: Podium, call: Call):
        self.podium = podium
        self.call = call

    async def up(self, request: Request) -> Response:
        body = await json_body(request, {"n", "backend", "roles", "options", "prefix",
                                         "lease_s", "workdir"})
        n = limits.agent_count(json_int(body.get("n", 1)))
        backend = limits.name(or_default(body.get("backend"), "shell"), "backend")
        roles = or_default(body.get("roles"), [])
        if not isinstance(roles, list):
            raise InvalidInput(f"roles must be a list of role names, got {type(roles).__name__}")
        roles = [limits.name(r, "role") for r in roles]
        raw_options = body.get("options")
        prefix = limits.agent_prefix(or_default(body.get("prefix"), "agent"))
        lease = number_or_none(body.get("lease_s"), "lease_s")
        lease_s = None if lease is None else limits.lease(lease)[0]
        workdir = blank_none(body.get("workdir"))
        if workdir is not None:
            workdir = limits.given(workdir, "workdir")
            if not Path(workdir).is_dir():
                raise InvalidInput(f"workdir {workdir!r} is not a directory")

        def start() -> list[Agent]:
            from podium.supervisor import up

            cls = backends.load(backend)
            options = backend_options(raw_options, cls.options)
            # As 'podium up' does: options checked, and whether the backend can run here
            # (cheap: no model loaded, no network), before any worker or log is made.
            cls(backends.parse_options(options), Path(workdir or ".")).preflight()
            started = up(self.podium, n, backend, roles, options, prefix, lease_s, workdir)
            _reap_when_done(started)
            return started
        started = await self.call(start)
        at = now()
        return json_response({"started": [a.id for a in started],
                              "agents": [payloads.agent(a, at) for a in started]}, 201)

    async def down(self, request: Request) -> Response:
        body = await json_body(request, {"agents", "drain", "timeout_s"})
        names = body.get("agents")
        if names is not None:
            if not isinstance(names, list):
                raise InvalidInput(f"agents must be a list of agent names or null, got "
                                   f"{type(names).__name__}")
            if not names:  # (an empty list is no way to say "all": that is null)
                raise InvalidInput("agents is empty: name at least one agent, or send null "
                                   "to stop every agent of this host")
            names = [limits.name(nm, "agent name") for nm in names]
        drain = boolean(body.get("drain"), "drain")
        timeout = number_or_none(body.get("timeout_s"), "timeout_s")
        timeout_s = DOWN_TIMEOUT_S if timeout is None else limits.wait_timeout(timeout)
        assert timeout_s is not None

        def stop() -> list[str]:
            from podium.supervisor import down

            return down(self.podium, timeout_s, drain, names)
        return json_response({"stopped": await self.call(stop)})

    async def pane(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]

        def capture() -> str:
            from podium.tmux import Tmux

            pane, socket = self.podium.agent_pane(agent_id)
            try:
                return Tmux(socket_path=socket).capture(pane).rstrip("\n") + "\n"
            except PodiumError as e:
                raise NotFound(f"the pane of agent {agent_id} cannot be read: {e}") from None
        return json_response({"text": await self.call(capture)})
