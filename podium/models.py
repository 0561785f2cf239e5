"""The nouns in the store, as plain dataclasses, and how they render to JSON."""

from __future__ import annotations

import base64
import enum
import re
from dataclasses import dataclass, field
from typing import Any

from podium.clock import iso
from podium.errors import InvalidInput


class TaskState(str, enum.Enum):
    BLOCKED = "blocked"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


class AgentState(str, enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    WAITING_INPUT = "waiting_input"
    STOPPED = "stopped"
    DEAD = "dead"

    @property
    def live(self) -> bool:
        return self not in (AgentState.STOPPED, AgentState.DEAD)


class Priority(int, enum.Enum):
    """Lower value is served first; FIFO within one priority."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: str | int | Priority | None) -> Priority:
        if value is None:
            return cls.NORMAL
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        raise InvalidInput(f"bad priority {value!r}: expected high, normal or low")


def decode_output(data: bytes | None) -> tuple[str | None, str]:
    """Render output bytes for JSON: text when it is valid UTF-8, else base64 (never lossy)."""
    if data is None:
        return None, "utf-8"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def name_key(name: str) -> tuple:
    """The order names are listed in (agents: every listing, every face), numbers as numbers:
    ``agent-2`` before ``agent-10``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"(\d+)", name) if part)


@dataclass
class Agent:
    id: str
    name: str
    roles: list[str]
    backend: str
    host: str
    pid: int | None
    state: AgentState
    current_task: str | None
    registered_at: float
    last_heartbeat: float
    note: str | None = None
    tasks_done: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        d = {
            "id": self.id,
            "name": self.name,
            "roles": self.roles,
            "backend": self.backend,
            "host": self.host,
            "pid": self.pid,
            "state": self.state.value,
            "current_task": self.current_task,
            "registered_at": iso(self.registered_at),
            "last_heartbeat": iso(self.last_heartbeat),
            "note": self.note,
            "tasks_done": self.tasks_done,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "meta": self.meta,
        }
        if now is not None:
            d["heartbeat_age_s"] = round(max(0.0, now - self.last_heartbeat), 3)
        return d


# (slots: a task without a __dict__ is a third smaller and a third quicker to make; an add of
# 10,000 tasks builds 10,000 of them inside its transaction, and each claim builds its own)
@dataclass(slots=True)
class Task:
    id: str
    prompt: str
    context: str | None
    priority: Priority
    target_agent: str | None
    target_role: str | None
    depends_on: list[str]
    state: TaskState
    attempts: int
    max_attempts: int
    retry_on_failure: bool
    timeout_s: float | None
    created_at: float
    agent_id: str | None = None
    lease_expires: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    output: bytes | None = None
    stderr: bytes | None = None
    output_truncated: bool = False
    #: The output (and stderr) was removed by ``podium store prune --keep-results``.
    output_pruned: bool = False
    error: str | None = None
    exit_code: int | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    broadcast_id: str | None = None
    workflow_id: str | None = None  # the workflow whose step this task is (none yet)
    #: Memories to recall into its prompt (None: the agent's setting; see podium.service.recall).
    recall: int | None = None
    seq: int = 0
    #: Set on claimed tasks: a number that changes whenever shared context changes.
    context_generation: int | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return round((self.completed_at - self.started_at) * 1000.0, 3)

    def result(self) -> dict[str, Any]:
        """The result JSON (the journal's fields plus Podium's)."""
        text, encoding = decode_output(self.output)
        d: dict[str, Any] = {
            "task_id": self.id,
            "agent_id": self.agent_id,
            "status": self.state.value,
            "output": text,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "exit_code": self.exit_code,
            "attempts": self.attempts,
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "session_id": self.session_id,
            "output_truncated": self.output_truncated,
        }
        if self.output_pruned:
            d["output_pruned"] = True
        if encoding != "utf-8":
            d["output_encoding"] = encoding
        if self.stderr:
            d["stderr"], stderr_encoding = decode_output(self.stderr)
            if stderr_encoding != "utf-8":
                d["stderr_encoding"] = stderr_encoding
        return d

    def to_dict(self, with_output: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            # (0: not read from the store -- an add's own answer; the store numbers from 1)
            "seq": self.seq or None,
            "prompt": self.prompt,
            "context": self.context,
            "priority": self.priority.name.lower(),
            "target_agent": self.target_agent,
            "target_role": self.target_role,
            "depends_on": self.depends_on,
            "state": self.state.value,
            "agent_id": self.agent_id,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "retry_on_failure": self.retry_on_failure,
            "timeout_s": self.timeout_s,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "lease_expires": iso(self.lease_expires),
            "broadcast_id": self.broadcast_id,
            "workflow_id": self.workflow_id,
        }
        if self.recall is not None:
            d["recall"] = self.recall
        if with_output:
            d["result"] = self.result()
        return d


@dataclass
class TaskSpec:
    """What a caller asks for when adding a task (validated by the service)."""

    prompt: str
    context: str | None = None
    priority: Priority = Priority.NORMAL
    target_agent: str | None = None
    target_role: str | None = None
    depends_on: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    max_attempts: int = 3
    retry_on_failure: bool = False
    broadcast_id: str | None = None
    session_id: str | None = None
    workflow_id: str | None = None
    recall: int | None = None


@dataclass
class Outcome:
    """What a backend run produced; the worker records it as the task's result."""

    status: TaskState  # COMPLETED or FAILED (CANCELLED when the run was cut off by a cancel)
    output: bytes = b""
    stderr: bytes | None = None
    error: str | None = None
    exit_code: int | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    output_truncated: bool = False
    #: When the backend began this run (set by the worker; None keeps the claim time).
    started_at: float | None = None


@dataclass
class Message:
    id: int
    agent_id: str
    direction: str  # "in": to the agent; "out": from the agent
    kind: str  # "message", "report", ...
    body: str
    created_at: float
    sender: str | None = None
    task_id: str | None = None
    delivered_at: float | None = None
    read_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "direction": self.direction,
            "kind": self.kind,
            "body": self.body,
            "sender": self.sender,
            "task_id": self.task_id,
            "created_at": iso(self.created_at),
            "delivered_at": iso(self.delivered_at),
            "read_at": iso(self.read_at),
        }


@dataclass
class Event:
    id: int
    ts: float
    kind: str
    agent_id: str | None
    task_id: str | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "kind": self.kind,
            "agent_id": self.agent_id,
            "task_id": self.task_id,
            "data": self.data,
        }


@dataclass
class ContextEntry:
    key: str
    value: str
    version: int
    updated_at: float
    updated_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "version": self.version,
            "updated_at": iso(self.updated_at),
            "updated_by": self.updated_by,
        }


#: What a memory is: a finished task (a chunk of its prompt and output), a note someone added,
#: or a version of a shared context document.
MEMORY_KINDS = ("task", "note", "context")
#: Who added it: Podium itself (a finished task, a context version), or a note from the CLI, an
#: agent (``podium remember`` inside a task), an MCP client or a Python caller.
MEMORY_SOURCES = ("auto", "cli", "agent", "mcp", "api")


@dataclass
class Memory:
    """A remembered item with its provenance (see ``podium.service.memory``)."""

    id: str
    kind: str  # one of MEMORY_KINDS
    title: str  # one line saying what it is (a task's prompt's first line, a note's)
    text: str  # what is searched, embedded and shown
    source: str  # one of MEMORY_SOURCES
    created_at: float  # when it happened (a task: when it finished)
    task_id: str | None = None
    agent_id: str | None = None
    role: str | None = None
    #: The model of its vector in the vector store; None while it has none.
    model_id: str | None = None
    #: More provenance: a task's state, exit code, tokens and chunk; a context key's version.
    meta: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "title": self.title, "text": self.text,
                "source": self.source, "created_at": iso(self.created_at),
                "task_id": self.task_id, "agent_id": self.agent_id, "role": self.role,
                "model_id": self.model_id, "meta": self.meta}


# -- reports: what the service sums up for every face ------------------------------------------

@dataclass
class Unrunnable:
    """Queued tasks that no live agent can take: how many, whom they wait for, and why."""

    tasks: int
    target_agent: str | None
    target_role: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "target_agent": self.target_agent,
                "target_role": self.target_role, "reason": self.reason}


@dataclass
class TeamStatus:
    """The team at a glance (``podium status``): agents and tasks by state, and the live agents."""

    store_url: str
    agents_by_state: dict[str, int]
    tasks_by_state: dict[str, int]
    live_agents: list[Agent]
    last_event_id: int
    #: What is exposed about the store itself (e.g. readable by other users).
    warnings: list[str]
    #: When it was read (heartbeat ages are relative to it).
    at: float
    #: Queued tasks that wait for nobody (see ``podium.service.readiness``).
    unrunnable: list[Unrunnable] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store_url,
            "agents": {"total": sum(self.agents_by_state.values()), **self.agents_by_state},
            "tasks": self.tasks_by_state,
            "live_agents": [a.to_dict(self.at) for a in self.live_agents],
            "last_event_id": self.last_event_id,
            "warnings": self.warnings,
            "unrunnable": [u.to_dict() for u in self.unrunnable],
        }


@dataclass
class Spend:
    """Tasks, tokens and cost summed over a group of agents."""

    agents: int = 0
    tasks: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def add(self, agent: Agent) -> None:
        self.agents += 1
        self.tasks += agent.tasks_done
        self.tokens_in += agent.tokens_in
        self.tokens_out += agent.tokens_out
        self.cost_usd += agent.cost_usd

    def to_dict(self) -> dict[str, Any]:
        return {"agents": self.agents, "tasks": self.tasks, "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out, "cost_usd": round(self.cost_usd, 6)}


@dataclass
class CostReport:
    """Tokens and cost per agent, per role, per backend and overall (``podium costs``).

    From each agent's counters, which add up every run it finished (retries and runs cut off
    included) and survive its restarts. An agent with several roles counts under each of them;
    one with none under the role ``None``.
    """

    agents: list[Agent]
    roles: dict[str | None, Spend]
    backends: dict[str, Spend]
    total: Spend

    @classmethod
    def of(cls, agents: list[Agent]) -> CostReport:
        roles: dict[str | None, Spend] = {}
        backends: dict[str, Spend] = {}
        total = Spend()
        for a in agents:
            for group in [*(roles.setdefault(r, Spend()) for r in (a.roles or (None,))),
                          backends.setdefault(a.backend, Spend()), total]:
                group.add(a)
        return cls(agents, dict(sorted(roles.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))),
                   dict(sorted(backends.items())), total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agents": [{"agent": a.id, "backend": a.backend, "roles": a.roles,
                        "state": a.state.value, "tasks": a.tasks_done, "tokens_in": a.tokens_in,
                        "tokens_out": a.tokens_out, "cost_usd": a.cost_usd}
                       for a in self.agents],
            "roles": [{"role": r, **s.to_dict()} for r, s in self.roles.items()],
            "backends": [{"backend": b, **s.to_dict()} for b, s in self.backends.items()],
            "total": self.total.to_dict(),
        }


@dataclass
class AgentResponse:
    """An agent's latest response: the newer of its latest outbound message (a report) and the
    result of the task it finished last."""

    agent_id: str
    #: The latest outbound message, and the task it finished last (either may be missing).
    message: Message | None
    last_task: Task | None

    @property
    def source(self) -> str | None:
        """``"message"``, ``"result"``, or None (neither yet)."""
        last = self.last_task
        if self.message is not None and (last is None or last.completed_at is None
                                         or self.message.created_at >= last.completed_at):
            return "message"
        return "result" if last is not None else None

    def to_dict(self) -> dict[str, Any]:
        result = self.last_task.result() if self.last_task is not None else None
        source = self.source
        response: Any = None
        if source == "message":
            assert self.message is not None
            response = self.message.body
        elif result is not None:
            response = result["output"]
        return {
            "agent_id": self.agent_id,
            "source": source,
            "response": response,
            "message": self.message.to_dict() if self.message is not None else None,
            "result": result,
        }
