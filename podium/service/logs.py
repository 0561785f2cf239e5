"""Logs: an agent's log file (what ``podium up`` writes for each background worker) and a task's
output (stored once it finished, streamed as ``task.output`` events while it runs), read
whole or followed. ``TeamCalls.agent_log``, ``agent_log_text`` and ``task_log`` are the
service's calls; what they share is here."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from podium.models import Event, Task
from podium.service.base import SAFETY_POLL_S
from podium.service.events import FINISHING_KINDS, EventFollower
from podium.store import Store

#: How often a followed agent log is read again at its end.
LOG_POLL_S = 0.2
#: Events after which the output streamed so far belongs to a run that ended (a new run's
#: output follows, if any).
NEW_RUN_KINDS = frozenset({"task.claimed", "task.requeued", "task.retried"})


@dataclass
class LogText:
    """A piece of a log: ``stream`` is ``out`` (the task's output, or the agent's log), ``err``
    (the task's stderr) or ``note`` (a line about the task, for a person)."""

    data: bytes
    stream: str = "out"


def log_path(home: Path, agent_id: str) -> Path:
    """Where ``podium up`` puts the agent's log (``podium.supervisor.log_dir``)."""
    return home / "logs" / f"{agent_id}.log"


def last_lines(data: bytes, n: int | None) -> bytes:
    """The last ``n`` lines of ``data`` (all of it: None)."""
    if n is None:
        return data
    if n == 0:
        return b""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = end
    for _ in range(n):
        start = data.rfind(b"\n", 0, start)
        if start < 0:
            return data
    return data[start + 1:]


def _tail(f: BinaryIO, n: int) -> bytes:
    """The last ``n`` lines of an open file, read backwards from its end in blocks; leaves the
    file at its end."""
    size = f.seek(0, os.SEEK_END)
    pos, data = size, b""
    while pos > 0 and data.count(b"\n") <= n:
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    f.seek(size)
    return last_lines(data, n)


def follow_file(path: Path, lines: int, follow: bool,
                running: Callable[[], bool]) -> Iterator[bytes]:
    """The last ``lines`` lines of the file; then, with ``follow``, what is appended to it, for
    as long as ``running()`` says its writer runs (asked at the file's end), and what it wrote
    before it stopped."""
    with open(path, "rb") as f:
        yield _tail(f, lines)
        if not follow:
            return
        last_look = 0.0
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if os.fstat(f.fileno()).st_size < f.tell():  # (cut short: read it from the start)
                f.seek(0)
                continue
            if time.monotonic() - last_look >= 1.0:
                last_look = time.monotonic()
                if not running():
                    rest = f.read()
                    if rest:
                        yield rest
                    return
            time.sleep(LOG_POLL_S)


def finished_log(task: Task, lines: int | None) -> Iterator[LogText]:
    """A finished task's stored output and stderr, and a note when it did not complete."""
    if task.output_pruned:
        yield LogText(f"{task.id}'s output was pruned (podium store prune)".encode(), "note")
    if task.output:
        yield LogText(last_lines(task.output, lines))
    if task.stderr:
        yield LogText(last_lines(task.stderr, lines), "err")
    if task.state.value != "completed":
        yield LogText(f"{task.id} {task.state.value}"
                      f"{': ' + task.error if task.error else ''}".encode(), "note")


def _replay(store: Store, task_id: str) -> tuple[list[Event], int, bool]:
    """The output events of the task's current run (since its last claim, requeue or retry),
    the id of the last event read, and whether the task finished meanwhile."""
    run: list[Event] = []
    after, finished = 0, False
    while batch := store.read_events(after, 1000, task_id):
        for ev in batch:
            if ev.kind in NEW_RUN_KINDS:
                run = []
            elif ev.kind == "task.output":
                run.append(ev)
            elif ev.kind in FINISHING_KINDS:
                finished = True
            after = ev.id
    return run, after, finished


def running_log(store: Store, task: Task, lines: int | None, follow: bool,
                recover: Callable[[], None]) -> Iterator[LogText]:
    """An unfinished task's output streamed so far in its current run; with ``follow``, what
    comes until it ends (``recover`` is called now and then: the agent running it may be gone
    with nobody else to notice), then how it ended."""
    run, cursor, finished = _replay(store, task.id)
    if finished:  # (it ended between the two reads: its stored output is whole)
        yield from finished_log(store.get_task(task.id), lines)
        return
    shown = "".join(ev.data.get("chunk", "") for ev in run).encode("utf-8")
    if shown:
        yield LogText(last_lines(shown, lines))
    if not follow:
        if not run and task.state.value != "running":
            yield LogText(f"{task.id} is {task.state.value}: no output yet".encode(), "note")
        return
    truncated = any(ev.data.get("stream_truncated") for ev in run)
    last_recover = time.monotonic()
    with EventFollower(store, cursor, task.id) as events:
        while True:
            for ev in events.poll(SAFETY_POLL_S):
                if ev.kind == "task.output":
                    truncated = truncated or bool(ev.data.get("stream_truncated"))
                    yield LogText(ev.data.get("chunk", "").encode("utf-8"))
                elif ev.kind == "task.requeued":
                    yield LogText(f"{task.id} requeued ({ev.data.get('reason')}); its next run "
                                  "follows".encode(), "note")
                elif ev.kind in FINISHING_KINDS:
                    end = store.get_task(task.id)
                    if truncated:
                        yield LogText(f"live output stops at 1 MiB: 'podium task result "
                                      f"{task.id} --raw' has all of it".encode(), "note")
                    yield LogText(f"{task.id} {end.state.value}"
                                  f"{': ' + end.error if end.error else ''}".encode(), "note")
                    return
            if time.monotonic() - last_recover >= SAFETY_POLL_S:
                recover()
                last_recover = time.monotonic()
