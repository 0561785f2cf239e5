"""The dashboard's dialogs: the add-task form, the message form and the cancel confirmation.

The forms call the service themselves when Enter is pressed (in any field), and stay open
showing its one-line error when it refuses (``InvalidInput`` and the like), so nothing typed is
lost; they close with what they made. Text typed or shown is never read as markup.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from podium.errors import InvalidInput, PodiumError
from podium.models import Message, Task
from podium.service import Podium

#: The add-task form's fields: (key, label, placeholder).
TASK_FIELDS = (
    ("prompt", "prompt", "what to do (for shell agents: a command)"),
    ("agent", "agent", "the agent to run it (empty: any)"),
    ("role", "role", "or: a role one of the agents has (empty: any)"),
    ("priority", "priority", "high, normal or low (empty: normal)"),
    ("depends", "depends on", "task ids it waits for, comma or space separated"),
    ("timeout", "timeout", "seconds it may run (empty: no limit)"),
)


def task_args(values: dict[str, str]) -> dict[str, Any]:
    """The form's texts as ``Podium.add_task``'s arguments (the prompt verbatim; empty fields
    left to the service's defaults). Raises ``InvalidInput`` for a timeout that is no number."""
    args: dict[str, Any] = {
        "agent": values["agent"].strip() or None,
        "role": values["role"].strip() or None,
        "priority": values["priority"].strip() or None,
        "depends_on": [d for d in re.split(r"[\s,]+", values["depends"]) if d],
    }
    timeout = values["timeout"].strip()
    if timeout:
        try:
            args["timeout_s"] = float(timeout)
        except ValueError:
            raise InvalidInput(f"bad timeout {timeout!r}: a number of seconds") from None
    return args


class _Form(ModalScreen[Any]):
    """Labelled inputs; Enter in any of them submits (``submit``), Tab moves on, Escape
    closes without doing anything. A refusal shows in ``#form-error``."""

    BINDINGS = [Binding("escape", "close", "Close")]
    FIELDS: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, podium: Podium, title: str):
        super().__init__()
        self.podium = podium
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text), classes="dialog-title")
            for key, label, placeholder in self.FIELDS:
                with Horizontal(classes="field"):
                    yield Label(Text(label), classes="field-label")
                    yield Input(placeholder=placeholder, id=f"f-{key}", compact=True)
            yield Static(id="form-error")
            yield Label(Text("Enter: submit   Tab: next field   Escape: close"),
                        classes="dialog-hint")

    def values(self) -> dict[str, str]:
        return {key: self.query_one(f"#f-{key}", Input).value for key, _, _ in self.FIELDS}

    @property
    def error(self) -> str:
        """The error shown (empty: none)."""
        return str(self.query_one("#form-error", Static).content)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            made = self.submit(self.values())
        except PodiumError as e:
            self.query_one("#form-error", Static).update(Text(str(e), style="bold red"))
            return
        self.dismiss(made)

    def submit(self, values: dict[str, str]) -> Any:
        raise NotImplementedError

    def action_close(self) -> None:
        self.dismiss(None)


class TaskForm(_Form):
    """A new task: prompt, target agent or role, priority, dependencies, timeout."""

    FIELDS = TASK_FIELDS

    def __init__(self, podium: Podium):
        super().__init__(podium, "New task")

    def submit(self, values: dict[str, str]) -> Task:
        return self.podium.add_task(values["prompt"], **task_args(values))


class MessageForm(_Form):
    """A message to one agent (typed into its pane when it is interactive)."""

    FIELDS = (("message", "message", "the text to send"),)

    def __init__(self, podium: Podium, agent_id: str):
        super().__init__(podium, f"Message to {agent_id}")
        self.agent_id = agent_id

    def submit(self, values: dict[str, str]) -> Message:
        return self.podium.send(self.agent_id, values["message"])


class Confirm(ModalScreen[bool]):
    """A yes/no question: ``y`` is yes, ``n`` or Escape no."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"),
                Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question), classes="dialog-title")
            yield Label(Text("y: yes   n / Escape: no"), classes="dialog-hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
