"""The API's OpenAPI 3 document (``GET /api/openapi.json``): every route, its parameters, body
and answers, declared here once; ``document`` checks that the routes served and the routes
declared are the same (a route added without its description fails at start-up, and in tests).
"""

from __future__ import annotations

import re
from typing import Any

from podium import __version__
from podium.models import TaskState
from podium.web import params as P

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
NUM: Schema = {"type": "number"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
BOOL_OR_NULL: Schema = {"type": ["boolean", "null"]}
OBJ: Schema = {"type": "object"}
IDS: Schema = {"type": "array", "items": STR}
NULL_STR: Schema = {"type": ["string", "null"]}
NULL_NUM: Schema = {"type": ["number", "null"]}
PRIORITY: Schema = {"oneOf": [{"enum": ["high", "normal", "low"]}, {"enum": [0, 1, 2]},
                              {"type": "null"}],
                    "description": "high, normal (the default) or low; or 0, 1, 2 for those"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": False}


def _list(key: str, item: Schema) -> Schema:
    return {"type": "object", "properties": {key: {"type": "array", "items": item}}}


COMPONENTS: dict[str, Schema] = {
    "Error": {"type": "object", "properties": {"error": STR}, "required": ["error"]},
    "Agent": {"type": "object", "description": "An agent (times in Unix seconds), with "
              "heartbeat_age_s, current_task, tokens and cost_usd."},
    "Task": {"type": "object", "description": "A task (times in Unix seconds): prompt, "
             "context, priority, target, depends_on, state, attempts, tokens, cost_usd, "
             "duration_s; seq, its place in the history (the cursor of 'before'; null in "
             "the answer of an add, which does not read it back); a single task also output, "
             "stderr (base64 when output_encoding says so), result, dependents and the "
             "states of its neighbours."},
    "Message": {"type": "object"},
    "ContextEntry": {"type": "object", "properties": {"key": STR, "value": STR, "version": INT,
                                                      "updated_at": NUM,
                                                      "updated_by": NULL_STR}},
    "Event": {"type": "object", "properties": {"id": INT, "ts": STR, "at": NUM, "kind": STR,
                                               "agent_id": NULL_STR, "task_id": NULL_STR,
                                               "data": OBJ}},
    "MemoryHit": {"type": "object", "description": "A memory found, as 'podium memory search "
                  "--json' gives it (created_at in Unix seconds): its score (0-1, best first), "
                  "keyword (the share of the query's words it holds) and vector (cosine; null: "
                  "not among the nearest) with their ranks, and the snippet.",
                  "properties": {"id": STR, "kind": {"enum": ["task", "note", "context"]},
                                 "title": STR, "text": STR, "snippet": STR, "source": STR,
                                 "created_at": NUM, "task_id": NULL_STR, "agent_id": NULL_STR,
                                 "role": NULL_STR, "model_id": NULL_STR, "meta": OBJ,
                                 "score": NUM, "keyword": NULL_NUM, "vector": NULL_NUM,
                                 "keyword_rank": {"type": ["integer", "null"]},
                                 "vector_rank": {"type": ["integer", "null"]}}},
}

PATH_PARAMS = {"agent_id": "An agent's id (its name).",
               "task_id": "A task's id, or a unique prefix of it.",
               "key": "A shared context key."}


def _backend() -> Schema:
    """The backends registered here (blank or null: shell)."""
    from podium.agents import backends

    return {"enum": [*backends.available(), "", None],
            "description": "A registered backend ('podium backends'); blank or null: shell"}


def _options_by_backend() -> list[Schema]:
    """For each registered backend, the options it takes (``podium backends``), as
    conditions on the body of ``/api/team/up``: ``if`` the body names that backend (shell:
    or none), ``then`` its options are those."""
    from podium.agents import backends

    conditions: list[Schema] = []
    for name in backends.available():
        try:
            declared = list(backends.load(name).options)
        except Exception:  # (a plugin that cannot be loaded: its options are not stated)
            continue
        names = {"enum": ["shell", "", None]} if name == "shell" else {"const": name}
        conditions.append({
            "if": {"properties": {"backend": names},
                   **({} if name == "shell" else {"required": ["backend"]})},
            "then": {"properties": {"options": {
                "type": ["object", "null"], "additionalProperties": False,
                "properties": {o.name: o.json_schema() for o in declared}}}}})
    return conditions


# (method, path): (summary, query parameters {name: (schema, help)}, body schema or None,
# success status, success schema)
ROUTES: dict[tuple[str, str], tuple[str, dict[str, tuple[Schema, str]], Schema | None, int,
                                    Schema]] = {
    ("GET", "/api/session"): (
        "The page's session: its CSRF header value, Podium's version, the store", {}, None,
        200, _obj({"csrf": STR, "version": STR, "store": STR, "events": STR})),
    ("GET", "/api/status"): (
        "The team at a glance (as 'podium status --json')", {}, None, 200, OBJ),
    ("GET", "/api/agents"): ("Every agent", {}, None, 200, _list("agents", _ref("Agent"))),
    ("GET", "/api/agents/{agent_id}"): (
        "One agent with its recent tasks (up to 50), inbox and outbox", {}, None, 200,
        {"type": "object", "properties": {"agent": _ref("Agent"),
                                          "tasks": {"type": "array", "items": _ref("Task")},
                                          "inbox": {"type": "array", "items": _ref("Message")},
                                          "outbox": {"type": "array",
                                                     "items": _ref("Message")}}}),
    ("GET", "/api/agents/{agent_id}/log"): (
        "The end of the agent's log (a background agent's)",
        {"lines": (P.AGENT_LOG_LINES.schema(), "How many lines")}, None, 200, _obj({"text": STR})),
    ("GET", "/api/agents/{agent_id}/pane"): (
        "The text of the agent's tmux pane (404 when it has none)", {}, None, 200,
        _obj({"text": STR})),
    ("POST", "/api/agents/{agent_id}/messages"): (
        "Send the agent a message (typed into its pane when it is interactive)", {},
        _obj({"body": P.TEXT}, ("body",)), 201, _ref("Message")),
    ("POST", "/api/team/up"): (
        "Start agents on this host, as 'podium up'", {},
        {**_obj({"n": P.AGENT_COUNT, "backend": _backend(), "roles": P.OPTIONAL_NAMES,
                 "options": {"type": ["object", "null"],
                             "description": "The backend's options ('podium backends'), each "
                                            "a JSON value of its type or its text"},
                 "prefix": P.PREFIX,
                 "lease_s": P.LEASE_SECONDS,
                 "workdir": {**P.OPTIONAL_TEXT, "description": "An existing directory "
                                                               "(blank or null: the "
                                                               "server's)"}}),
         "allOf": _options_by_backend()}, 201,
        {"type": "object", "properties": {"started": IDS,
                                          "agents": {"type": "array",
                                                     "items": _ref("Agent")}}}),
    ("POST", "/api/team/down"): (
        "Stop this host's agents (all, or those named), as 'podium down'", {},
        _obj({"agents": P.AGENTS_TO_STOP, "drain": BOOL_OR_NULL,
              "timeout_s": P.WAIT_SECONDS}), 200, _obj({"stopped": IDS})),
    ("GET", "/api/queue"): (
        "Running, queued and blocked tasks, each in the order they run",
        {"limit": (P.QUEUE_LIMIT.schema(), "At most this many of each")}, None, 200,
        {"type": "object", "properties": {
            k: {"type": "array", "items": _ref("Task")} for k in ("running", "queued",
                                                                 "blocked")}}),
    ("GET", "/api/tasks"): (
        "Task history, newest first, paged by cursor",
        {"state": ({"enum": [s.value for s in TaskState]}, "Only this state"),
         "agent": (P.NAME, "Only tasks this agent ran"),
         "role": (P.NAME, "Only tasks for this role"),
         "q": (P.NAME, "Only tasks whose prompt holds this text (ASCII letters in any case)"),
         "before": (P.TASKS_BEFORE.schema(), "The page after the one whose 'next' this is"),
         "limit": (P.TASKS_LIMIT.schema(), "Tasks per page")}, None, 200,
        {"type": "object", "properties": {"tasks": {"type": "array", "items": _ref("Task")},
                                          "next": {"type": ["integer", "null"]}}}),
    ("POST", "/api/tasks"): (
        "Add a task", {},
        _obj({"prompt": P.TEXT, "agent": P.OPTIONAL_NAME, "role": P.OPTIONAL_NAME,
              "priority": PRIORITY, "depends_on": P.OPTIONAL_NAMES, "timeout_s": P.SECONDS,
              "context": P.OPTIONAL_TEXT, "max_attempts": P.MAX_ATTEMPTS,
              "retry": BOOL_OR_NULL}, ("prompt",)), 201,
        {"type": "object", "properties": {"task": _ref("Task")}}),
    ("GET", "/api/tasks/{task_id}"): (
        "One task with its output, result, dependencies and dependents", {}, None, 200,
        {"type": "object", "properties": {"task": _ref("Task")}}),
    ("GET", "/api/tasks/{task_id}/output"): (
        "The task's output: stored once it finished, streamed so far while it runs", {},
        None, 200, {"type": "object", "properties": {
            "output": NULL_STR, "output_encoding": STR, "stderr": NULL_STR,
            "stderr_encoding": STR, "notes": IDS, "state": STR}}),
    ("POST", "/api/tasks/{task_id}/cancel"): (
        "Cancel a task (and its dependents)", {}, _obj({"reason": P.OPTIONAL_TEXT}), 200,
        {"type": "object", "properties": {"task": _ref("Task")}}),
    ("POST", "/api/tasks/{task_id}/retry"): (
        "Run a failed or cancelled task again (409 in any other state)", {}, _obj({}), 200,
        {"type": "object", "properties": {"task": _ref("Task")}}),
    ("POST", "/api/broadcast"): (
        "One task per live agent", {}, _obj({"prompt": P.TEXT, "context": P.OPTIONAL_TEXT},
                                            ("prompt",)), 201,
        {"type": "object", "properties": {"broadcast_id": STR,
                                          "tasks": {"type": "array", "items": _ref("Task")}}}),
    ("GET", "/api/context"): ("Every shared context entry", {}, None, 200,
                              _list("context", _ref("ContextEntry"))),
    ("PUT", "/api/context/{key}"): (
        "Set a shared context entry (a new version)", {}, _obj({"value": P.ANY_TEXT}, ("value",)),
        200, {"type": "object", "properties": {"entry": _ref("ContextEntry")}}),
    ("GET", "/api/costs"): ("Tokens and cost per agent, role and backend, and in all", {},
                            None, 200, OBJ),
    ("GET", "/api/costs/series"): (
        "Cost over time, in all, per agent and per role",
        {"bucket_s": (P.COST_BUCKET_S.schema(), "Seconds per bucket"),
         "buckets": (P.COST_BUCKETS.schema(), "How many buckets, the last holding now")},
        None, 200, {"type": "object", "properties": {
            "bucket_s": INT, "points": {"type": "array", "items": OBJ},
            "by_agent": OBJ, "by_role": OBJ}}),
    ("GET", "/api/events"): (
        "Events after a cursor, oldest first",
        {"after": (P.EVENTS_AFTER.schema(), "After this event id"),
         "limit": (P.EVENTS_LIMIT.schema(), "At most this many"),
         "task": (P.NAME, "Only this task's events")}, None, 200,
        {"type": "object", "properties": {"events": {"type": "array", "items": _ref("Event")},
                                          "cursor": INT}}),
    ("GET", "/api/memory/search"): (
        "The memories most relevant to a text, best first (as 'podium memory search'); 503 "
        "when semantic memory cannot work here (its model missing)",
        {"q": (P.TEXT, "What to look for"),
         "k": (P.MEMORY_K.schema(), "How many"),
         "kind": ({"enum": ["task", "note", "context"]}, "Only memories of this kind"),
         "role": (P.NAME, "Only memories of this role"),
         "since": (P.SINCE, "Only memories since: an age (7d, 12h) or an ISO date or time"),
         "mode": ({"enum": ["hybrid", "keyword", "vector"]},
                  "Rank by keywords and meaning (hybrid, the default), or by one of them")},
        None, 200, _list("hits", _ref("MemoryHit"))),
    ("GET", "/api/memory/stats"): (
        "What is remembered, by kind; embedded by which model; the vector store and sizes (as "
        "'podium memory stats --json')", {}, None, 200, OBJ),
    ("GET", "/api/events/ws"): (
        "WebSocket: live events. Text frames {\"rows\": [[id, at, kind, agent_id, task_id, "
        "data], ...], \"cursor\": N} (an event as an array; at: Unix seconds); with after=N, "
        "every event after N first",
        {"after": (P.STREAM_AFTER.schema(), "The last event id the page has (omitted: from now)"),
         "token": (STR, "The token, when no cookie is sent")},
        None, 101, OBJ),
    ("GET", "/api/openapi.json"): ("This document", {}, None, 200, OBJ),
}

#: The query parameters that must be given: (method, path, name).
REQUIRED = {("GET", "/api/memory/search", "q")}

_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def openapi_path(path: str) -> str:
    """A route's path as OpenAPI writes it (``{key:path}`` -> ``{key}``)."""
    return _CONVERTER.sub(r"{\1}", path)


def _operation(method: str, path: str) -> dict[str, Any]:
    summary, query, body, status, schema = ROUTES[(method, path)]
    params = [{"name": name, "in": "path", "required": True, "schema": P.NAME,
               "description": PATH_PARAMS[name]} for name in re.findall(r"\{(\w+)\}", path)]
    # (an empty value, as a form sends for an empty field, is taken as not given)
    params += [{"name": name, "in": "query", "required": (method, path, name) in REQUIRED,
                "schema": s if (method, path, name) in REQUIRED else
                {"anyOf": [s, {"const": ""}]},
                "description": text if (method, path, name) in REQUIRED else
                f"{text} (empty: not given)"} for name, (s, text) in query.items()]
    errors = {"401": "No or a wrong token", "403": "Wrong Origin, or no CSRF header",
              "404": "Unknown id", "409": "Conflict with the current state",
              "421": "Wrong Host", "422": "Bad input",
              "503": "The store (or semantic memory) is unavailable here for now"}
    if status == 101:  # (the WebSocket)
        errors["426"] = "Not a WebSocket handshake (no 'Upgrade: websocket')"
    op: dict[str, Any] = {
        "summary": summary, "parameters": params,
        "responses": {str(status): {"description": "OK", "content": {
            "application/json": {"schema": schema}}},
            **{code: {"description": text, "content": {"application/json": {
                "schema": _ref("Error")}}} for code, text in errors.items()}}}
    if body is not None:
        op["requestBody"] = {"required": bool(body.get("required")), "content": {
            "application/json": {"schema": body}}}
        op["parameters"].append({"name": "X-Podium-CSRF", "in": "header", "required": True,
                                 "schema": STR, "description": "csrf from GET /api/session"})
    return op


def document(routes: list[tuple[str, str]]) -> dict[str, Any]:
    """The document for the routes served (``(method, path)``, Starlette's spelling)."""
    served = {(m, openapi_path(p)) for m, p in routes} | {("GET", "/api/events/ws"),
                                                           ("GET", "/api/openapi.json")}
    if served != set(ROUTES):
        raise AssertionError(f"the OpenAPI document and the routes differ: "
                             f"{sorted(served ^ set(ROUTES))}")
    paths: dict[str, dict[str, Any]] = {}
    for method, path in ROUTES:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Podium web dashboard API", "version": __version__,
                 "description": "The dashboard's JSON API. Authenticate with the cookie the "
                                "printed link sets, or 'Authorization: Bearer TOKEN'; POST "
                                "and PUT need Content-Type: application/json and the "
                                "X-Podium-CSRF header. Times are Unix seconds."},
        "paths": paths,
        "components": {"schemas": COMPONENTS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                           "cookie": {"type": "apiKey", "in": "cookie",
                                                      "name": "podium_token"}}},
        "security": [{"bearer": []}, {"cookie": []}],
    }
