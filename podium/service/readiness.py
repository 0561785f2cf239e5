"""Readiness: whether a waiting task has anyone to run it, and if not, why and what to do.

A task is accepted whatever the team looks like (agents come and go), but a task that no live
agent can take waits forever without a word unless someone says so. ``Readiness`` reads the
team once and answers for any number of tasks: a task for an agent that is stopped, dead or
interactive (its pane takes what a person types, not tasks), for a role no live agent has, or
for anyone when no worker is live.
"""

from __future__ import annotations

from dataclasses import dataclass

from podium.models import Agent, Task, TaskState


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
                        f"'podium agent run --name {target_agent}'")
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
