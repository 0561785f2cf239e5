"""Reports: the team at a glance (status) and what it cost."""

from __future__ import annotations

from podium.clock import now
from podium.models import CostReport, TeamStatus
from podium.service.team import TeamCalls


class ReportCalls(TeamCalls):
    def status(self) -> TeamStatus:
        agents = self.agents()
        by_state: dict[str, int] = {}
        for a in agents:
            by_state[a.state.value] = by_state.get(a.state.value, 0) + 1
        return TeamStatus(store_url=self.url, agents_by_state=by_state,
                          tasks_by_state=self.store.counts(),
                          live_agents=[a for a in agents if a.state.live],
                          last_event_id=self.store.last_event_id(),
                          warnings=self.store.exposure(), at=now())

    def costs(self) -> CostReport:
        """Tokens and cost per agent, per role, per backend and overall (see ``CostReport``)."""
        return CostReport.of(self.store.list_agents())
