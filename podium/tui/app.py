"""``podium dashboard``: agents, the queue and a live event feed in the terminal (Textual).

On opening it loads the agents, the active tasks and the latest history, and shows the last
``backlog`` events. Then two threads of its own feed it:

- the event follower (the service's ``EventFollower``): each event is written to the Events
  panel and the agents and tasks it names are read again from the service (the agent that
  held a task too), so a row shows what the store holds, never a guess from the event;
- a light refresh every ``refresh_s`` seconds (``Podium.status()``): the live agents as the
  store has them (heartbeat ages from their ``last_heartbeat``; what changes without an event,
  such as an agent going idle after its running task was cancelled) and the status line.

A one-second timer re-renders the ages. Cells are written as the CLI writes them
(``podium.render``), never as markup. Panels: ``tui.panels``; dialogs: ``tui.forms``; a
task's live output: ``tui.output``.

Keys: ``a`` add a task, ``c`` cancel the selected task (asks first; only for blocked, queued
or running ones), ``s`` send a message to the selected agent, ``o`` follow the output of the
selected task (or the selected agent's current or latest task), ``q`` quit.
"""

from __future__ import annotations

import threading
import time

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from podium import render
from podium.errors import NotFound, PodiumError
from podium.models import Agent, Event, Task, TaskState, TeamStatus
from podium.service import EventFollower, Podium
from podium.tui.forms import Confirm, MessageForm, TaskForm
from podium.tui.output import OutputScreen
from podium.tui.panels import AgentTable, QueueTable

#: How long the event thread waits before reading again when the store could not be read.
RETRY_S = 1.0
#: The actions of the main screen (not offered while a dialog is open).
MAIN_ACTIONS = frozenset({"add_task", "cancel_task", "send", "output", "quit"})


class Dashboard(App):
    TITLE = "Podium"
    CSS = """
    #agents { height: auto; max-height: 40%; border: round $primary; }
    #tasks { height: 2fr; border: round $primary; }
    #events { height: 1fr; border: round $secondary; }
    #agents, #tasks, #events { border-title-color: $text; border-title-style: bold; }
    #status { height: 1; text-wrap: nowrap; text-overflow: ellipsis; overflow: hidden; }
    .dialog { width: 80%; height: auto; max-height: 90%; border: thick $accent;
              background: $panel; padding: 1 2; }
    #output-box { height: 80%; }
    #output { height: 1fr; }
    .dialog-title { text-style: bold; margin-bottom: 1; }
    .dialog-hint { color: $text-muted; margin-top: 1; }
    #form-error { color: $error; height: auto; margin-top: 1; }
    .field { height: 1; margin-bottom: 1; }
    .field-label { width: 12; }
    .field Input { width: 1fr; }
    TaskForm, MessageForm, Confirm, OutputScreen { align: center middle; }
    """
    BINDINGS = [
        Binding("a", "add_task", "Add task"),
        Binding("c", "cancel_task", "Cancel task"),
        Binding("s", "send", "Send message"),
        Binding("o", "output", "Output"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, podium: Podium, task_limit: int = 200, backlog: int = 50,
                 refresh_s: float = 2.0):
        super().__init__()
        self.podium = podium
        self.task_limit = task_limit
        self.backlog = backlog
        self.refresh_s = refresh_s
        self.events: EventFollower | None = None
        self.events_applied = 0
        self._stopping = threading.Event()
        self._status: TeamStatus | None = None
        self._status_error: str | None = None
        self._refreshed_at: float | None = None

    @property
    def agents(self) -> dict[str, Agent]:
        return self.query_one("#agents", AgentTable).agents

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        yield AgentTable(id="agents")
        yield QueueTable(self.task_limit, id="tasks")
        log = RichLog(id="events", markup=False, max_lines=2000)
        log.border_title = "Events"
        yield log
        yield Static(id="status", markup=False)
        yield Footer()

    # -- loading and following -------------------------------------------------------------
    def on_mount(self) -> None:
        self.events = self.podium.follower()  # from now: before the tables load, so none is missed
        agents = self.query_one("#agents", AgentTable)
        for a in self.podium.agents():
            agents.put(a)
        queue = self.query_one("#tasks", QueueTable)
        # The active tasks however old, then the latest history.
        for state in (TaskState.RUNNING, TaskState.QUEUED, TaskState.BLOCKED, None):
            for t in self.podium.tasks(state=state.value if state else None,
                                       limit=self.task_limit):
                queue.put(t)
        queue.reorder()
        self._show_backlog(self.events.cursor)
        self._apply_status(*self._read_status())
        self.set_interval(1.0, self._tick)
        threading.Thread(target=self._follow, args=(self.events,), name="podium-events",
                         daemon=True).start()
        threading.Thread(target=self._refresh, name="podium-refresh", daemon=True).start()

    def _show_backlog(self, cursor: int) -> None:
        """The last ``backlog`` events up to ``cursor`` (the follower goes on from there)."""
        if self.backlog <= 0 or cursor <= 0:
            return
        recent = self.podium.events(after=max(0, cursor - self.backlog), limit=self.backlog)
        self._write_events([ev for ev in recent if ev.id <= cursor])

    def _follow(self, events: EventFollower) -> None:
        """On its own thread: hand each batch of new events to the app until it unmounts."""
        with events:
            while not events.stopped:
                try:
                    batch = events.poll()
                except PodiumError:
                    time.sleep(RETRY_S)  # the store cannot be read just now
                    continue
                if batch:
                    try:
                        self.call_from_thread(self.apply_events, batch)
                    except RuntimeError:
                        return  # the app is gone

    def _refresh(self) -> None:
        """On its own thread: every ``refresh_s``, the team as the store has it."""
        while not self._stopping.wait(self.refresh_s):
            status, error = self._read_status()
            try:
                self.call_from_thread(self._apply_status, status, error)
            except RuntimeError:
                return  # the app is gone

    def _read_status(self) -> tuple[TeamStatus | None, str | None]:
        try:
            return self.podium.status(), None
        except PodiumError as e:
            return None, str(e)

    def _apply_status(self, status: TeamStatus | None, error: str | None) -> None:
        self._status_error = error
        if status is not None:
            self._status, self._refreshed_at = status, time.monotonic()
            agents = self.query_one("#agents", AgentTable)
            live = {a.id: a for a in status.live_agents}
            for a in live.values():
                agents.put(a)
            for agent_id, a in list(agents.agents.items()):
                if a.state.live and agent_id not in live:  # stopped or found dead since
                    self._reread_agent(agent_id)
            self.refresh_bindings()
        self._show_status()

    def _write_events(self, events: list[Event]) -> None:
        log = self.query_one("#events", RichLog)
        for ev in events:
            output = render.event_output(ev)
            line = render.event_line(ev) + (f" | {render.short(output, 60)}" if output else "")
            log.write(Text(line, style=render.event_style(ev)))

    def apply_events(self, events: list[Event]) -> None:
        self._write_events(events)
        queue = self.query_one("#tasks", QueueTable)
        tasks: set[str] = set()
        agents: set[str] = set()
        for ev in events:
            if ev.task_id and ev.kind != "task.output":
                tasks.add(ev.task_id)
            if ev.agent_id and (ev.kind.startswith("agent.") or ev.kind.startswith("task.")):
                agents.add(ev.agent_id)
        for task_id in tasks:
            held_by = queue.tasks[task_id].agent_id if task_id in queue.tasks else None
            try:
                t = self.podium.task(task_id)
            except PodiumError:
                continue
            queue.put(t)
            agents.update(a for a in (held_by, t.agent_id) if a)
        queue.reorder()
        for agent_id in agents:
            self._reread_agent(agent_id)
        self.events_applied += len(events)
        self.refresh_bindings()

    def _reread_agent(self, agent_id: str) -> None:
        table = self.query_one("#agents", AgentTable)
        try:
            table.put(self.podium.agent(agent_id))
        except NotFound:  # (removed: 'podium agent prune')
            table.drop(agent_id)
        except PodiumError:
            pass

    def _tick(self) -> None:
        self.query_one("#agents", AgentTable).tick()
        self._show_status()

    def _show_status(self) -> None:
        """The status line: the store, agents and tasks by state; one line, cut to width."""
        st = self._status
        parts = [self.podium.shareable_url()[0]]
        if st is not None:
            parts.append("agents " + (" ".join(f"{k} {v}" for k, v in
                                               sorted(st.agents_by_state.items())) or "none"))
            parts.append("tasks " + (" ".join(f"{k} {v}" for k, v in
                                              sorted(st.tasks_by_state.items()) if v) or "none"))
            parts.extend(st.warnings)
        if self._status_error is not None:
            since = "" if self._refreshed_at is None else \
                f" (as of {int(time.monotonic() - self._refreshed_at)}s ago)"
            parts.append(f"store unreadable{since}: {self._status_error}")
        widget = self.query_one("#status", Static)
        width = widget.size.width or self.size.width
        widget.update(Text(render.short(" " + "   ".join(parts), max(width, 2)),
                           no_wrap=True, overflow="ellipsis"))

    # -- selection -------------------------------------------------------------------------
    def selected_task(self) -> Task | None:
        queue = self.query_one("#tasks", QueueTable)
        task_id = queue.selected()
        return queue.tasks.get(task_id) if task_id else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_ACTIONS and len(self.screen_stack) > 1:
            return False  # a dialog is open: its keys only
        if action == "cancel_task":
            t = self.selected_task()
            return True if t is not None and not t.state.finished else None
        if action == "send":
            return True if self.query_one("#agents", AgentTable).selected() else None
        return True

    # -- actions ---------------------------------------------------------------------------
    def action_add_task(self) -> None:
        def done(task: Task | None) -> None:
            if task is not None:
                self.notify(f"queued {task.id}", markup=False)
                queue = self.query_one("#tasks", QueueTable)
                queue.put(task)
                queue.reorder()

        self.push_screen(TaskForm(self.podium), done)

    def action_cancel_task(self) -> None:
        selected = self.selected_task()
        if selected is None:
            return
        try:
            task = self.podium.task(selected.id)
        except PodiumError as e:
            self.notify(str(e), severity="error", markup=False)
            return
        if task.state.finished:
            self.notify(f"{task.id} is {task.state.value} already: only blocked, queued or "
                        "running tasks can be cancelled", markup=False)
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.podium.cancel(task.id, "cancelled from the dashboard")
                self.notify(f"cancelled {task.id}", markup=False)
            except PodiumError as e:
                self.notify(str(e), severity="error", markup=False)

        self.push_screen(Confirm(f"Cancel {task.id} ({task.state.value}): "
                                 f"{render.short(task.prompt, 60)}?"), answered)

    def action_send(self) -> None:
        agent_id = self.query_one("#agents", AgentTable).selected()
        if agent_id is None:
            return

        def done(message) -> None:
            if message is not None:
                self.notify(f"message {message.id} sent to {agent_id}", markup=False)

        self.push_screen(MessageForm(self.podium, agent_id), done)

    def action_output(self) -> None:
        task_id = None
        if isinstance(self.focused, AgentTable):
            agent_id = self.focused.selected()
            if agent_id:
                current = self.agents[agent_id].current_task
                recent = [] if current else self.podium.tasks(agent=agent_id, limit=1)
                task_id = current or (recent[0].id if recent else None)
        else:
            task_id = self.query_one("#tasks", QueueTable).selected()
        if task_id is None:
            self.notify("no task to show")
            return
        try:
            task = self.podium.task(task_id)
        except PodiumError as e:
            self.notify(str(e), severity="error", markup=False)
            return
        self.push_screen(OutputScreen(self.podium, task))

    def on_unmount(self) -> None:
        self._stopping.set()
        if self.events is not None:
            self.events.stop()
