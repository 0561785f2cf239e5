"""Readiness: whether a waiting task has anyone to run it, and if not, why and what to do.

A task is accepted whatever the team looks like (agents come and go), but a task that no live
agent can take waits forever without a word unless someone says so. ``Readiness`` reads the
team once and answers for any number of tasks: a task for an agent that is stopped, dead or
interactive (its pane takes what a person types, not tasks), for a role no live agent has, or
for anyone when no worker is live. ``cancelled_at_add`` says why a task was cancelled as it was
added (a dependency had failed or been cancelled already): ``ReportCalls.add_warning`` gives a
face the one warning to show for a task just added.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from podium.models import Agent, Task, TaskState


def restart_command(agent: Agent) -> str:
    """The command that starts ``agent`` again as it ran: its name, its backend (the default,
    ``shell``, would run another backend's prompts as shell commands) and its roles, quoted for
    a POSIX shell so that it can be pasted as it is."""
    words = ["podium", "agent", "run", "--name", agent.id, "--backend", agent.backend]
    for role in agent.roles:
        words += ["--role", role]
    return shlex.join(words)


@dataclass(frozen=True)
class Readiness:
    """The live team as a task waiting for it sees it."""

    agents: dict[str, Agent]
    #: Roles of the live agents that take tasks ("" stands for any agent at all).
    roles: frozenset[str]

    @classmethod
    def of(cls, agents: list[Agent]) -> Readiness:
        workers = [a for a in agents if a.state.live and not a.meta.get("interactive")]
        roles = {r for a in workers for r in a.roles} | ({""} if workers else set())
        return cls({a.id: a for a in agents}, frozenset(roles))

    def reason(self, target_agent: str | None, target_role: str | None) -> str | None:
        """Why a queued task for ``target_agent`` / ``target_role`` cannot run now, with what to
        do about it; None when a live agent can take it."""
        if target_agent is not None:
            a = self.agents.get(target_agent)
            if a is None:
                return f"agent {target_agent} does not exist"
            if a.meta.get("interactive"):
                return (f"agent {target_agent} is interactive: its pane takes what a person "
                        "types, not tasks")
            if not a.state.live:
                return (f"agent {target_agent} is {a.state.value}; start it again with "
                        f"'{restart_command(a)}'")
            if target_role is not None and target_role not in a.roles:
                return f"agent {target_agent} does not have role {target_role!r}"
            return None
        if target_role is not None:
            if target_role not in self.roles:
                return (f"no live agent has role {target_role!r}; start one with "
                        f"'podium up 1 --role {target_role}'")
            return None
        if "" not in self.roles:
            return "no live agent can take it; start some with 'podium up N'"
        return None

    def task_reason(self, task: Task) -> str | None:
        """Why ``task`` cannot run now (queued or blocked ones; None for the others)."""
        if task.state not in (TaskState.QUEUED, TaskState.BLOCKED):
            return None
        return self.reason(task.target_agent, task.target_role)


def cancelled_at_add(task: Task) -> str | None:
    """Why ``task``, just added, was cancelled at once, and what to do about it: one of its
    dependencies had failed or been cancelled before it was added (the documented rule:
    dependents of a failed task are cancelled); None for any other task."""
    if task.state is not TaskState.CANCELLED or not task.depends_on or not task.error:
        return None
    words = task.error.split()  # ("dependency", its id, its state), as the store gives it
    if len(words) != 3 or words[0] != "dependency" or words[1] not in task.depends_on:
        return None
    dep, state = words[1], words[2]
    ended = "failed" if state == "failed" else f"been {state}"
    return (f"{task.id} was cancelled at once: its dependency {dep} had already {ended}, so it "
            f"will never run; 'podium task retry {dep}' queues {dep} again, and {task.id} "
            "after it")
