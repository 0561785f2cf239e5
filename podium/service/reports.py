"""Reports: the team at a glance (status), what it cost (in all, and over time), whether
waiting tasks can run, and what to warn of about a task just added."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from podium import limits
from podium.clock import now
from podium.models import CostReport, Task, TeamStatus, Unrunnable
from podium.service.readiness import Readiness, cancelled_at_add
from podium.service.team import TeamCalls, by_name

#: The most buckets one cost series has.
MAX_BUCKETS = 1000


@dataclass
class CostPoint:
    """What the tasks that finished in one time bucket cost."""

    #: The bucket's start (Unix seconds).
    t: float
    cost_usd: float = 0.0
    tasks: int = 0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "cost_usd": round(self.cost_usd, 6), "tasks": self.tasks,
                "tokens": self.tokens}


@dataclass
class CostSeries:
    """Cost over time: the tasks that finished in each of ``len(points)`` buckets of
    ``bucket_s`` seconds (the last one holds now), in all and per agent and role (one series
    each, with the same buckets). Tasks count under their agent's roles as it has them now (an
    agent with several under each; with none, or removed since, under ``""``); tasks that no
    agent ran (cancelled while waiting) only in ``points``."""

    bucket_s: int
    points: list[CostPoint]
    by_agent: dict[str, list[CostPoint]] = field(default_factory=dict)
    by_role: dict[str, list[CostPoint]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def series(points: list[CostPoint]) -> list[dict[str, Any]]:
            return [p.to_dict() for p in points]
        return {"bucket_s": self.bucket_s, "points": series(self.points),
                "by_agent": {k: series(v) for k, v in self.by_agent.items()},
                "by_role": {k: series(v) for k, v in self.by_role.items()}}


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
        return TeamStatus(store_url=self.shown_url, agents_by_state=by_state,
                          tasks_by_state=self.store.counts(),
                          live_agents=[a for a in agents if a.state.live],
                          last_event_id=self.store.last_event_id(),
                          warnings=self.store.exposure(), at=now(), unrunnable=unrunnable)

    def why_waiting(self, task: Task) -> str | None:
        """Why ``task`` (queued or blocked) has no live agent to run it, and what to do; None
        when one can take it (or it is not waiting)."""
        return Readiness.of(self.agents()).task_reason(task)

    def add_warning(self, task: Task) -> str | None:
        """The one warning to show for a task just added (``add_task``), naming it; None when
        there is nothing to say: it was cancelled at once, a dependency having failed or been
        cancelled already (``cancelled_at_add``), or it will wait, with why (``why_waiting``).
        The task is accepted either way."""
        cancelled = cancelled_at_add(task)
        if cancelled is not None:
            return cancelled
        why = self.why_waiting(task)
        return None if why is None else f"{task.id} will wait: {why}"

    def costs(self) -> CostReport:
        """Tokens and cost per agent, per role, per backend and overall (see ``CostReport``)."""
        return CostReport.of(by_name(self.store.list_agents()))

    def cost_series(self, bucket_s: int = 3600, buckets: int = 48) -> CostSeries:
        """What finished tasks cost per ``bucket_s`` seconds over the last ``buckets`` buckets
        (aligned on multiples of ``bucket_s`` since the epoch, the last holding now), in all,
        per agent and per role (see ``CostSeries``)."""
        bucket_s = limits.integer(bucket_s, "bucket_s", 1, limits.MAX_SECONDS)
        buckets = limits.integer(buckets, "buckets", 1, MAX_BUCKETS)
        until = (math.floor(now() / bucket_s) + 1) * bucket_s
        since = until - buckets * bucket_s

        def empty() -> list[CostPoint]:
            return [CostPoint(float(since + i * bucket_s)) for i in range(buckets)]

        series = CostSeries(bucket_s, empty())
        roles = {a.id: a.roles or [""] for a in self.store.list_agents()}
        for i, agent, cost, n, tokens in self.store.cost_buckets(since, until, bucket_s):
            if not 0 <= i < buckets:
                continue  # (a float's rounding at the window's very edge)
            groups = [series.points]
            if agent is not None:
                groups.append(series.by_agent.setdefault(agent, empty()))
                groups += [series.by_role.setdefault(r, empty()) for r in roles.get(agent, [""])]
            for points in groups:
                points[i].cost_usd += cost
                points[i].tasks += n
                points[i].tokens += tokens
        series.by_agent = dict(sorted(series.by_agent.items()))
        series.by_role = dict(sorted(series.by_role.items()))
        return series
