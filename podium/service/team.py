"""The team: agents (listing them by name, deregistering, waiting for them to register,
removing those gone) and their mailboxes (messages typed into panes, reports, hooks, their
latest response); logs (an agent's log file, a task's output: ``podium.service.logs``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium import limits
from podium.agents import local, registration
from podium.clock import new_id
from podium.errors import InvalidInput, NotFound, PodiumError, StoreUnavailable
from podium.models import Agent, AgentResponse, AgentState, Message, Task, TaskSpec, name_key
from podium.service import logs
from podium.service.logs import LogText
from podium.service.tasks import TaskCalls
from podium.store.base import AgentRemoval

if TYPE_CHECKING:
    from podium.agents.backends import Backend
    from podium.agents.interactive import InteractiveAgent
    from podium.agents.worker import Worker

#: How often ``wait_registered`` looks again (and runs its check) while nothing happens.
REGISTER_POLL_S = 0.2


def by_name(agents: list[Agent]) -> list[Agent]:
    """``agents`` in the order every listing gives them: by name (``name_key``)."""
    return sorted(agents, key=lambda a: name_key(a.id))


class TeamCalls(TaskCalls):
    def worker(self, name: str, backend: Backend, roles: list[str], lease_s: float,
               heartbeat_s: float | None, workdir: Path, echo_output: bool = False,
               recall: int = 0) -> Worker:
        """This process as agent ``name``, a worker over this service's store (``run()``);
        ``recall``: memories put in front of each task's prompt (``podium.service.recall``)."""
        from podium.agents.worker import Worker
        from podium.service.recall import WorkerMemory

        return Worker(self.store, limits.name(name, "agent name"), backend,
                      [limits.name(r, "role") for r in roles], lease_s=lease_s,
                      heartbeat_s=heartbeat_s, workdir=workdir, echo_output=echo_output,
                      memory=WorkerMemory(self.store.url, recall))

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
        """Every agent, by name (``name_key``: ``agent-2`` before ``agent-10``), those found
        silent marked dead first."""
        try:
            self._recover()
        except StoreUnavailable:
            pass  # (a full disk, say: the listing is still worth showing; nothing was changed)
        return by_name(self.store.list_agents())

    def agent(self, agent_id: str) -> Agent:
        return self.store.get_agent(limits.name(agent_id, "agent id"))

    def agent_pane(self, agent_id: str) -> tuple[str, str | None]:
        """The tmux pane the agent runs in, and the tmux server's socket (None: the default
        one); ``NotFound`` for an agent in no pane."""
        agent = self.agent(agent_id)
        pane = agent.meta.get("pane")
        if not isinstance(pane, str) or not pane:
            raise NotFound(f"agent {agent.id} runs in no tmux pane (only agents started with "
                           "'podium up --tmux' do)")
        socket = agent.meta.get("tmux_socket")
        return pane, socket if isinstance(socket, str) and socket else None

    def deregister(self, agent_id: str) -> Agent:
        """Record that the agent stopped (``podium down`` does, for one that could not)."""
        agent_id = limits.name(agent_id, "agent id")
        self.store.deregister(agent_id)
        return self.store.get_agent(agent_id)

    def wait_registered(self, names: list[str], since: float, timeout_s: float,
                        pids: dict[str, int] | None = None,
                        check: Callable[[], None] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> list[Agent]:
        """Block until every agent in ``names`` is live, registered at ``since`` or later (by
        the process ``pids`` names, when given), or ``timeout_s`` passes; returns those that
        are, in the order named. ``check`` runs at every look and may raise to stop waiting;
        ``progress`` hears (how many are ready, how many are awaited) at every look."""
        names = [limits.name(nm, "agent name") for nm in names]
        deadline = time.monotonic() + limits.seconds(timeout_s, "timeout", zero_ok=True)
        waiter = self.store.event_waiter()
        try:
            while True:
                agents = {a.id: a for a in self.store.list_agents()}
                ready = [agents[nm] for nm in names if nm in agents
                         and agents[nm].state.live and agents[nm].registered_at >= since
                         and (pids is None or agents[nm].pid == pids[nm])]
                if progress is not None:
                    progress(len(ready), len(names))
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
        agent = self.store.get_agent(agent_id)
        if status == AgentState.BUSY.value and not agent.meta.get("interactive") \
                and (agent.current_task is None or agent.current_task != task_id):
            # A worker is busy exactly while it runs a task: its worker says so, not a report
            # from elsewhere (which would leave it "busy" with no task, for good).
            raise InvalidInput(
                f"agent {agent_id} is not running {task_id or 'a task'}: a worker is busy only "
                "while it runs one, which it reports itself (report 'busy' from inside its "
                "task, or another status word)")
        if status in known:
            self.store.set_agent_state(agent_id, AgentState(status), text)
        return self.store.add_message(agent_id, text, "out", "report", agent_id, task_id)

    # -- removing agents ------------------------------------------------------------------
    def prune_agents(self) -> AgentRemoval:
        """Remove the agents that are stopped or dead, with their inbox and outbox: those whose
        process is gone (one of this host is looked for, as ``podium down`` does; another
        host's is taken at the store's word) and for which no unfinished task waits. The
        others are kept, each with the reason; live agents are left out."""
        kept: dict[str, str] = {}
        gone = []
        for a in self.agents():  # (after agents found silent were marked dead)
            if a.state.live:
                continue
            if local.running_here(a, self.url):
                kept[a.id] = (f"it is {a.state.value} but its process {a.pid} still runs here "
                              f"('podium down {a.id}' stops it)")
            else:
                gone.append(a.id)
        done = self.store.remove_agents(gone)
        done.kept.update(kept)
        done.removed.sort(key=name_key)
        done.kept = dict(sorted(done.kept.items(), key=lambda kv: name_key(kv[0])))
        return done

    # -- logs -----------------------------------------------------------------------------
    def log_target(self, name: str) -> tuple[str, str]:
        """What ``podium logs NAME`` shows: ("agent", its id) for an agent of that exact name,
        else ("task", the id of the task NAME is the id or a unique prefix of)."""
        name = limits.name(name, "agent or task")
        try:
            return "agent", self.store.get_agent(name).id
        except NotFound:
            pass
        try:
            task_id = self._task_id(name)
            self.store.task_state(task_id)  # (a whole id is not looked up by _task_id)
            return "task", task_id
        except NotFound:
            raise NotFound(f"no agent or task {name!r} ('podium agents' and 'podium task "
                           "list' list them)") from None

    def agent_log(self, agent_id: str) -> Path:
        """The agent's log file (a background worker's, as ``podium up`` starts them)."""
        agent = self.agent(agent_id)
        path = logs.log_path(self.home, agent.id)
        if not path.is_file():
            where = ("" if local.running_here(agent, self.url) is not None
                     else f"; it ran on {agent.host}, where its log may be")
            raise NotFound(f"agent {agent.id} has no log at {path}: only agents started in "
                           f"the background by 'podium up' log there{where}")
        return path

    def agent_log_text(self, agent_id: str, lines: int = 50,
                       follow: bool = False) -> Iterator[bytes]:
        """The last ``lines`` lines of the agent's log; with ``follow``, then what it appends,
        until the agent has stopped (or died) and its log is read to the end."""
        lines = limits.integer(lines, "lines", 0, limits.MAX_LIST)
        path = self.agent_log(agent_id)
        name = self.agent(agent_id).id

        def running() -> bool:
            try:
                agent = self.store.get_agent(name)
            except NotFound:
                return False  # (removed meanwhile)
            except StoreUnavailable:
                return True  # (it cannot be told now: followed on)
            return agent.state.live and local.running_here(agent, self.url) is not False

        return logs.follow_file(path, lines, follow, running)

    def task_log(self, task_id: str, lines: int | None = None,
                 follow: bool = False) -> Iterator[LogText]:
        """A task's output: stored once it finished (with its stderr, and how it ended);
        while it runs, what its current run streamed so far; with ``follow``, then its live
        output until it ends. ``lines``: only the last lines of what is there already."""
        if lines is not None:
            lines = limits.integer(lines, "lines", 0, limits.MAX_LIST)
        task = self.store.get_task(self._task_id(task_id))
        if task.state.finished:
            return logs.finished_log(task, lines)
        return logs.running_log(self.store, task, lines, follow, self._recover)
