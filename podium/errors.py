"""Errors that faces turn into one clear line for the user.

Every error Podium raises on purpose is a ``PodiumError``; its message says what went wrong
and, where it can, how to fix it. Anything else reaching a face is a bug.
"""


class PodiumError(Exception):
    """Base of all errors that are meant for the user."""


class NotFound(PodiumError):
    """An agent, task, message or context key that does not exist."""


class StoreNotFound(NotFound):
    """No store where one was looked for, and the command may not create one."""


class InvalidInput(PodiumError):
    """Input that Podium refuses: bad priority, malformed JSON, bad store URL..."""


class Conflict(PodiumError):
    """The request clashes with the current state (e.g. an agent name already live)."""


class AgentRunning(Conflict):
    """An agent of that name is live: its process ``pid`` on ``host`` holds it (a caller on
    that host that finds the process gone may take the name over, see ``register_agent``)."""

    def __init__(self, name: str, pid: int | None, host: str):
        super().__init__(f"agent {name!r} is already running (pid {pid} on {host}); "
                         "stop it first or choose another --name")
        self.name, self.pid, self.host = name, pid, host


class AgentReplaced(Conflict):
    """The agent's name was taken over (its lease ran out, and a new worker registered it):
    the store's row names process ``pid`` on ``host``, not the caller, who is no longer that
    agent and must neither beat for it nor deregister it."""

    def __init__(self, name: str, pid: int | None, host: str):
        super().__init__(f"agent {name!r} was taken over by pid {pid} on {host}: "
                         "this process is no longer that agent")
        self.name, self.pid, self.host = name, pid, host


class StoreError(PodiumError):
    """The store could not be opened or written (missing directory, full disk...)."""


class BackendUnavailable(PodiumError):
    """A backend cannot run here: its program or model is missing, or it is not logged in."""


class MemoryUnavailable(PodiumError):
    """Semantic memory cannot work here: its embedding model is missing or not the pinned
    file, or its vector store's package or server is not there. Never a silent fall-back."""


class StoreUnavailable(StoreError):
    """The store cannot be used right now — its server is unreachable, its disk is full, a
    lock is held too long — and a retry may succeed."""
