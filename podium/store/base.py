"""The Store interface: the single source of truth behind every face.

A store keeps agents, tasks (with their dependencies and results), messages, shared context
and the append-only event log, and wakes waiting processes when something they care about
changes. Every state change of a task happens inside one store transaction, together with the
event that records it, so readers following the event log never see a change without its event.

Implementations: ``SQLiteStore`` (embedded, default) and ``PostgresStore`` (several hosts). One
contract test suite (``tests/contract/test_store_contract.py``) runs against each.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from podium.models import (
    Agent,
    AgentState,
    ContextEntry,
    Event,
    Memory,
    Message,
    Outcome,
    Task,
    TaskSpec,
    TaskState,
)


class Waiter(Protocol):
    """A wake-up subscription: ``wait`` returns True when poked, False on timeout."""

    def wait(self, timeout: float | None) -> bool: ...

    def poke(self) -> None: ...

    def handed_over(self) -> bool:
        """Whether a wake-up since the last call said a task was handed to this agent. Only a
        hint: ``claim_batch(..., handed=True)`` reads from the store what, if anything, was."""
        ...

    def close(self) -> None: ...


@dataclass
class Finish:
    """A result to record for a claimed task (``attempt`` identifies the claim)."""

    task_id: str
    attempt: int
    outcome: Outcome


@dataclass
class HeartbeatReply:
    """What a heartbeat learned about the agent's current task (None when it has none)."""

    task_state: TaskState | None = None
    lost: bool = False  # the claim is no longer ours (lease expired and taken, or cancelled)
    #: (agent id, task id) of running tasks this heartbeat took from agents found gone: the
    #: caller ends what they may have left running on this host (``podium.orphans``).
    taken: list[tuple[str, str]] = field(default_factory=list)
    #: Asked for with ``roles``: whether a task waited that the agent may take (queued for it,
    #: its roles or anyone, or handed to it); None when not asked.
    work_waiting: bool | None = None
    #: An idle beat that this host's daemon stood for (``podium.store.hostbeats``): the next
    #: may wait up to ``next_idle_beat_s`` (None: the usual interval).
    next_idle_beat_s: float | None = None


@dataclass
class Pruned:
    """What a prune removed (or, in a dry run, would remove): rows per table, and the tasks
    whose output and stderr were cleared (``keep_results``)."""

    events: int = 0
    tasks: int = 0
    task_deps: int = 0
    messages: int = 0
    outputs: int = 0


@dataclass
class AgentRemoval:
    """What ``remove_agents`` did: the agents removed, and why each other one was kept."""

    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


@dataclass
class FinishedTask:
    """A finished task to remember: the task without its output, and the output's first
    ``head`` and last ``tail`` bytes (``output_tail`` is empty when the head holds it all)."""

    task: Task
    output_head: bytes
    output_tail: bytes
    output_bytes: int
    #: The roles of the agent that ran it (when that agent is still registered).
    agent_roles: list[str] = field(default_factory=list)


@dataclass
class WorkToRemember:
    """What finished after the memory cursor: the event id read up to (the cursor's next
    position), the finished tasks and the context documents set in those events."""

    read_to: int
    tasks: list[FinishedTask] = field(default_factory=list)
    contexts: list[ContextEntry] = field(default_factory=list)


@dataclass
class MemoryFilter:
    """Which memories a search may return (None: any)."""

    kind: str | None = None
    role: str | None = None
    since: float | None = None  # created at or after this time
    not_task: str | None = None  # none of this task's own


@dataclass
class MemoryCounts:
    """The memories in the store: by kind, by the model of their vector (None: not embedded),
    their text's size, and how far the memory cursor is behind the event log."""

    by_kind: dict[str, int] = field(default_factory=dict)
    by_model: dict[str | None, int] = field(default_factory=dict)
    text_bytes: int = 0
    cursor: int = 0
    last_event_id: int = 0


class Store(abc.ABC):
    """Abstract store. Methods raise ``NotFound``, ``Conflict`` or ``StoreError``."""

    url: str
    #: A directory for files that belong with this store (worker logs, tokens).
    home: Path

    # -- lifecycle --------------------------------------------------------------
    @abc.abstractmethod
    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""

    def exposure(self) -> list[str]:
        """What of the store other local users may read or write (a warning each)."""
        return []

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- wake-ups ---------------------------------------------------------------
    @abc.abstractmethod
    def agent_waiter(self, agent_id: str) -> Waiter:
        """Woken when a task it may take is queued, its task is cancelled or a message arrives."""

    @abc.abstractmethod
    def event_waiter(self) -> Waiter:
        """Woken on every new event."""

    # -- agents -----------------------------------------------------------------
    @abc.abstractmethod
    def register_agent(
        self, name: str, roles: list[str], backend: str, host: str, pid: int | None,
        lease_s: float, meta: dict, takes_hand_offs: bool = False, replaces_pid: int | None = None,
    ) -> Agent:
        """Register (or take over a dead or stopped agent of the same name). A ``takes_hand_offs``
        agent (a worker that waits on its ``agent_waiter``) may be handed tasks as they are
        added, while it is idle: see ``claim_batch``. A live agent of that name raises
        ``AgentRunning``, unless it is the one whose process ``replaces_pid`` on ``host`` the
        caller found gone (see ``podium.agents.registration``)."""

    @abc.abstractmethod
    def heartbeat(
        self, agent_id: str, lease_s: float, task_id: str | None = None, attempt: int = 0,
        roles: list[str] | None = None, holder: tuple[str, int] | None = None,
    ) -> HeartbeatReply:
        """Mark the agent alive, extend its task's lease and recover expired leases; with
        ``roles`` (an idle agent's), also say whether work waits for it (``work_waiting``).
        With ``holder``, the caller's (host, pid): only while the agent's row names that
        process; ``AgentReplaced`` (nothing changed) when another registered the name since."""

    @abc.abstractmethod
    def set_agent_state(self, agent_id: str, state: AgentState,
                        note: str | None = None) -> Agent: ...

    @abc.abstractmethod
    def set_agent_session(self, agent_id: str, session_id: str | None) -> Agent:
        """Remember the agent's backend session (``meta["session_id"]``; None forgets it). It
        survives the agent re-registering, so a restarted agent can resume its session."""

    @abc.abstractmethod
    def deregister(self, agent_id: str, holder: tuple[str, int] | None = None) -> None:
        """The agent stopped cleanly. With ``holder`` (as for ``heartbeat``), only while the
        row names that process: else ``AgentReplaced``, and the agent is left as it is."""

    @abc.abstractmethod
    def get_agent(self, agent_id: str) -> Agent: ...

    @abc.abstractmethod
    def list_agents(self) -> list[Agent]: ...

    @abc.abstractmethod
    def remove_agents(self, agent_ids: list[str]) -> AgentRemoval:
        """Remove these agents, with their inbox and outbox, each only while it is stopped or
        dead and no unfinished task is held by it or targets it (checked in the transaction
        that removes it; the others are kept, with the reason). The tasks they ran and the
        events keep naming them; a new agent may take the name."""

    # -- tasks ------------------------------------------------------------------
    @abc.abstractmethod
    def add_tasks(self, specs: list[TaskSpec],
                  may_run: Callable[[str, int | None], bool] | None = None) -> list[Task]:
        """Add tasks atomically (all or none). Dependencies must exist. An idle agent may be
        handed a task in the same transaction (see ``claim_batch``) unless ``may_run(host,
        pid)`` says its process cannot be running (the caller knows its host's processes:
        ``podium.agents.registration.may_run``; None: every agent heard from lately may)."""

    @abc.abstractmethod
    def claim(
        self, agent_id: str, roles: list[str], lease_s: float, finish: Finish | None = None
    ) -> Task | None:
        """Record ``finish`` (if given) and claim the next task this agent may take, in one
        transaction. Returns None when there is nothing to take."""

    @abc.abstractmethod
    def claim_batch(
        self, agent_id: str, roles: list[str], lease_s: float, finishes: list[Finish], limit: int,
        handed: bool = False, holder: tuple[str, int] | None = None,
    ) -> list[Task]:
        """Record every result in ``finishes`` and claim up to ``limit`` tasks (best first), in
        one transaction. ``claim`` is the one-task case.

        ``handed``: look for tasks handed to this agent first (its waiter said so, or it looks
        anyway); with no results to record, finding one takes a read and no write. A handed
        task is running with no ``started_at`` until the worker's first heartbeat for it or its
        result.

        ``holder``: the caller's (host, pid), as for ``heartbeat``. A process whose agent's
        name another registered since claims nothing, not even what is handed to the agent
        (the new holder's), and leaves the agent's row alone; its results count only as
        results of the claims it still holds (none: the name's new registration took them).
        Its next heartbeat says ``AgentReplaced``."""

    @abc.abstractmethod
    def finish(self, agent_id: str, finish: Finish) -> TaskState | None:
        """Record a result; returns the task's state afterwards, or None if the claim was stale."""

    @abc.abstractmethod
    def release(self, agent_id: str, task_id: str, attempt: int, reason: str) -> None:
        """Give a claimed task back to the queue without counting the attempt (shutdown)."""

    @abc.abstractmethod
    def cancel(self, task_id: str, reason: str) -> Task:
        """Cancel a blocked, queued or running task (its dependents are cancelled too)."""

    @abc.abstractmethod
    def retry(self, task_id: str) -> Task:
        """Queue a failed or cancelled task again, afresh: attempts 0, no agent, error, times
        nor result (``task.retried``); blocked instead while a dependency is still to complete
        (``Conflict`` while one is failed or cancelled, as for a task in any other state). Its
        dependents that its end cancelled (and theirs) are blocked again."""

    @abc.abstractmethod
    def recover(self) -> list[tuple[str, str]]:
        """Requeue (or fail) tasks whose lease expired; mark silent agents dead. Returns the
        (agent id, task id) of the tasks taken, for the caller to end what their programs
        left running on this host (``podium.orphans``)."""

    @abc.abstractmethod
    def get_task(self, task_id: str) -> Task: ...

    @abc.abstractmethod
    def task_state(self, task_id: str) -> TaskState: ...

    @abc.abstractmethod
    def task_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids of tasks that start with ``prefix`` (``prefix`` itself when it
        is one), in order: a range of the id's index."""

    @abc.abstractmethod
    def list_tasks(
        self, state: TaskState | None = None, agent_id: str | None = None, limit: int = 100,
        with_output: bool = False, before: int | None = None, role: str | None = None,
        text: str | None = None,
    ) -> list[Task]:
        """The newest ``limit`` tasks (oldest first), only those with ``seq`` below ``before``
        when it is given: the next page of a listing is ``before=`` its first task's ``seq``.
        ``role``: only tasks targeted at that role; ``text``: only those whose prompt holds it
        (ASCII letters in any case)."""

    @abc.abstractmethod
    def list_queue(self, limit: int) -> dict[TaskState, list[Task]]:
        """The running, queued and blocked tasks, at most ``limit`` of each, in the order they
        run: queued and blocked ones by priority then age, running ones oldest first."""

    @abc.abstractmethod
    def dependents(self, task_id: str, limit: int) -> list[str]:
        """Up to ``limit`` ids of the tasks that depend on ``task_id``, oldest first."""

    @abc.abstractmethod
    def cost_buckets(self, since: float, until: float,
                     bucket_s: float) -> list[tuple[int, str | None, float, int, int]]:
        """Finished tasks that finished from ``since`` to before ``until``, summed per time
        bucket (0 the first, ``bucket_s`` seconds each) and agent: (bucket, agent id, cost in
        USD, tasks, tokens)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of tasks in each state."""

    @abc.abstractmethod
    def queued_targets(self) -> list[tuple[str | None, str | None, int]]:
        """The queued tasks by whom they wait for: (target agent, target role, how many)."""

    # -- messages ---------------------------------------------------------------
    @abc.abstractmethod
    def add_message(
        self, agent_id: str, body: str, direction: str = "in", kind: str = "message",
        sender: str | None = None, task_id: str | None = None,
    ) -> Message: ...

    @abc.abstractmethod
    def mark_delivered(self, message_id: int, confirmed: bool, how: str,
                       reason: str | None = None) -> Message:
        """Record that a message reached its agent (e.g. pasted into its pane); ``reason`` says
        why its arrival could not be confirmed."""

    @abc.abstractmethod
    def list_messages(
        self, agent_id: str, direction: str | None = None, unread: bool = False,
        limit: int = 100, mark_read: bool = False,
    ) -> list[Message]: ...

    # -- shared context ---------------------------------------------------------
    @abc.abstractmethod
    def set_context(self, key: str, value: str, by: str | None = None) -> ContextEntry: ...

    @abc.abstractmethod
    def get_context(self, key: str) -> ContextEntry: ...

    @abc.abstractmethod
    def list_context(self) -> list[ContextEntry]: ...

    # -- events -----------------------------------------------------------------
    @abc.abstractmethod
    def add_event(self, kind: str, agent_id: str | None = None, task_id: str | None = None,
                  data: dict | None = None) -> None:
        """Append an event on its own (progress output, hooks...)."""

    @abc.abstractmethod
    def read_events(self, after: int = 0, limit: int = 1000,
                    task_id: str | None = None) -> list[Event]:
        """Events with id > ``after``, oldest first."""

    @abc.abstractmethod
    def last_event_id(self) -> int: ...

    # -- history ----------------------------------------------------------------
    @abc.abstractmethod
    def prune(self, before: float, keep_results: bool = False,
              dry_run: bool = False) -> Pruned:
        """Remove the history older than the time ``before``: the events up to the first one
        stamped at or after it (the newest event always stays, so ids keep growing), and the
        finished tasks that finished before it, with their own dependency rows and messages;
        ``keep_results`` keeps those tasks and their results but clears their output and
        stderr (``output_pruned``). Unfinished tasks, agents and shared context are never
        touched. Done in short transactions; ``dry_run`` only counts."""

    # -- memory (podium.store.sql.memory) -------------------------------------------
    @abc.abstractmethod
    def memory_cursor(self) -> int:
        """The event id up to which finished work was turned into memories."""

    @abc.abstractmethod
    def work_to_remember(self, after: int, limit: int, head: int,
                         tail: int) -> WorkToRemember:
        """The tasks that completed or failed and the context documents set in the events
        after ``after``: up to ``limit`` of them, each task with the first ``head`` and last
        ``tail`` bytes of its output. ``read_to`` is where the next read starts."""

    @abc.abstractmethod
    def add_memories(self, memories: list[Memory], replace_tasks: Collection[str] = (),
                     cursor: tuple[int, int] | None = None) -> list[str] | None:
        """Add memories (one whose id exists already is left as it is), first removing the
        automatic memories of the tasks in ``replace_tasks``; returns the ids removed. With
        ``cursor`` (from, to), the memory cursor moves from ``from`` to ``to`` in the same
        transaction, and when it is no longer at ``from`` (another process remembered that
        work meanwhile) nothing is written and the result is None."""

    @abc.abstractmethod
    def get_memories(self, ids: Collection[str]) -> dict[str, Memory]:
        """The memories of these ids that exist, by id."""

    @abc.abstractmethod
    def keyword_search(self, terms: list[str], limit: int,
                       where: MemoryFilter | None = None) -> list[tuple[str, float]]:
        """The ``limit`` memories most relevant to any of ``terms`` by full-text search
        (stemmed words), best first, with the dialect's relevance (higher is better)."""

    @abc.abstractmethod
    def memory_ids(self, where: MemoryFilter, limit: int) -> list[str]:
        """Ids of up to ``limit`` memories that ``where`` lets through, newest first."""

    @abc.abstractmethod
    def forget_memories(self, ids: Collection[str] = (),
                        task_id: str | None = None) -> list[str]:
        """Remove these memories, and every memory of ``task_id``; returns the ids removed."""

    @abc.abstractmethod
    def memories_to_embed(self, model_id: str, limit: int, after_seq: int = 0) -> list[Memory]:
        """Up to ``limit`` memories (``seq`` above ``after_seq``, in order) whose vector is
        missing or was made by another model than ``model_id``."""

    @abc.abstractmethod
    def claim_memories_to_embed(self, model_id: str, limit: int,
                                claim_s: float) -> list[Memory]:
        """Up to ``limit`` memories (in order) to embed with ``model_id``, as
        ``memories_to_embed``, of those that no caller claimed in the last ``claim_s``
        seconds: claimed for the caller until then. Two callers at once never get the same
        one (several hosts' indexers share the work this way)."""

    @abc.abstractmethod
    def mark_embedded(self, ids: Collection[str], model_id: str) -> None:
        """Record that these memories' vectors, made by ``model_id``, are in the vector store."""

    @abc.abstractmethod
    def forget_embeddings(self) -> int:
        """Mark every memory as not embedded (a reindex); returns how many were."""

    @abc.abstractmethod
    def memory_counts(self) -> MemoryCounts: ...

    def compact(self) -> tuple[int, int] | None:
        """Give the space that pruning freed back to the file system; returns the store's
        size in bytes (before, after), or None when it cannot tell (the server's own)."""
        return None
