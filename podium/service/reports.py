"""Reports: the team at a glance (status), what it cost, and whether waiting tasks can run."""

from __future__ import annotations

from podium.clock import now
from podium.models import CostReport, Task, TeamStatus, Unrunnable
from podium.service.readiness import Readiness
from podium.service.team import TeamCalls


class ReportCalls(TeamCalls):
    def status(self) -> TeamStatus:
        agents = self.agents()
        by_state: dict[str, int] = {}
        for a in agents:
            by_state[a.state.value] = by_state.get(a.state.value, 0) + 1
        ready = Readiness.of(agents)
        unrunnable = [Unrunnable(n, agent, role, reason)
                      for agent, role, n in self.store.queued_targets()
                      if (reason := ready.reason(agent, role)) is not None]
        return TeamStatus(store_url=self.url, agents_by_state=by_state,
                          tasks_by_state=self.store.counts(),
                          live_agents=[a for a in agents if a.state.live],
                          last_event_id=self.store.last_event_id(),
                          warnings=self.store.exposure(), at=now(), unrunnable=unrunnable)

    def why_waiting(self, task: Task) -> str | None:
        """Why ``task`` (queued or blocked) has no live agent to run it, and what to do; None
        when one can take it (or it is not waiting)."""
        return Readiness.of(self.agents()).task_reason(task)

    def costs(self) -> CostReport:
        """Tokens and cost per agent, per role, per backend and overall (see ``CostReport``)."""
        return CostReport.of(self.store.list_agents())
