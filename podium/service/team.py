"""The team: agents (listing, deregistering, waiting for them to register) and their
mailboxes (messages typed into panes, reports, hooks, their latest response)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium import limits
from podium.agents import registration
from podium.clock import new_id
from podium.errors import NotFound, PodiumError, StoreUnavailable
from podium.models import Agent, AgentResponse, AgentState, Message, Task, TaskSpec
from podium.service.tasks import TaskCalls

if TYPE_CHECKING:
    from podium.agents.backends import Backend
    from podium.agents.interactive import InteractiveAgent
    from podium.agents.worker import Worker

#: How often ``wait_registered`` looks again (and runs its check) while nothing happens.
REGISTER_POLL_S = 0.2


class TeamCalls(TaskCalls):
    def worker(self, name: str, backend: Backend, roles: list[str], lease_s: float,
               heartbeat_s: float | None, workdir: Path, echo_output: bool = False) -> Worker:
        """This process as agent ``name``, a worker over this service's store (``run()``)."""
        from podium.agents.worker import Worker

        return Worker(self.store, limits.name(name, "agent name"), backend,
                      [limits.name(r, "role") for r in roles], lease_s=lease_s,
                      heartbeat_s=heartbeat_s, workdir=workdir, echo_output=echo_output)

    def interactive_agent(self, name: str, command: list[str], roles: list[str],
                          lease_s: float) -> InteractiveAgent:
        """This process as agent ``name`` running ``command`` in its terminal (``run()``)."""
        from podium.agents.interactive import InteractiveAgent

        return InteractiveAgent(self.store, limits.name(name, "agent name"), command,
                                [limits.name(r, "role") for r in roles], lease_s)

    def broadcast(self, prompt: Any, context: str | None = None, **kwargs: Any) -> list[Task]:
        """One task per live agent, grouped by a broadcast id."""
        base = self.spec(prompt, context=context, **kwargs)
        live = [a for a in self.agents() if a.state.live]
        if not live:
            raise NotFound("no live agents to broadcast to; start some with 'podium up N'")
        group = new_id("b")
        specs = [TaskSpec(**{**base.__dict__, "target_agent": a.id, "broadcast_id": group})
                 for a in live]
        return self.store.add_tasks(specs, registration.may_run)

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

    def send(self, agent_id: str, body: Any, sender: str = "orchestrator") -> Message:
        """Put a message in the agent's inbox; an interactive agent in a pane also gets it typed
        in (by ``panes``: with tmux, a paste, then Enter once the text shows), recorded as
        ``message.delivered``: confirmed once the whole text showed in the pane, else
        ``reason`` says why not. Raises ``PodiumError``, the message kept in the inbox, when it
        could not be typed, or this service has no ``panes`` to type it with."""
        text = limits.text(body, "message")
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

    def response(self, agent_id: str, scan: int = 100) -> AgentResponse:
        """The agent's latest response: the newer of its latest outbound message (a report) and
        the result of the task it finished last (among its last ``scan`` tasks)."""
        msgs = self.outbox(agent_id, limit=1)
        # A finished task is never claimed again: its completion time stays as listed here.
        finished = [t for t in self.tasks(agent=agent_id, limit=scan)
                    if t.state.finished and t.completed_at is not None]
        last = max(finished, key=lambda t: t.completed_at or 0.0, default=None)
        return AgentResponse(agent_id, msgs[-1] if msgs else None,
                             self.task(last.id) if last is not None else None)

    def report(self, agent_id: str, status: str, note: str | None = None,
               task_id: str | None = None) -> Message:
        """An agent reports its own status (the journal's agent-report)."""
        agent_id = limits.name(agent_id, "agent id")
        task_id = limits.optional_name(task_id, "task id")
        status = limits.text(status, "status")
        if note is not None:
            note = limits.text(note, "note", allow_empty=True)
        known = {s.value for s in AgentState if s.live}
        text = status if not note else f"{status}: {note}"
        if status in known:
            self.store.set_agent_state(agent_id, AgentState(status), text)
        else:
            self.store.get_agent(agent_id)
        return self.store.add_message(agent_id, text, "out", "report", agent_id, task_id)
