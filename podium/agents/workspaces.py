"""Workspaces: the directory a claimed task runs in, entered before its backend starts and left
after the run ends.

Between claiming a task and running it, the worker asks its workspace where the run happens;
when the run is over (whatever its outcome, or when the task went back to the queue), it tells
the workspace so. The built-in ``shared`` workspace runs every task in the agent's working
directory. A workspace that gives each task its own directory (a git worktree per task, a
scratch copy) plugs in here without touching the worker.

Workspaces are plugins like backends: a ``Workspace`` subclass registered in the
``podium.workspaces`` entry point group, declaring the options it takes (typed, checked
before any task) as ``options``::

    [project.entry-points."podium.workspaces"]
    scratch = "mypackage.workspaces:ScratchWorkspace"
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from podium import plugins
from podium.agents.backends.options import Options
from podium.models import Outcome, Task

GROUP = "podium.workspaces"


class Workspace:
    """Where an agent's tasks run (one instance per worker)."""

    #: Name in the entry point group (set by the loader).
    name: str = ""
    #: The options it takes (none unless a subclass declares them).
    options: Options = Options()

    def __init__(self, root: Path, given: Mapping[str, str] | None = None):
        """``root``: the agent's working directory; ``given``: options as strings."""
        self.name = self.name or type(self).__name__
        self.root = root
        self.config = self.options.parse(self.name, given or {}, kind="workspace")

    def enter(self, task: Task) -> Path:  # pragma: no cover - interface
        """The directory ``task``'s run happens in (made now if it must be)."""
        raise NotImplementedError

    def leave(self, task: Task, outcome: Outcome | None) -> None:
        """The run of ``task`` is over: ``outcome`` is what it produced, None when the task
        went back to the queue. Default: nothing to do."""


class SharedWorkspace(Workspace):
    """Every task runs in the agent's own working directory."""

    def enter(self, task: Task) -> Path:
        return self.root


def available() -> list[str]:
    return plugins.names(GROUP)


def load(name: str) -> type[Workspace]:
    """The workspace class registered under ``name``."""
    return plugins.load(GROUP, name, Workspace, "workspace")
