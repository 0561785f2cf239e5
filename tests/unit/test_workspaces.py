"""Workspaces: the run supervisor asks the worker's workspace where each claimed task runs and
tells it when the run is over, whatever the outcome; workspaces are plugins with typed options.

A real SQLite store and the real shell backend (``pwd`` is the program run), in this process.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from podium.agents.backends import MAX_OUTPUT_BYTES, Option, Options, load
from podium.agents.execution import STOPPING, RunSupervisor
from podium.agents.heartbeat import Heartbeat
from podium.agents.workspaces import SharedWorkspace, Workspace
from podium.agents.workspaces import load as load_workspace
from podium.errors import InvalidInput
from podium.models import Outcome, Task, TaskSpec, TaskState
from podium.store import open_store


class PerTask(Workspace):
    """Each task in a directory of its own under the root, removed when its run is over."""

    options = Options(Option("keep", bool, False, "keep the directories"))

    def __init__(self, root: Path, given=None):
        super().__init__(root, given)
        self.left: list[tuple[str, TaskState | None]] = []

    def enter(self, task: Task) -> Path:
        d = self.root / task.id
        d.mkdir()
        return d

    def leave(self, task: Task, outcome: Outcome | None) -> None:
        self.left.append((task.id, outcome.status if outcome is not None else None))
        if not self.config.keep:
            (self.root / task.id).rmdir()


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    s.register_agent("a1", [], "shell", socket.gethostname(), os.getpid(), 30, {})
    yield s
    s.close()


def run_claimed(store, workspace, prompt="pwd", stopping_now=lambda: False):
    store.add_tasks([TaskSpec(prompt)])
    task = store.claim("a1", [], 30)
    waiter = store.agent_waiter("a1")
    sup = RunSupervisor(store, "a1", load("shell")(), waiter, Heartbeat(store, "a1", 30, 5.0),
                        workdir=workspace.root, max_output=MAX_OUTPUT_BYTES,
                        log=lambda msg: None, echo_output=False, stopping_now=stopping_now,
                        workspace=workspace)
    try:
        return task, sup.execute(task, task.prompt)
    finally:
        sup.close()
        waiter.close()


def test_each_run_happens_where_the_workspace_says_and_it_is_told_the_outcome(store, tmp_path):
    ws = PerTask(tmp_path, {"keep": "true"})
    task, outcome = run_claimed(store, ws)
    assert outcome is not None and outcome.status is TaskState.COMPLETED
    assert Path(outcome.output.decode().strip()) == tmp_path / task.id
    assert ws.left == [(task.id, TaskState.COMPLETED)]
    failed, outcome = run_claimed(store, ws, prompt="exit 3")
    assert outcome is not None and ws.left[-1] == (failed.id, TaskState.FAILED)


def test_a_task_handed_back_because_the_worker_stops_leaves_the_workspace_too(store, tmp_path):
    ws = PerTask(tmp_path)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    task, outcome = run_claimed(store, ws, prompt="sleep 20", stopping_now=stop.is_set)
    assert outcome is None  # back in the queue (reason: STOPPING)
    assert store.get_task(task.id).state is TaskState.QUEUED, STOPPING
    assert ws.left == [(task.id, None)]
    assert not (tmp_path / task.id).exists()


def test_the_shared_workspace_is_the_agents_own_directory(store, tmp_path):
    task, outcome = run_claimed(store, SharedWorkspace(tmp_path))
    assert outcome is not None and Path(outcome.output.decode().strip()) == tmp_path


def test_workspaces_are_plugins_with_checked_options(tmp_path):
    assert load_workspace("shared") is SharedWorkspace
    with pytest.raises(InvalidInput, match="unknown workspace 'nope': available workspaces are"):
        load_workspace("nope")
    with pytest.raises(InvalidInput, match=r"^workspace PerTask: option keep='maybe' must be"):
        PerTask(tmp_path, {"keep": "maybe"})
    with pytest.raises(InvalidInput, match="workspace shared: unknown option 'x'; "
                                           "it takes no options"):
        load_workspace("shared")(tmp_path, {"x": "1"})
