"""``podium dashboard``: agents, the queue and a live event feed in the terminal (Textual).

It loads the tables once, then follows the event log (the service's ``EventFollower``, on a
thread of its own): each event updates only the rows it names (one agent, one task) — no
reloading of whole tables. A one-second timer only re-renders heartbeat ages from memory. Cells
are written as the CLI writes them (``podium.render``).

Keys: ``a`` add a task, ``c`` cancel the selected task, ``s`` send a message to the selected
agent, ``o`` open the output of the selected task (or the selected agent's latest task), ``q`` quit.
"""

from __future__ import annotations

import threading
import time

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Label, RichLog, Static

from podium import render
from podium.errors import PodiumError
from podium.models import Agent, Event, Task
from podium.service import EventFollower, Podium

AGENT_COLS = ("agent", "state", "role", "backend", "task", "heartbeat", "done", "tokens", "cost")
TASK_COLS = ("task", "state", "prio", "target", "agent", "tries", "prompt")
#: How long the event thread waits before reading again when the store could not be read.
RETRY_S = 1.0


def agent_cells(a: Agent) -> tuple[str, ...]:
    return (a.id, a.state.value, render.roles(a.roles), a.backend, a.current_task or "-",
            render.age(a.last_heartbeat), str(a.tasks_done), str(a.tokens_in + a.tokens_out),
            f"${a.cost_usd:.4f}")


def task_cells(t: Task) -> tuple[str, ...]:
    return (t.id, t.state.value, t.priority.name.lower(), render.target(t), t.agent_id or "-",
            render.tries(t), render.short(t.prompt))


class AskScreen(ModalScreen[dict | None]):
    """A small form: one Input per field; Enter in the last one submits, Escape cancels."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, title: str, fields: list[tuple[str, str]]):
        super().__init__()
        self.title_text = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        with Vertical(id="ask"):
            yield Label(self.title_text)
            for key, placeholder in self.fields:
                yield Input(placeholder=placeholder, id=f"f-{key}")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        if event.input is not inputs[-1]:
            inputs[inputs.index(event.input) + 1].focus()
            return
        self.dismiss({key: self.query_one(f"#f-{key}", Input).value for key, _ in self.fields})

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,o", "dismiss_none", "Close")]

    def __init__(self, title: str, body: str):
        super().__init__()
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        with Vertical(id="text"):
            yield Label(self.title_text)
            log = RichLog(wrap=True, markup=False, id="output")
            yield log

    def on_mount(self) -> None:
        self.query_one("#output", RichLog).write(self.body)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class Dashboard(App):
    TITLE = "Podium"
    CSS = """
    #tables { height: 2fr; }
    #agents, #tasks { width: 1fr; border: round $primary; }
    #events { height: 1fr; border: round $secondary; }
    #ask, #text { width: 80%; height: auto; max-height: 80%; border: thick $accent;
                  background: $panel; padding: 1; }
    AskScreen, TextScreen { align: center middle; }
    """
    BINDINGS = [
        Binding("a", "add_task", "Add task"),
        Binding("c", "cancel_task", "Cancel task"),
        Binding("s", "send", "Send message"),
        Binding("o", "output", "Output"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, podium: Podium, task_limit: int = 200):
        super().__init__()
        self.podium = podium
        self.task_limit = task_limit
        self.agents: dict[str, Agent] = {}
        self.events: EventFollower | None = None
        self.events_applied = 0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        with Horizontal(id="tables"):
            yield DataTable(id="agents", cursor_type="row")
            yield DataTable(id="tasks", cursor_type="row")
        yield RichLog(id="events", markup=False, max_lines=2000)
        yield Static(id="status")
        yield Footer()

    # -- loading and following -------------------------------------------------------------
    def on_mount(self) -> None:
        agents = self.query_one("#agents", DataTable)
        tasks = self.query_one("#tasks", DataTable)
        for col in AGENT_COLS:
            agents.add_column(col, key=col)
        for col in TASK_COLS:
            tasks.add_column(col, key=col)
        self.events = self.podium.follower()  # from now: before the tables load, so none is missed
        for a in self.podium.agents():
            self._put_agent(a)
        for t in self.podium.tasks(limit=self.task_limit):
            self._put_task(t)
        self.set_interval(1.0, self._tick)
        threading.Thread(target=self._follow, args=(self.events,), name="podium-events",
                         daemon=True).start()

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

    def apply_events(self, events: list[Event]) -> None:
        log = self.query_one("#events", RichLog)
        tasks: set[str] = set()
        agents: set[str] = set()
        for ev in events:
            output = render.event_output(ev)
            log.write(render.event_line(ev) + (f" | {render.short(output, 60)}" if output else ""))
            if ev.task_id and ev.kind != "task.output":
                tasks.add(ev.task_id)
            if ev.agent_id and (ev.kind.startswith("agent.") or ev.kind.startswith("task.")):
                agents.add(ev.agent_id)
        for task_id in tasks:
            try:
                self._put_task(self.podium.task(task_id))
            except PodiumError:
                pass
        for agent_id in agents:
            try:
                self._put_agent(self.podium.agent(agent_id))
            except PodiumError:
                pass
        self.events_applied += len(events)

    def _put_agent(self, a: Agent) -> None:
        table = self.query_one("#agents", DataTable)
        self.agents[a.id] = a
        cells = agent_cells(a)
        if a.id in table.rows:
            for col, value in zip(AGENT_COLS, cells):
                table.update_cell(a.id, col, value)
        else:
            table.add_row(*cells, key=a.id)

    def _put_task(self, t: Task) -> None:
        table = self.query_one("#tasks", DataTable)
        cells = task_cells(t)
        if t.id in table.rows:
            for col, value in zip(TASK_COLS, cells):
                table.update_cell(t.id, col, value)
        else:
            table.add_row(*cells, key=t.id)

    def _tick(self) -> None:
        table = self.query_one("#agents", DataTable)
        for a in self.agents.values():
            if a.id in table.rows:
                table.update_cell(a.id, "heartbeat", render.age(a.last_heartbeat))
        counts: dict[str, int] = {}
        tasks = self.query_one("#tasks", DataTable)
        for key in tasks.rows:
            state = tasks.get_cell(key, "state")
            counts[state] = counts.get(state, 0) + 1
        self.query_one("#status", Static).update(
            f" {self.podium.url}   agents {len(self.agents)}   "
            + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    # -- selection -------------------------------------------------------------------------
    def _selected(self, table_id: str) -> str | None:
        table = self.query_one(table_id, DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # -- actions ---------------------------------------------------------------------------
    def action_add_task(self) -> None:
        def done(values: dict | None) -> None:
            if not values or not values["prompt"].strip():
                return
            try:
                t = self.podium.add_task(values["prompt"], agent=values["agent"].strip() or None)
                self.notify(f"queued {t.id}")
            except PodiumError as e:
                self.notify(str(e), severity="error")

        self.push_screen(AskScreen("New task", [("prompt", "prompt"),
                                                ("agent", "agent (empty: any)")]), done)

    def action_cancel_task(self) -> None:
        task_id = self._selected("#tasks")
        if task_id is None:
            return
        try:
            self.podium.cancel(task_id, "cancelled from the dashboard")
            self.notify(f"cancelled {task_id}")
        except PodiumError as e:
            self.notify(str(e), severity="error")

    def action_send(self) -> None:
        agent_id = self._selected("#agents")
        if agent_id is None:
            return

        def done(values: dict | None) -> None:
            if values and values["message"]:
                try:
                    m = self.podium.send(agent_id, values["message"])
                    self.notify(f"message {m.id} sent to {agent_id}")
                except PodiumError as e:
                    self.notify(str(e), severity="error")

        self.push_screen(AskScreen(f"Message to {agent_id}", [("message", "message")]), done)

    def action_output(self) -> None:
        focused = self.focused
        task_id = None
        if isinstance(focused, DataTable) and focused.id == "agents":
            agent_id = self._selected("#agents")
            if agent_id:
                recent = self.podium.tasks(agent=agent_id, limit=1)
                task_id = recent[0].id if recent else None
        else:
            task_id = self._selected("#tasks")
        if task_id is None:
            self.notify("no task to show")
            return
        task = self.podium.task(task_id)
        body = render.output_text(task.output)
        if task.error:
            body += f"\n[error] {task.error}"
        self.push_screen(TextScreen(f"{task_id} — {task.state.value}", body or "(no output yet)"))

    def on_unmount(self) -> None:
        if self.events is not None:
            self.events.stop()
