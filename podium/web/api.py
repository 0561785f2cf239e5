"""The JSON API under ``/api``: each route reads its input, makes one or a few service calls on
a worker thread, and renders what they return (``podium.web.payloads``); no logic of its own.

Errors are ``{"error": message}``: an unknown id 404, bad input 422 (``InvalidInput``, a
backend that cannot run), a conflict with the task's state 409, a body too large 413, the store
unavailable for now 503 (and semantic memory that cannot work here: its model or vector store
missing, ``MemoryUnavailable``). Every route is listed in ``podium.web.openapi`` (``GET
/api/openapi.json``).
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from podium import __version__
from podium.clock import now
from podium.errors import InvalidInput
from podium.models import TaskState
from podium.service import Podium
from podium.web import params, payloads
from podium.web.calls import ServiceCalls
from podium.web.jsonio import (
    Endpoint,
    answers,
    blank_none,
    boolean,
    json_body,
    json_int,
    json_response,
    number_or_none,
    or_default,
    priority_of,
    query_int,
    query_text,
    task_ids,
)
from podium.web.security import csrf_token

#: Who the dashboard's messages and context edits are from.
SENDER = "web"
#: How many of an agent's tasks its page shows, and how many of a task's neighbours.
AGENT_TASKS = 50
NEIGHBOURS = 100

# -- the routes ---------------------------------------------------------------------------

class Api:
    """The API's routes over one service (its calls made through ``calls``)."""

    def __init__(self, podium: Podium, calls: ServiceCalls, token: str):
        self.podium = podium
        self.call = calls.run
        self.csrf = csrf_token(token)

    def routes(self) -> list[BaseRoute]:
        from podium.web import control, openapi

        team = control.TeamControl(self.podium, self.call)
        table: list[tuple[str, str, Endpoint]] = [
            ("GET", "/api/session", self.session),
            ("GET", "/api/status", self.status),
            ("GET", "/api/agents", self.agents),
            ("GET", "/api/agents/{agent_id}", self.agent),
            ("GET", "/api/agents/{agent_id}/log", self.agent_log),
            ("GET", "/api/agents/{agent_id}/pane", team.pane),
            ("POST", "/api/agents/{agent_id}/messages", self.send),
            ("POST", "/api/team/up", team.up),
            ("POST", "/api/team/down", team.down),
            ("GET", "/api/queue", self.queue),
            ("GET", "/api/tasks", self.tasks),
            ("POST", "/api/tasks", self.add_task),
            ("GET", "/api/tasks/{task_id}", self.task),
            ("GET", "/api/tasks/{task_id}/output", self.task_output),
            ("POST", "/api/tasks/{task_id}/cancel", self.cancel),
            ("POST", "/api/tasks/{task_id}/retry", self.retry),
            ("POST", "/api/broadcast", self.broadcast),
            ("GET", "/api/context", self.context),
            ("PUT", "/api/context/{key:path}", self.set_context),
            ("GET", "/api/costs", self.costs),
            ("GET", "/api/costs/series", self.cost_series),
            ("GET", "/api/events", self.events),
            ("GET", "/api/memory/search", self.memory_search),
            ("GET", "/api/memory/stats", self.memory_stats),
        ]
        document = openapi.document([(m, p) for m, p, _ in table])

        async def spec(request: Request) -> Response:
            return json_response(document)
        table.append(("GET", "/api/openapi.json", spec))
        return [Route(path, answers(endpoint), methods=[method])
                for method, path, endpoint in table]

    # -- the session and the team ---------------------------------------------------------
    async def session(self, request: Request) -> Response:
        store, _ = await self.call(self.podium.shareable_url)
        return json_response({"csrf": self.csrf, "version": __version__, "store": store,
                              "events": "/api/events/ws"})

    async def status(self, request: Request) -> Response:
        return json_response(payloads.status(await self.call(self.podium.status)))

    async def agents(self, request: Request) -> Response:
        def read() -> tuple[list, float]:
            found = self.podium.agents()
            return found, now()
        found, at = await self.call(read)
        return json_response({"agents": [payloads.agent(a, at) for a in found]})

    async def agent(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]

        def read() -> dict[str, Any]:
            a = self.podium.agent(agent_id)
            at = now()
            return {"agent": payloads.agent(a, at),
                    "tasks": [payloads.task(t) for t in
                              self.podium.tasks(agent=a.id, limit=AGENT_TASKS)],
                    "inbox": [payloads.message(m) for m in self.podium.inbox(a.id)],
                    "outbox": [payloads.message(m) for m in self.podium.outbox(a.id)]}
        return json_response(await self.call(read))

    async def agent_log(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        lines = query_int(request, "lines", params.AGENT_LOG_LINES)

        def read() -> str:
            return b"".join(self.podium.agent_log_text(agent_id, lines or 0)).decode(
                "utf-8", "replace")
        return json_response({"text": await self.call(read)})

    async def send(self, request: Request) -> Response:
        body = await json_body(request, {"body"})
        msg = await self.call(self.podium.send, request.path_params["agent_id"],
                              body.get("body"), SENDER)
        return json_response(payloads.message(msg), 201)

    # -- tasks ----------------------------------------------------------------------------
    async def queue(self, request: Request) -> Response:
        limit = query_int(request, "limit", params.QUEUE_LIMIT)
        found = await self.call(self.podium.queue, limit)
        return json_response({state.value: [payloads.task(t) for t in found[state]]
                              for state in (TaskState.RUNNING, TaskState.QUEUED,
                                            TaskState.BLOCKED)})

    async def tasks(self, request: Request) -> Response:
        limit = query_int(request, "limit", params.TASKS_LIMIT) or 50
        before = query_int(request, "before", params.TASKS_BEFORE)
        found = await self.call(
            functools.partial(self.podium.tasks, query_text(request, "state"),
                              query_text(request, "agent"), limit, before=before,
                              role=query_text(request, "role"), text=query_text(request, "q")))
        newest_first = list(reversed(found))
        more = len(found) == limit and found[0].seq > 1
        return json_response({"tasks": [payloads.task(t) for t in newest_first],
                              "next": found[0].seq if more else None})

    async def add_task(self, request: Request) -> Response:
        body = await json_body(request, {"prompt", "agent", "role", "priority", "depends_on",
                                         "timeout_s", "context", "max_attempts", "retry"})
        kwargs: dict[str, Any] = {
            "agent": blank_none(body.get("agent")), "role": blank_none(body.get("role")),
            "priority": priority_of(body.get("priority")),
            "depends_on": task_ids(body.get("depends_on")),
            "timeout_s": number_or_none(body.get("timeout_s"), "timeout_s"),
            "context": blank_none(body.get("context")),
            "retry": boolean(body.get("retry"), "retry")}
        if body.get("max_attempts") is not None:
            kwargs["max_attempts"] = json_int(body["max_attempts"])
        t = await self.call(functools.partial(self.podium.add_task, body.get("prompt"),
                                              **kwargs))
        return json_response({"task": payloads.task(t)}, 201)

    async def broadcast(self, request: Request) -> Response:
        body = await json_body(request, {"prompt", "context"})
        found = await self.call(functools.partial(self.podium.broadcast, body.get("prompt"),
                                                  context=blank_none(body.get("context"))))
        return json_response({"broadcast_id": found[0].broadcast_id,
                              "tasks": [payloads.task(t) for t in found]}, 201)

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]

        def read() -> dict[str, Any]:
            t = self.podium.task(task_id)
            dependents = self.podium.dependents(t.id, NEIGHBOURS)
            d = payloads.task(t, with_output=True)
            d["dependents"] = dependents
            d["states"] = {k: v.value for k, v in self.podium.task_states(
                [*t.depends_on[:NEIGHBOURS], *dependents]).items()}
            return d
        return json_response({"task": await self.call(read)})

    async def task_output(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]

        def read() -> dict[str, Any]:
            parts: dict[str, list[bytes]] = {"out": [], "err": [], "note": []}
            for piece in self.podium.task_log(task_id):
                parts[piece.stream].append(piece.data)
            t = self.podium.task(task_id)
            return {**payloads.output(b"".join(parts["out"]) or None,
                                      b"".join(parts["err"]) or None),
                    "notes": [n.decode("utf-8", "replace") for n in parts["note"]],
                    "state": t.state.value}
        return json_response(await self.call(read))

    async def cancel(self, request: Request) -> Response:
        body = await json_body(request, {"reason"})
        reason = or_default(body.get("reason"), "cancelled from the web dashboard")
        t = await self.call(self.podium.cancel, request.path_params["task_id"], reason)
        return json_response({"task": payloads.task(t)})

    async def retry(self, request: Request) -> Response:
        await json_body(request, set())
        t = await self.call(self.podium.retry, request.path_params["task_id"])
        return json_response({"task": payloads.task(t)})

    # -- context, costs, events -----------------------------------------------------------
    async def context(self, request: Request) -> Response:
        found = await self.call(self.podium.list_context)
        return json_response({"context": [payloads.context_entry(e) for e in found]})

    async def set_context(self, request: Request) -> Response:
        body = await json_body(request, {"value"})
        if "value" not in body:
            raise InvalidInput("the body needs a value")
        entry = await self.call(self.podium.set_context, request.path_params["key"],
                                body["value"], SENDER)
        return json_response({"entry": payloads.context_entry(entry)})

    async def costs(self, request: Request) -> Response:
        return json_response((await self.call(self.podium.costs)).to_dict())

    async def cost_series(self, request: Request) -> Response:
        bucket_s = query_int(request, "bucket_s", params.COST_BUCKET_S)
        buckets = query_int(request, "buckets", params.COST_BUCKETS)
        return json_response((await self.call(self.podium.cost_series, bucket_s,
                                              buckets)).to_dict())

    async def events(self, request: Request) -> Response:
        after = query_int(request, "after", params.EVENTS_AFTER) or 0
        limit = query_int(request, "limit", params.EVENTS_LIMIT) or 200
        found = await self.call(self.podium.events, after, limit, query_text(request, "task"))
        return json_response({"events": [payloads.event(e) for e in found],
                              "cursor": found[-1].id if found else after})

    # -- semantic memory ------------------------------------------------------------------
    async def memory_search(self, request: Request) -> Response:
        k = query_int(request, "k", params.MEMORY_K)
        assert k is not None  # (it has a default)
        found = await self.call(functools.partial(
            self.podium.memory_search, request.query_params.get("q", ""),
            k=k, kind=query_text(request, "kind"), role=query_text(request, "role"),
            since=query_text(request, "since"), mode=query_text(request, "mode") or "hybrid"))
        return json_response({"hits": [payloads.memory_hit(h) for h in found]})

    async def memory_stats(self, request: Request) -> Response:
        stats = await self.call(self.podium.memory_stats)
        return json_response(stats.to_dict())
