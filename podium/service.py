"""The one API every face calls (CLI, MCP, dashboard, tmux, supervisor) and Python users:
the only door to the store.

It validates input (so a failed call changes nothing; the bounds are in ``podium.limits``),
turns names into store calls, and adds the few things that span several store calls (waiting,
following events, broadcast). It imports no face: typing a message into an agent's pane is
given to it as a ``PaneDelivery`` (``podium.tmux.TmuxPanes``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from podium import limits
from podium.agents import registration
from podium.clock import new_id, now
from podium.errors import InvalidInput, NotFound, PodiumError, StoreUnavailable
from podium.models import (
    Agent,
    AgentState,
    ContextEntry,
    Event,
    Message,
    Priority,
    Task,
    TaskSpec,
    TaskState,
)
from podium.store import Store, open_store
from podium.store.copy import copy_store
from podium.store.postgres import without_password

#: The largest prompt, message or context value accepted (bytes of UTF-8).
MAX_TEXT_BYTES = 64 * 1024 * 1024
#: How often a waiting call re-checks the store even without a wake-up (a safety net).
SAFETY_POLL_S = 2.0
#: The most events one read of a follower returns.
FOLLOW_BATCH = 1000
#: How often ``wait_registered`` looks again (and runs its check) while nothing happens.
REGISTER_POLL_S = 0.2


def _text(value: Any, what: str, allow_empty: bool = False) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{what} is not valid UTF-8 (byte {e.start})") from None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(f"{what} is empty")
    if len(value) > MAX_TEXT_BYTES // 4 and len(value.encode("utf-8")) > MAX_TEXT_BYTES:
        raise InvalidInput(f"{what} is larger than {MAX_TEXT_BYTES // (1024 * 1024)} MiB")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} contains characters that are not valid Unicode") from None
    if "\0" in value:  # SQLite would keep it, PostgreSQL refuses it: neither store may take it
        raise InvalidInput(f"{what} contains a NUL character, which PostgreSQL cannot store")
    return value


@dataclass(frozen=True)
class Delivery:
    """What became of text typed into a pane: confirmed once all of it showed there."""

    confirmed: bool
    via: str  # where it was typed, e.g. "tmux pane %3"
    reason: str | None = None  # why it is not confirmed


class PaneDelivery(Protocol):
    """Types text into an interactive agent's pane (``podium.tmux.TmuxPanes`` does, with tmux)."""

    def deliver(self, pane_id: str, text: str, server: str | None = None) -> Delivery:
        """Type ``text`` into ``pane_id`` on ``server`` (as the agent registered it; None: the
        default one); raises ``PodiumError``, having typed nothing, when it cannot."""
        ...


class EventFollower:
    """The event log read on from a cursor, as events are committed.

    One thread calls ``poll`` and finally ``close``; ``stop``, from any thread, ends a ``poll``
    waiting now and every one after it.
    """

    def __init__(self, store: Store, after: int | None = None, task_id: str | None = None):
        self._store = store
        self._task_id = task_id
        self._stopped = threading.Event()
        self._closing = threading.Lock()  # a poke never reaches a closed waiter's descriptors
        self._closed = False
        self._waiter = store.event_waiter()
        try:
            #: The id of the last event read (events after it come next).
            self.cursor = store.last_event_id() if after is None else after
        except BaseException:
            self._waiter.close()
            raise

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def poll(self, timeout: float | None = None) -> list[Event]:
        """The next events (at most ``FOLLOW_BATCH``, oldest first), waiting up to ``timeout``
        seconds (None: for ever) for one to be committed; [] when none was, or once stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            batch = self._store.read_events(self.cursor, FOLLOW_BATCH, self._task_id)
            if batch:
                self.cursor = batch[-1].id
                return batch
            left = SAFETY_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            self._waiter.wait(min(left, SAFETY_POLL_S))
        return []

    def stop(self) -> None:
        self._stopped.set()
        with self._closing:
            if not self._closed:
                self._waiter.poke()

    def close(self) -> None:
        with self._closing:
            if not self._closed:
                self._closed = True
                self._waiter.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Podium:
    """Service facade over a store; ``panes`` types messages into interactive agents' panes
    (without it, ``send`` puts them in the inbox only, and says so)."""

    def __init__(self, store: Store, panes: PaneDelivery | None = None):
        self.store = store
        self.panes = panes

    @classmethod
    def open(cls, url: str | None = None, init: bool = False,
             panes: PaneDelivery | None = None) -> Podium:
        """The service over the store at ``url`` (see ``open_store``; ``init``: ``podium init``,
        which may also make a store in an empty file)."""
        return cls(open_store(url, init), panes)

    def close(self) -> None:
        self.store.close()

    # -- the store itself ---------------------------------------------------------------
    @property
    def url(self) -> str:
        """The store's URL (a PostgreSQL password in it included: see ``shareable_url``)."""
        return self.store.url

    @property
    def home(self) -> Path:
        """The directory for files that belong with the store (worker logs, the MCP token)."""
        return self.store.home

    def shareable_url(self, with_password: bool = False) -> tuple[str, bool]:
        """The store's URL to write into a file others may read: a PostgreSQL password left
        out unless ``with_password``; and whether one was left out."""
        return (self.url, False) if with_password else without_password(self.url)

    def migrate(self) -> list[str]:
        """Apply pending schema migrations (opening does it too); returns the names applied."""
        return self.store.migrate()

    @staticmethod
    def copy(source_url: str, dest_url: str,
             progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
        """Copy every agent, task, message, event and context entry of the store at
        ``source_url`` into the empty one at ``dest_url`` (SQLite and PostgreSQL either way);
        returns the rows copied per table (``progress`` hears of each table once copied)."""
        source = open_store(source_url)
        try:
            dest = open_store(dest_url)
            try:
                return copy_store(source, dest, progress)
            finally:
                dest.close()
        finally:
            source.close()

    # -- tasks ------------------------------------------------------------------------
    def spec(
        self, prompt: Any, agent: str | None = None, role: str | None = None,
        priority: str | Priority | None = None, depends_on: list[str] | tuple[str, ...] = (),
        context: str | None = None, timeout_s: float | None = None, max_attempts: int = 3,
        retry: bool = False, session: str | None = None,
    ) -> TaskSpec:
        """Validate a task request; raises ``InvalidInput`` without touching the store."""
        if depends_on is None:
            depends_on = ()
        if not isinstance(depends_on, (list, tuple)):
            raise InvalidInput(f"depends_on must be a list of task ids, got "
                               f"{type(depends_on).__name__}")
        if len(depends_on) > limits.MAX_LIST:
            raise InvalidInput(f"depends_on has {len(depends_on)} task ids: at most "
                               f"{limits.MAX_LIST} allowed")
        if not isinstance(retry, bool):
            raise InvalidInput(f"retry must be true or false, got {type(retry).__name__}")
        return TaskSpec(
            prompt=_text(prompt, "prompt"),
            context=_text(context, "context", allow_empty=True) if context is not None else None,
            priority=Priority.parse(priority),
            target_agent=limits.optional_name(agent, "agent id"),
            target_role=limits.optional_name(role, "role"),
            depends_on=[limits.name(d, "task id in depends_on") for d in depends_on],
            timeout_s=limits.timeout(timeout_s),
            max_attempts=limits.max_attempts(max_attempts),
            retry_on_failure=retry,
            session_id=limits.optional_name(session, "session"),
        )

    def add_task(self, prompt: Any, **kwargs: Any) -> Task:
        return self.store.add_tasks([self.spec(prompt, **kwargs)])[0]

    def add_tasks(self, specs: list[TaskSpec]) -> list[Task]:
        return self.store.add_tasks(specs)

    def broadcast(self, prompt: Any, context: str | None = None, **kwargs: Any) -> list[Task]:
        """One task per live agent, grouped by a broadcast id."""
        base = self.spec(prompt, context=context, **kwargs)
        live = [a for a in self.agents() if a.state.live]
        if not live:
            raise NotFound("no live agents to broadcast to; start some with 'podium up N'")
        group = new_id("b")
        specs = [TaskSpec(**{**base.__dict__, "target_agent": a.id, "broadcast_id": group})
                 for a in live]
        return self.store.add_tasks(specs)

    def task(self, task_id: str) -> Task:
        return self.store.get_task(limits.name(task_id, "task id"))

    def tasks(self, state: str | None = None, agent: str | None = None, limit: int = 100,
              with_output: bool = False) -> list[Task]:
        st = None
        if state is not None:
            try:
                st = TaskState(state)
            except ValueError:
                names = ", ".join(s.value for s in TaskState)
                raise InvalidInput(f"bad state {state!r}: expected one of {names}") from None
        limit = limits.list_limit(limit)
        if agent is not None:
            self.store.get_agent(limits.name(agent, "agent id"))
        return self.store.list_tasks(st, agent, limit, with_output)

    def cancel(self, task_id: str, reason: str = "cancelled by user") -> Task:
        return self.store.cancel(limits.name(task_id, "task id"), _text(reason, "reason"))

    def result(self, task_id: str) -> dict[str, Any]:
        return self.task(task_id).result()

    def wait(self, task_id: str, timeout_s: float | None = None) -> Task:
        """Block until the task is finished (or ``timeout_s`` passes); returns it either way."""
        timeout_s = limits.wait_timeout(timeout_s)
        task_id = limits.name(task_id, "task id")
        self.store.task_state(task_id)  # NotFound before we start waiting
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waiter = self.store.event_waiter()
        last_recover = time.monotonic()
        try:
            while True:
                if self.store.task_state(task_id).finished:
                    break
                left = SAFETY_POLL_S if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                waiter.wait(min(left, SAFETY_POLL_S))
                if time.monotonic() - last_recover >= SAFETY_POLL_S:
                    self._recover()  # nobody else may be alive to notice a dead agent
                    last_recover = time.monotonic()
        finally:
            waiter.close()
        return self.store.get_task(task_id)

    # -- agents -----------------------------------------------------------------------
    def _recover(self) -> None:
        """Take tasks back from agents that are gone, and end what they left running here."""
        registration.end_taken(self.store.url, self.store.recover())

    def agents(self) -> list[Agent]:
        try:
            self._recover()
        except StoreUnavailable:
            pass  # (a full disk, say: the listing is still worth showing; nothing was changed)
        return self.store.list_agents()

    def agent(self, agent_id: str) -> Agent:
        return self.store.get_agent(limits.name(agent_id, "agent id"))

    def deregister(self, agent_id: str) -> Agent:
        """Record that the agent stopped (``podium down`` does, for one that could not)."""
        agent_id = limits.name(agent_id, "agent id")
        self.store.deregister(agent_id)
        return self.store.get_agent(agent_id)

    def wait_registered(self, names: list[str], since: float, timeout_s: float,
                        pids: dict[str, int] | None = None,
                        check: Callable[[], None] | None = None) -> list[Agent]:
        """Block until every agent in ``names`` is live, registered at ``since`` or later (by
        the process ``pids`` names, when given), or ``timeout_s`` passes; returns those that
        are, in the order named. ``check`` runs at every look and may raise to stop waiting."""
        names = [limits.name(nm, "agent name") for nm in names]
        deadline = time.monotonic() + limits.seconds(timeout_s, "timeout", zero_ok=True)
        waiter = self.store.event_waiter()
        try:
            while True:
                agents = {a.id: a for a in self.store.list_agents()}
                ready = [agents[nm] for nm in names if nm in agents
                         and agents[nm].state.live and agents[nm].registered_at >= since
                         and (pids is None or agents[nm].pid == pids[nm])]
                if len(ready) == len(names):
                    return ready
                if check is not None:
                    check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return ready
                waiter.wait(min(left, REGISTER_POLL_S))
        finally:
            waiter.close()

    # -- messages ---------------------------------------------------------------------
    def send(self, agent_id: str, body: Any, sender: str = "orchestrator") -> Message:
        """Put a message in the agent's inbox; an interactive agent in a pane also gets it typed
        in (by ``panes``: with tmux, a paste, then Enter once the text shows), recorded as
        ``message.delivered``: confirmed once the whole text showed in the pane, else
        ``reason`` says why not. Raises ``PodiumError``, the message kept in the inbox, when it
        could not be typed, or this service has no ``panes`` to type it with."""
        text = _text(body, "message")
        sender = limits.name(sender, "sender")
        agent = self.agent(agent_id)
        msg = self.store.add_message(agent_id, text, "in", "message", sender)
        pane = agent.meta.get("pane") if agent.meta.get("interactive") else None
        if pane and agent.state.live:
            if self.panes is None:
                raise PodiumError(f"message {msg.id} is in {agent_id}'s inbox but was not typed "
                                  f"into its pane: this service has no pane delivery (open it "
                                  f"with panes=podium.tmux.TmuxPanes())")
            try:
                delivery = self.panes.deliver(pane, text, agent.meta.get("tmux_socket"))
            except PodiumError as e:
                raise PodiumError(f"message {msg.id} is in {agent_id}'s inbox but could not be "
                                  f"typed into its pane: {e}") from None
            msg = self.store.mark_delivered(msg.id, delivery.confirmed, delivery.via,
                                            delivery.reason)
        return msg

    def hook(self, agent_id: str, name: str, payload: dict[str, Any] | None = None) -> Agent:
        """A Claude Code hook fired for an interactive agent: record the state it implies."""
        from podium.hooks import state_for

        agent_id = limits.name(agent_id, "agent id")
        state = state_for(name)
        note = f"hook:{name}"
        message = (payload or {}).get("message")
        if isinstance(message, str) and message:
            # Whatever the hook's JSON held: a lone surrogate or a NUL would fail the write.
            shown = message[:200].encode("utf-8", "replace").decode("utf-8")
            note += ": " + shown.replace("\0", "\N{REPLACEMENT CHARACTER}")
        return self.store.set_agent_state(agent_id, state, note)

    def inbox(self, agent_id: str, unread: bool = False, ack: bool = False,
              limit: int = 100) -> list[Message]:
        return self.store.list_messages(limits.name(agent_id, "agent id"), "in", unread,
                                        limits.list_limit(limit), mark_read=ack)

    def outbox(self, agent_id: str, limit: int = 100) -> list[Message]:
        return self.store.list_messages(limits.name(agent_id, "agent id"), "out", False,
                                        limits.list_limit(limit))

    def response(self, agent_id: str, scan: int = 100) -> dict[str, Any]:
        """The agent's latest response: the newer of its latest outbound message (a report) and
        the result of the task it finished last (among its last ``scan`` tasks).

        ``source`` is ``"message"``, ``"result"`` or None (neither yet); ``response`` is that
        message's body or that result's output; both candidates are included.
        """
        msgs = self.outbox(agent_id, limit=1)
        msg = msgs[-1] if msgs else None
        # Its finished tasks' completion times (a finished task is never claimed again: the
        # time stays as listed here).
        completed_at = {t.id: t.completed_at for t in self.tasks(agent=agent_id, limit=scan)
                        if t.state.finished and t.completed_at is not None}
        last_id = max(completed_at, key=completed_at.__getitem__, default=None)
        last = self.task(last_id) if last_id is not None else None
        result = last.result() if last is not None else None
        source: str | None = None
        response: Any = None
        if msg is not None and (last_id is None or msg.created_at >= completed_at[last_id]):
            source, response = "message", msg.body
        elif result is not None:
            source, response = "result", result["output"]
        return {
            "agent_id": agent_id,
            "source": source,
            "response": response,
            "message": msg.to_dict() if msg is not None else None,
            "result": result,
        }

    def report(self, agent_id: str, status: str, note: str | None = None,
               task_id: str | None = None) -> Message:
        """An agent reports its own status (the journal's agent-report)."""
        agent_id = limits.name(agent_id, "agent id")
        task_id = limits.optional_name(task_id, "task id")
        status = _text(status, "status")
        if note is not None:
            note = _text(note, "note", allow_empty=True)
        known = {s.value for s in AgentState if s.live}
        text = status if not note else f"{status}: {note}"
        if status in known:
            self.store.set_agent_state(agent_id, AgentState(status), text)
        else:
            self.store.get_agent(agent_id)
        return self.store.add_message(agent_id, text, "out", "report", agent_id, task_id)

    # -- context ----------------------------------------------------------------------
    def set_context(self, key: str, value: Any, by: str | None = None) -> ContextEntry:
        key = limits.name(key, "context key")
        value = _text(value, "context value", allow_empty=True)
        return self.store.set_context(key, value, limits.optional_name(by, "updated by"))

    def get_context(self, key: str) -> ContextEntry:
        return self.store.get_context(limits.name(key, "context key"))

    def list_context(self) -> list[ContextEntry]:
        return self.store.list_context()

    # -- events and status ------------------------------------------------------------
    def events(self, after: int = 0, limit: int = 1000, task_id: str | None = None) -> list[Event]:
        return self.store.read_events(limits.event_id(after), limits.list_limit(limit),
                                      limits.optional_name(task_id, "task id"))

    def follow(self, after: int | None = None, idle_timeout: float | None = None,
               task_id: str | None = None) -> Iterator[Event]:
        """Yield events as they are committed, from ``after`` (default: from now on), only the
        events of ``task_id`` when it is given.

        Stops when ``idle_timeout`` seconds pass without a new event (None: never).
        """
        idle_timeout = limits.wait_timeout(idle_timeout, "idle timeout")
        with self.follower(after, task_id) as events:
            while batch := events.poll(idle_timeout):
                yield from batch

    def follower(self, after: int | None = None, task_id: str | None = None) -> EventFollower:
        """An ``EventFollower`` from ``after`` (default: from now on), only the events of
        ``task_id`` when it is given: ``follow`` for a thread that must stop on request."""
        after = None if after is None else limits.event_id(after)
        return EventFollower(self.store, after, limits.optional_name(task_id, "task id"))

    def status(self) -> dict[str, Any]:
        agents = self.agents()
        t = now()
        by_state: dict[str, int] = {}
        for a in agents:
            by_state[a.state.value] = by_state.get(a.state.value, 0) + 1
        return {
            "store": self.url,
            "agents": {"total": len(agents), **by_state},
            "tasks": self.store.counts(),
            "live_agents": [a.to_dict(t) for a in agents if a.state.live],
            "last_event_id": self.store.last_event_id(),
            "warnings": self.store.exposure(),
        }

    def costs(self) -> dict[str, Any]:
        """Tokens and cost per agent, per role, per backend and overall.

        From each agent's counters, which add up every run it finished (retries and runs cut
        off included) and survive its restarts. An agent with several roles counts under
        each of them; one with none under the role ``None``.
        """
        fields = ("tasks", "tokens_in", "tokens_out", "cost_usd")

        def zero() -> dict[str, Any]:
            return {"agents": 0, "tasks": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}

        rows: list[dict[str, Any]] = []
        roles: dict[str | None, dict[str, Any]] = {}  # (None: agents without a role)
        backends: dict[str, dict[str, Any]] = {}
        total = zero()
        for a in self.store.list_agents():
            row = {"agent": a.id, "backend": a.backend, "roles": a.roles, "state": a.state.value,
                   "tasks": a.tasks_done, "tokens_in": a.tokens_in, "tokens_out": a.tokens_out,
                   "cost_usd": a.cost_usd}
            rows.append(row)
            groups = [roles.setdefault(r, zero()) for r in (a.roles or (None,))]
            groups += [backends.setdefault(a.backend, zero()), total]
            for g in groups:
                g["agents"] += 1
                for f in fields:
                    g[f] += row[f]
        for g in [*roles.values(), *backends.values(), total]:
            g["cost_usd"] = round(g["cost_usd"], 6)
        return {
            "agents": rows,
            "roles": [{"role": r, **g} for r, g in
                      sorted(roles.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))],
            "backends": [{"backend": b, **g} for b, g in sorted(backends.items())],
            "total": total,
        }
