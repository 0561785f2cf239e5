"""The dashboard's two tables: the agents (by name) and the queue (active work first).

Each keeps the rows it shows by id and is told of a changed agent or task with ``put``; cells
are ``rich.text.Text`` (never markup: a prompt shows as it was typed), states coloured with
``podium.render.STATE_STYLES``, and columns widen to what they hold (a task id is never cut).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from podium import render
from podium.models import Agent, Task, name_key

AGENT_COLS = ("agent", "state", "role", "backend", "task", "heartbeat", "done", "tokens", "cost")
TASK_COLS = ("task", "state", "prio", "target", "agent", "tries", "prompt")


def state_cell(state: str) -> Text:
    return Text(state, style=render.state_style(state))


def agent_cells(a: Agent) -> tuple[Text, ...]:
    return (Text(a.id), state_cell(a.state.value), Text(render.roles(a.roles)), Text(a.backend),
            Text(a.current_task or "-"), Text(render.age(a.last_heartbeat)),
            Text(str(a.tasks_done)), Text(str(a.tokens_in + a.tokens_out)),
            Text(f"${a.cost_usd:.4f}"))


def task_cells(t: Task) -> tuple[Text, ...]:
    return (Text(t.id), state_cell(t.state.value), Text(t.priority.name.lower()),
            Text(render.target(t)), Text(t.agent_id or "-"), Text(render.tries(t)),
            Text(render.short(t.prompt, 60)))


class _Table(DataTable):
    """A table of rows kept by id, each row written whole by ``cells``."""

    COLS: tuple[str, ...] = ()
    TITLE = ""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.border_title = self.TITLE
        for col in self.COLS:
            self.add_column(col, key=col)

    def selected(self) -> str | None:
        """The id of the row under the cursor (None: the table is empty)."""
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def _write(self, key: str, cells: tuple[Text, ...]) -> bool:
        """Write the row ``key``; True when it is new."""
        if key in self.rows:
            for col, value in zip(self.COLS, cells):
                self.update_cell(key, col, value, update_width=True)
            return False
        self.add_row(*cells, key=key)
        return True

    def _sort_keeping_cursor(self, key) -> None:
        """Sort the rows (``key`` of a row's id), the cursor staying on the row it was on."""
        selected = self.selected()
        self.sort(self.COLS[0], key=lambda cell: key(cell.plain))  # (the id column)
        if selected is not None and selected in self.rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)


class AgentTable(_Table):
    """The agents, by name (numbers in them by value); ``tick`` re-renders their heartbeat
    ages."""

    COLS = AGENT_COLS
    TITLE = "Agents"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.agents: dict[str, Agent] = {}

    def put(self, a: Agent) -> None:
        self.agents[a.id] = a
        if self._write(a.id, agent_cells(a)):
            self._sort_keeping_cursor(name_key)
        self.border_subtitle = f"{len(self.agents)}"

    def drop(self, agent_id: str) -> None:
        """The agent is gone from the store: its row too."""
        if self.agents.pop(agent_id, None) is not None and agent_id in self.rows:
            self.remove_row(agent_id)
        self.border_subtitle = f"{len(self.agents)}"

    def tick(self) -> None:
        for a in self.agents.values():
            if a.id in self.rows:
                self.update_cell(a.id, "heartbeat", Text(render.age(a.last_heartbeat)),
                                 update_width=True)


class QueueTable(_Table):
    """The tasks: running, queued and blocked first, in the order they will be served, then the
    history, newest first (at most ``history`` finished tasks kept; the oldest go)."""

    COLS = TASK_COLS
    TITLE = "Queue"

    def __init__(self, history: int = 200, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tasks: dict[str, Task] = {}
        self.history = history
        self._unsorted = False

    def put(self, t: Task) -> None:
        old = self.tasks.get(t.id)
        self.tasks[t.id] = t
        new = self._write(t.id, task_cells(t))
        if new or old is None or render.active_first(old) != render.active_first(t):
            self._unsorted = True

    def reorder(self) -> None:
        """Put the rows in order (after a batch of ``put``), dropping the oldest history."""
        if not self._unsorted:
            return
        self._unsorted = False
        finished = sorted((t for t in self.tasks.values() if t.state.finished),
                          key=lambda t: t.seq)
        for t in finished[:max(0, len(finished) - self.history)]:
            del self.tasks[t.id]
            self.remove_row(t.id)
        self._sort_keeping_cursor(lambda task_id: render.active_first(self.tasks[task_id]))
        active = sum(1 for t in self.tasks.values() if not t.state.finished)
        self.border_subtitle = f"{active} active, {len(self.tasks) - active} finished"
