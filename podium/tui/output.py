"""A task's output in the dashboard, followed live while the task runs.

A finished task shows its result (output, then its error). An unfinished one shows what it
printed so far and then each ``task.output`` event as it is committed, read by a follower of
that task's events only (``Podium.follower(task_id=...)``), on a thread of its own, from the
task's first event; it ends when the task ends, and the result replaces the live text when it
says more (the live stream is cut at a limit; the result keeps everything).
"""

from __future__ import annotations

import threading
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Log

from podium import render
from podium.errors import PodiumError
from podium.models import Event, Task, TaskState
from podium.service import EventFollower, Podium

#: How long the thread waits before reading again when the store could not be read.
RETRY_S = 1.0
#: The events that end a task (its output is complete then).
FINISHING_KINDS = frozenset(f"task.{s.value}" for s in TaskState if s.finished)


def result_text(task: Task) -> str:
    body = render.output_text(task.output)
    if task.error:
        body += ("" if not body or body.endswith("\n") else "\n") + f"[error] {task.error}"
    return body


class OutputScreen(ModalScreen[None]):
    """The output of one task; Escape, ``q`` or ``o`` closes it (and stops following)."""

    BINDINGS = [Binding("escape,q,o", "close", "Close")]

    def __init__(self, podium: Podium, task: Task):
        super().__init__()
        self.podium = podium
        self.task_id = task.id
        self.initial = task
        #: All the text shown so far.
        self.body = ""
        #: True while the output is followed live.
        self.following = False
        self.follower: EventFollower | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="output-box"):
            yield Label(id="output-title", classes="dialog-title")
            yield Log(id="output", highlight=False, max_lines=20_000)

    def on_mount(self) -> None:
        task = self.initial
        if task.state.finished:
            self._show_result(task)
            return
        # From the task's first event: what it printed so far, then on as it prints.
        self.follower = self.podium.follower(after=0, task_id=self.task_id)
        self.following = True
        self._title(f"{task.state.value}: following its output")
        threading.Thread(target=self._follow, args=(self.follower,), name="podium-output",
                         daemon=True).start()

    def _title(self, what: str) -> None:
        self.query_one("#output-title", Label).update(Text(f"{self.task_id} — {what}"))

    def _write(self, text: str) -> None:
        self.body += text
        # (escaped: a program's ESC sequences must not reach the terminal the dashboard is in)
        self.query_one("#output", Log).write(render.visible_lines(text))

    def _show_result(self, task: Task) -> None:
        """The finished task's result, in place of the live text when that says less."""
        self.following = False
        text = result_text(task)
        if text != self.body:
            self.body = ""
            self.query_one("#output", Log).clear()
            self._write(text or "(no output)")
        exit_code = "" if task.exit_code is None else f", exit {task.exit_code}"
        self._title(f"{task.state.value}{exit_code}")

    def _follow(self, events: EventFollower) -> None:
        """On its own thread: hand the task's events to the screen until it ends or closes."""
        with events:
            while not events.stopped:
                try:
                    batch = events.poll()
                except PodiumError:
                    time.sleep(RETRY_S)
                    continue
                if not batch:
                    continue
                try:
                    self.app.call_from_thread(self._apply, batch)
                except RuntimeError:
                    return  # the app is gone
                if any(ev.kind in FINISHING_KINDS for ev in batch):
                    return

    def _apply(self, batch: list[Event]) -> None:
        if not self.following:
            return
        for ev in batch:
            if ev.kind == "task.output":
                self._write(render.event_output(ev) or "")
            elif ev.kind in FINISHING_KINDS:
                try:
                    self._show_result(self.podium.task(self.task_id))
                except PodiumError as e:
                    self._title(f"{ev.kind.partition('.')[2]} (its result: {e})")
                return

    def action_close(self) -> None:
        self.dismiss(None)

    def on_unmount(self) -> None:
        self.following = False
        if self.follower is not None:
            self.follower.stop()
